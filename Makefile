# Agent Runner. `make run` starts the product (SQLite, no servers needed); `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test fuzz lint bench cluster-demo install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.base-installed: requirements/base.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.dev-installed: requirements/dev.txt requirements/base.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $(VENV)/.base-installed $@

install: $(VENV)/.base-installed
install-dev: $(VENV)/.dev-installed

## run: web server on 127.0.0.1:8000 + a worker cluster, SQLite in var/ (Ctrl-C stops both)
run: export DEBUG ?= 1
run: export LOG_FORMAT ?= console
run: install .env
	$(BIN)/python manage.py serve --prepare 127.0.0.1:8000

# The checkout's own settings, written once (never overwritten): `manage.py` commands typed by hand use the
# same development settings as `make run` (DEBUG on, SQLite in var/).
.env:
	printf '%s\n' '# Written by `make run` for this checkout (development). See .env.example for every setting.' \
		'DEBUG=1' 'LOG_FORMAT=console' > $@

## test: lint, OpenAPI validation and the whole pytest suite (DATABASE_URL picks the database).
## The tests that start no process run on 2 workers (one test database each); then those that start real
## processes (marker `cluster`: they mostly wait on them), 2 at a time, by themselves (a module that shares one
## server, like the browser tests, stays on one worker: xdist_group + loadgroup).
test: install-dev lint
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "not cluster and not fuzz"
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m cluster

## fuzz: junk at every API operation, admin page and admin form; no answer may be a 5xx (tests/test_fuzz.py,
## a few minutes; FUZZ_SEED=N for other junk)
fuzz: install-dev
	$(BIN)/python -m pytest -n 2 -m fuzz tests/test_fuzz.py

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

## cluster-demo: docker-compose.yml's topology without Docker: 1 web and 3 worker clusters against PostgreSQL
## and Redis share 300 runs (bench/cluster_demo.py; its own database on DATABASE_URL's server, Redis database 13)
cluster-demo: install-dev
	$(BIN)/python bench/cluster_demo.py

## bench: engine overhead vs bare django-q2, schedules, async steps, on PostgreSQL (prints figures, asserts nothing)
bench: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
bench: install-dev
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/api_bench.py
	$(BIN)/python bench/flow_bench.py
	$(BIN)/python bench/schedule_bench.py
	$(BIN)/python bench/async_bench.py
	$(BIN)/python bench/retention_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
