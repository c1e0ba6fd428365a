"""`make cluster-demo` (issue 14): 1 web and 3 worker clusters against PostgreSQL and Redis share 300 runs."""

import pytest
from django.db import connection

from bench import cluster_demo
from tests.conftest import test_database_url

# A Redis database of its own (the demo empties it first).
REDIS_URL = "redis://127.0.0.1:6379/13"

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the demo's topology: PostgreSQL and Redis"),
]


def test_cluster_demo__300_runs_complete_and_every_cluster_takes_work(capsys):
    assert connection.vendor == "postgresql"
    status = cluster_demo.main(
        ["--runs", "300", "--seconds", "0.1", "--database-url", test_database_url(), "--redis-url", REDIS_URL]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "All 300 runs COMPLETED" in out and "Every cluster took work." in out
    for name in ("cluster-1", "cluster-2", "cluster-3"):
        [line] = [line for line in out.splitlines() if line.startswith(name)]
        assert int(line.split()[1]) > 0, out
