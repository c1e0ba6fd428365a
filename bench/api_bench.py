#!/usr/bin/env python
"""The API's request path vs a bare Django view, both under the same gunicorn, on PostgreSQL. Prints figures,
asserts nothing.

    .venv/bin/python bench/api_bench.py                    # gunicorn side by side, then the in-process profile
    .venv/bin/python bench/api_bench.py --duration 4 --clients 20
    .venv/bin/python bench/api_bench.py --profile-only     # only the in-process profile (no gunicorn)
    .venv/bin/python bench/api_bench.py --profile 0        # only the gunicorn figures

It creates its own database (`agentrunner_apibench`, dropped and re-created on the server named by
DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres), migrates it, creates a superuser with
a DRF token and --runs completed runs of agent `pass` (runs.services.run_create, then
runs.engine.step_execute in this process: no cluster), and measures four requests, each with
`Authorization: Token <key>` and `X-Forwarded-Proto: https` (as behind a TLS proxy: SECURE_SSL_REDIRECT
stays on, as in production):

    GET  /api/v1/health                 (no authentication; database, broker and cluster checks)
    GET  /api/v1/runs/{id}              (a completed run)
    GET  /api/v1/runs?limit=50          (a page of completed runs, with its count)
    POST /api/v1/runs  {"agent_type": "pass", "input": {"x": 1}}   (measured last: the runs just queue)

1. gunicorn: three servers, each started from the repository with its gunicorn.conf.py (gthread,
   WEB_CONCURRENCY=2 workers x WEB_THREADS=8 threads, preloaded) and the image's `--access-logfile -`,
   on a free 127.0.0.1 port, output to a log file:
   - project: agentrunner.wsgi, production settings: DEBUG=0, a SECRET_KEY, ALLOWED_HOSTS=127.0.0.1,
     LOG_LEVEL=INFO and LOG_FORMAT=json (django-structlog writes two lines per request), ORM broker,
     database cache;
   - bare: bench/bare_wsgi.py, one Django view (no middleware): `SELECT 1`, a small JsonResponse, the
     same database settings (CONN_MAX_AGE, CONN_HEALTH_CHECKS);
   - floor: bench/floor_wsgi.py, the project's stack (settings, middleware, DRF defaults) with endpoints that
     do next to nothing: the bare view's work behind our middleware; an empty DRF view with token
     authentication; the same resolving the acting team. Measured against bare like the four requests
     (no target): what the stack alone costs, below which no endpoint of it can go.
   A load generator in this process (asyncio, one keep-alive HTTP/1.1 connection per client, closed
   loop) sends each request from --clients clients for --duration s per server: --rounds rounds per
   server, project and bare alternating (ABAB), each after --warmup s that are not counted. The bare
   server gets byte for byte the same requests (its view answers every path and method). Figures:
   answers 2xx per second and their ratio project/bare against the targets, p50/p95 latency, statuses
   (anything not 2xx is counted and shown: a bench of 401s measures nothing), and CPU per request of
   the server's processes and of its PostgreSQL backends (told apart by application_name; a backend
   replaced within a round loses its share, so that figure is approximate).
   /api/v1/health reports 503 without a running worker cluster: the bench writes the heartbeat a
   cluster writes (a django-q2 Stat in the cache), so it answers 200 with no cluster taking the runs.
2. profile (--profile N): each request N times in this process through agentrunner.wsgi.application
   (the WSGI handler, every middleware, production settings, DEBUG=0; log lines go to a file), no
   gunicorn, no network but PostgreSQL's: the mean time per request, then the same requests with
   timers on each middleware (own time), URL resolution, DRF's authentication, permissions,
   throttling, parsing, filtering, pagination, serializers, JSON rendering, logging (structlog and
   the stdlib handler), every SQL statement (connection.execute_wrapper) and the per-request
   connection health check (CONN_HEALTH_CHECKS): an exclusive split (a statement run by the token
   authentication counts as SQL, not as authentication) that adds up to the request; then a third
   pass under cProfile, self time grouped by package.

Exit status is 0 whatever the figures; the targets are printed as information.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench.common import CLOCK_TICKS, ms, proc_stat, process_cpu_seconds, recreate_database, server_params  # noqa: E402

BENCH_DB = "agentrunner_apibench"
# Own cluster name = own queue key and own cluster heartbeat: never mixed with another cluster's.
CLUSTER_NAME = "agentrunner-apibench"
SECRET_KEY = "apibench-only-insecure-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
HOST = "127.0.0.1"
POST_BODY = {"agent_type": "pass", "input": {"x": 1}}
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 15.0
PROFILE_WARMUP = 20

# (key, label, method, path, minimum project/bare throughput ratio)
REQUESTS = [
    ("health", "GET /api/v1/health", "GET", "/api/v1/health", 0.5),
    ("detail", "GET /api/v1/runs/{id}", "GET", "/api/v1/runs/{run_id}", 0.5),
    ("list", "GET /api/v1/runs?limit=50", "GET", "/api/v1/runs?limit=50", 0.3),
    ("create", "POST /api/v1/runs", "POST", "/api/v1/runs", 0.25),
    # Served by bench/floor_wsgi.py (the project's stack, endpoints that do next to nothing): no target.
    ("floor-middleware", "floor: bare view's work, our middleware", "GET", "/floor/middleware", None),
    ("floor-token", "floor: empty DRF view, token auth", "GET", "/floor/token", None),
    ("floor-team", "floor: ... and acting team", "GET", "/floor/team", None),
]


# --- set-up before Django is imported --------------------------------------------


def bench_url(params: dict, application_name: str) -> str:
    auth = params["user"] + (f":{params['password']}" if "password" in params else "")
    return f"postgres://{auth}@{params['host']}:{params['port']}/{BENCH_DB}?application_name={application_name}"


def production_environment(server: dict, application_name: str, log_level: str) -> dict:
    """The environment of a production web process (.env.example), on the bench database."""
    return {
        "DJANGO_SETTINGS_MODULE": "agentrunner.settings",
        "SECRET_KEY": SECRET_KEY,
        "DEBUG": "0",
        "ALLOWED_HOSTS": HOST,
        "DATABASE_URL": bench_url(server, application_name),
        "REDIS_URL": "",  # ORM broker and database cache (the settings' default)
        "Q_CLUSTER_NAME": CLUSTER_NAME,
        "LOG_LEVEL": log_level,
        "LOG_FORMAT": "json",
        # One client starts thousands of runs a minute here: with the run-start limit (20 a minute by default)
        # the POST figure would measure 429s. Its cost per start is a locked row and a count (agentrunner.ratelimit).
        "RUN_STARTS_PER_USER_PER_MINUTE": "0",
        "RUN_STARTS_PER_TEAM_PER_MINUTE": "0",
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
        "WEB_THREADS": os.environ.get("WEB_THREADS", "8"),
        "PYTHONPATH": str(BASE_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


# --- CPU accounting (Linux /proc) ---------------------------------------------------


def session_cpu_seconds(sid: int) -> float:
    """User+system CPU of every live process of a session, plus their reaped children."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat and int(stat[3]) == sid:  # field 6: session id
                total += sum(int(x) for x in stat[11:15]) / CLOCK_TICKS
    return total


# --- the servers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """One gunicorn (its own session: the master and its workers), started from the repository."""

    def __init__(self, label: str, app: str, env: dict, log_dir: Path, application_name: str):
        self.label = label
        self.application_name = application_name
        self.port = free_port()
        self.log_path = log_dir / f"gunicorn-{label}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            # gunicorn reads ./gunicorn.conf.py; the image's entrypoint adds the access log to stdout.
            [sys.executable, "-m", "gunicorn", "--bind", f"{HOST}:{self.port}", "--access-logfile", "-", app],
            cwd=BASE_DIR,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        """Until the server answers anything over HTTP (a 503 from /health before its heartbeat is fine)."""
        import http.client

        deadline = time.perf_counter() + SERVER_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn ({self.label}) exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                conn.request("GET", "/api/v1/health", headers={"X-Forwarded-Proto": "https"})
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"gunicorn ({self.label}) not answering after {SERVER_START_TIMEOUT:g} s")
                time.sleep(0.2)

    def cpu_seconds(self) -> float:
        return session_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"  (gunicorn {self.label} did not stop within {SERVER_STOP_TIMEOUT:g} s of SIGTERM: killed)")
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # leave no orphaned worker behind
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


# --- the load generator ---------------------------------------------------------------


@dataclass
class Round:
    window: float = 0.0
    latencies: list = field(default_factory=list)  # seconds, answers completed within the window
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    server_cpu: float = 0.0
    pg_cpu: float = 0.0
    generator_cpu: float = 0.0

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)


def http_request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {HOST}",
        "Accept: application/json",
        f"Authorization: Token {token}",
        "X-Forwarded-Proto: https",
        "User-Agent: api-bench",
    ]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        await reader.readexactly(size + 2)  # the chunk and its CRLF (the last: the empty trailer's CRLF)
        if size == 0:
            return


async def _client(port: int, payload: bytes, t_warm: float, t_end: float, result: Round) -> None:
    perf = time.perf_counter
    latencies, statuses, errors = result.latencies, result.statuses, result.errors
    reader = writer = None
    while True:
        t0 = perf()
        if t0 >= t_end:
            break
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
                t0 = perf()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                await reader.readexactly(int(lower[i + 17 : lower.index(b"\r\n", i + 2)]))
            elif b"\r\ntransfer-encoding: chunked" in lower:
                await _read_chunked(reader)
            closing = b"\r\nconnection: close" in lower
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            errors[exc.__class__.__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        t1 = perf()
        if t_warm <= t1 <= t_end:
            latencies.append(t1 - t0)
            statuses[status] += 1
        if closing:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def pg_backend_cpu(conn, application_name: str) -> dict[int, float]:
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name])
    return {pid: process_cpu_seconds(pid) for (pid,) in rows.fetchall()}


async def _measure(server: Server, payload: bytes, clients: int, warmup: float, duration: float, pg) -> Round:
    result = Round(window=duration)
    start = time.perf_counter()
    t_warm, t_end = start + warmup, start + warmup + duration
    tasks = [asyncio.create_task(_client(server.port, payload, t_warm, t_end, result)) for _ in range(clients)]
    await asyncio.sleep(max(0.0, t_warm - time.perf_counter()))
    cpu0, pg0, gen0 = server.cpu_seconds(), pg_backend_cpu(pg, server.application_name), time.process_time()
    await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
    cpu1, pg1, gen1 = server.cpu_seconds(), pg_backend_cpu(pg, server.application_name), time.process_time()
    await asyncio.gather(*tasks)
    result.server_cpu = cpu1 - cpu0
    result.pg_cpu = sum(cpu - pg0.get(pid, 0.0) for pid, cpu in pg1.items())
    result.generator_cpu = gen1 - gen0
    return result


def measure(server: Server, payload: bytes, clients: int, warmup: float, duration: float, pg) -> Round:
    return asyncio.run(_measure(server, payload, clients, warmup, duration, pg))


# --- data ---------------------------------------------------------------------------------


def prepare_data(n_runs: int) -> dict:
    """A superuser with a token, n completed runs of `pass`; the broker's messages of those runs purged."""
    from django.contrib.auth import get_user_model
    from django_q.brokers import get_broker
    from rest_framework.authtoken.models import Token

    from runs import engine
    from runs.models import Run
    from runs.services import run_create

    user = get_user_model().objects.create_superuser("apibench", "apibench@example.invalid", None)
    token = Token.objects.create(user=user)
    run_ids = []
    for i in range(n_runs):
        run, _ = run_create(agent_type="pass", input={"x": i, "note": f"bench run {i}"}, created_by=user)
        engine.step_execute(step_id=run.steps.get().id)
        run_ids.append(run.id)
    get_broker().purge_queue()  # run_create's messages: the steps ran here
    statuses = Counter(Run.objects.values_list("status", flat=True))
    return {"token": token.key, "run_id": str(run_ids[len(run_ids) // 2]), "statuses": dict(statuses)}


def write_cluster_heartbeat() -> None:
    """What a running cluster keeps in the cache (its Stat, refreshed every few seconds), here for an hour."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.signing import SignedPackage
    from django_q.status import Stat, Status

    status = Status(pid=os.getpid(), cluster_id="api-bench-heartbeat")
    status.status = str(Conf.IDLE)
    status.workers = list(range(Conf.WORKERS))
    get_broker().set_stat(Stat.get_key(status.cluster_id), SignedPackage.dumps(status, True), 3600)


def requests_for(data: dict) -> list[tuple[str, str, str, str, bytes, float]]:
    """(key, label, method, path, body, target) of each request."""
    body = json.dumps(POST_BODY).encode()
    return [
        (key, label, method, path.format(run_id=data["run_id"]), body if method == "POST" else b"", target)
        for key, label, method, path, target in REQUESTS
    ]


# --- in-process profile ---------------------------------------------------------------------


class Breakdown:
    """Exclusive time per named section: a section's time excludes the sections entered inside it."""

    def __init__(self):
        self.names: list[str] = []
        self.children: list[float] = []
        self.exclusive: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.sql_where: Counter = Counter()  # statements by the section that ran them
        self.sql_text: Counter = Counter()
        self._patches: list = []
        self.missing: list[str] = []

    def run(self, name: str, fn, *args, **kwargs):
        if name in self.names:  # re-entered (a nested serializer, a resolver's include): one section
            return fn(*args, **kwargs)
        self.names.append(name)
        self.children.append(0.0)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - t0
            self.names.pop()
            self.exclusive[name] += elapsed - self.children.pop()
            self.calls[name] += 1
            if self.children:
                self.children[-1] += elapsed

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            return self.run(name, fn, *args, **kwargs)

        timed.__wrapped__ = fn
        return timed

    def patch(self, owner, attr: str, name: str) -> None:
        """Time owner.attr (a function, method or property getter) as section `name`; restore() undoes it.

        A module's function is replaced in every loaded module holding it (`from x import f` included). An
        attribute that no longer exists (the code moved on) is skipped and listed in `missing`.
        """
        import inspect
        import types

        try:
            # A class's attribute as defined (a property, a function); a module's or an instance's as bound.
            original = inspect.getattr_static(owner, attr) if isinstance(owner, type) else getattr(owner, attr)
        except AttributeError:
            self.missing.append(f"{getattr(owner, '__name__', type(owner).__name__)}.{attr}")
            return
        if isinstance(original, property):
            new = property(self.wrap(name, original.fget), original.fset, original.fdel)
        else:
            new = self.wrap(name, original)
        if isinstance(owner, types.ModuleType):
            for module in list(sys.modules.values()):
                namespace = getattr(module, "__dict__", None) or {}
                for key, value in list(namespace.items()):
                    if value is original:
                        namespace[key] = new
                        self._patches.append((module, key, original))
            return
        own = vars(owner).get(attr)  # None: inherited (or the class's, for an instance): delattr restores it
        setattr(owner, attr, new)
        self._patches.append((owner, attr, own))

    def restore(self) -> None:
        for owner, attr, own in reversed(self._patches):
            if own is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, own)
        self._patches.clear()

    def sql(self, execute, sql, params, many, context):
        self.sql_where[self.names[-1] if self.names else "?"] += 1
        self.sql_text[sql] += 1  # summarized after the requests: not timed into the section that runs it
        return self.run("SQL statements (execute, incl. round trip)", execute, sql, params, many, context)


def summarize_sql(sql: str) -> str:
    """One short line per statement: verb and tables."""
    sql = " ".join(sql.split())
    words = sql.split()
    verb = words[0].upper() if words else ""
    if verb == "WITH":
        writes = re.findall(r'(INSERT INTO|UPDATE|DELETE FROM) "?(\w+)"?', sql)
        return "WITH ... " + ", ".join(f"{v} {t}" for v, t in writes) if writes else sql[:60]
    if re.fullmatch(r"SELECT \d+", sql):
        return sql
    if verb == "SELECT":
        table = re.search(r'\bFROM "?(\w+)"?', sql)
        joins = "".join(f" JOIN {t}" for t in re.findall(r'\bJOIN "?(\w+)"?', sql))
        what = "COUNT(*)" if re.match(r"SELECT COUNT\(\*\)", sql, re.I) else "..."
        lock = " FOR UPDATE" if "FOR UPDATE" in sql else ""
        return f"SELECT {what} FROM {table.group(1) if table else '-'}{joins}{lock}"
    if verb in {"UPDATE", "DELETE", "INSERT"}:
        table = re.search(r'(?:UPDATE|FROM|INTO) "?(\w+)"?', sql)
        return f"{verb} {table.group(1) if table else '?'}"
    return sql[:60]


def package_of(filename: str, funcname: str, roots: list[tuple[str, str]]) -> str:
    """A cProfile entry's group: package (two or three levels for django and DRF), stdlib module, or C code."""
    if filename == "~":
        if "psycopg" in funcname:
            return "psycopg (C: protocol, waiting for the server)"
        if any(s in funcname for s in ("socket", "select", "poll", "recv", "send", "'write'", "'flush'")):
            return "socket / file I/O (C)"
        return "builtins (C)"
    for root, kind in roots:
        if filename.startswith(root):
            rel = filename[len(root) :].lstrip("/")
            parts = rel.removesuffix(".py").split("/")
            if parts[-1] == "__init__":
                parts.pop()
            if kind == "stdlib":
                return f"stdlib {parts[0]}"
            if parts[0] == "django":
                depth = 3 if len(parts) > 2 and parts[1] in {"contrib", "middleware", "db"} else 2
                return ".".join(parts[:depth])
            if parts[0] == "psycopg":  # its C waits for the server show as its Python callers' own time
                return "psycopg (incl. waiting for PostgreSQL)"
            if parts[0] == "rest_framework":
                return ".".join(parts[:2])
            if kind == "project":
                return ".".join(parts[:2]) + " (project)"
            return parts[0]
    return "other"


@dataclass
class Profile:
    n: int
    total_ms: float = 0.0
    p50_ms: float = 0.0
    cpu_ms: float = 0.0
    instrumented_ms: float = 0.0
    status: Counter = field(default_factory=Counter)
    exclusive: dict = field(default_factory=dict)  # section -> ms per request
    sql_count: float = 0.0
    sql_where: dict = field(default_factory=dict)
    sql_text: dict = field(default_factory=dict)
    log_calls: float = 0.0
    health_checks: float = 0.0
    packages: dict = field(default_factory=dict)  # group -> ms per request under cProfile
    missing: list = field(default_factory=list)  # timers whose function is gone from the code
    profiled_ms: float = 0.0


def profile_requests(data: dict, n: int, log_file) -> dict[str, Profile]:
    """Each request n times through the project's WSGI application, in this process."""
    import cProfile
    import logging
    import pstats

    from django.core.handlers.base import BaseHandler
    from django.core.handlers.wsgi import WSGIHandler
    from django.db import connection
    from django.test import RequestFactory
    from django_filters.rest_framework import DjangoFilterBackend
    from django_q.brokers import get_broker
    from rest_framework import pagination, renderers, serializers
    from rest_framework.request import Request
    from rest_framework.views import APIView
    from structlog._base import BoundLoggerBase

    from agentrunner import health, wsgi
    from agentrunner.agents.base import Agent
    from runs import selectors, services
    from runs.engine import fastpath, queue
    from runs.models import Run

    app = wsgi.application
    handler = app if isinstance(app, WSGIHandler) else None
    for cell in getattr(app, "__closure__", None) or ():
        if isinstance(cell.cell_contents, WSGIHandler):
            handler = cell.cell_contents
    if handler is None:
        raise RuntimeError("agentrunner.wsgi.application wraps no WSGIHandler that the profile can find")

    token = f"Token {data['token']}"
    factory = RequestFactory(HTTP_HOST=HOST, HTTP_X_FORWARDED_PROTO="https", HTTP_AUTHORIZATION=token)

    def environ_for(method: str, path: str, body: bytes) -> dict:
        if method == "POST":
            return factory.post(path, data=body, content_type="application/json").environ
        return factory.get(path).environ

    statuses: Counter = Counter()

    def start_response(status, headers, exc_info=None):
        statuses[int(status[:3])] += 1

    def one(environ: dict) -> None:
        body = app(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            body.close()  # request_finished: as gunicorn does

    marker = time.time()
    roots = sorted(
        [
            (sysconfig.get_paths()["purelib"], "site"),
            (sysconfig.get_paths()["platlib"], "site"),
            (str(BASE_DIR), "project"),
            (sysconfig.get_paths()["stdlib"], "stdlib"),
        ],
        key=lambda r: -len(r[0]),
    )  # longest first: site-packages lies inside the venv, the stdlib elsewhere
    results: dict[str, Profile] = {}
    for key, _label, method, path, body, _target in requests_for(data):
        if key.startswith("floor"):
            continue  # served by bench/floor_wsgi.py only
        prof = Profile(n=n)
        for _ in range(PROFILE_WARMUP):
            one(environ_for(method, path, body))
        statuses.clear()
        # 1. plain: the request's time, nothing added
        environs = [environ_for(method, path, body) for _ in range(n)]
        times = []
        cpu0 = time.process_time()
        for environ in environs:
            t0 = time.perf_counter()
            one(environ)
            times.append(time.perf_counter() - t0)
        prof.cpu_ms = ms((time.process_time() - cpu0) / n)
        prof.total_ms, prof.p50_ms = ms(statistics.fmean(times)), ms(statistics.median(times))
        prof.status = Counter(statuses)

        # 2. timed sections (exclusive)
        bd = Breakdown()
        layers = []
        node = handler._middleware_chain
        while hasattr(getattr(node, "__wrapped__", None), "get_response"):
            layers.append(node.__wrapped__)
            node = node.__wrapped__.get_response
        handler._middleware_chain = bd.wrap(f"middleware: {layers[0].__class__.__name__}", handler._middleware_chain)
        for i, mw in enumerate(layers):
            inner = layers[i + 1].__class__.__name__ if i + 1 < len(layers) else None
            mw.get_response = bd.wrap(f"middleware: {inner}" if inner else "view & DRF (the rest)", mw.get_response)
        for owner, attr, name in [
            (BaseHandler, "resolve_request", "URL resolution"),
            (Request, "_authenticate", "authentication (DRF Token)"),
            (APIView, "check_permissions", "permissions"),
            (APIView, "check_throttles", "throttling"),
            (APIView, "perform_content_negotiation", "content negotiation"),
            (Request, "_parse", "request parsing (JSON)"),
            (DjangoFilterBackend, "filter_queryset", "filtering (django-filter)"),
            (pagination.LimitOffsetPagination, "paginate_queryset", "pagination"),
            (pagination.LimitOffsetPagination, "get_paginated_response", "pagination"),
            (serializers.Serializer, "data", "serializers"),
            (serializers.ListSerializer, "data", "serializers"),
            (serializers.BaseSerializer, "is_valid", "serializers"),
            (services, "run_create", "runs.services.run_create (the rest)"),
            (Agent, "validate_input", "run_create: input validation (jsonschema)"),
            (fastpath, "run_insert", "run_create: fastpath.run_insert"),
            (queue, "steps_dispatch", "run_create: broker message (django-q2 async_task)"),
            (selectors, "runs_blocked_by", "runs.selectors.runs_blocked_by"),
            (health, "_database", "health: database check"),
            (health, "_broker", "health: broker check"),
            (health, "_workers", "health: workers check (cache)"),
            (health, "breaker_states", "health: LLM breakers"),
            (renderers.JSONRenderer, "render", "JSON rendering"),
            (BoundLoggerBase, "_proxy_to_logger", "logging (structlog + handler)"),
            (logging.Logger, "handle", "logging (structlog + handler)"),
            (connection, "is_usable", "DB connection health check"),
            (connection, "commit", "COMMIT (an atomic block's, round trip)"),
        ]:
            bd.patch(owner, attr, name)
        environs = [environ_for(method, path, body) for _ in range(n)]
        try:
            with connection.execute_wrapper(bd.sql):
                t0 = time.perf_counter()
                for environ in environs:
                    bd.run("WSGI handler outside middleware", one, environ)
                prof.instrumented_ms = ms((time.perf_counter() - t0) / n)
        finally:
            bd.restore()
            handler._middleware_chain = handler._middleware_chain.__wrapped__
            for mw in layers:
                mw.get_response = mw.get_response.__wrapped__
        prof.exclusive = {name: ms(s / n) for name, s in bd.exclusive.items()}
        prof.sql_count = sum(bd.sql_where.values()) / n
        prof.sql_where = {where: c / n for where, c in bd.sql_where.items()}
        summaries: Counter = Counter()
        for text, c in bd.sql_text.items():
            summaries[summarize_sql(text)] += c
        prof.sql_text = {text: c / n for text, c in summaries.items()}
        prof.log_calls = bd.calls["logging (structlog + handler)"] / n
        prof.health_checks = bd.calls["DB connection health check"] / n
        prof.missing = bd.missing

        # 3. cProfile, self time by package
        environs = [environ_for(method, path, body) for _ in range(n)]
        profiler = cProfile.Profile()
        for environ in environs:
            profiler.enable()
            one(environ)
            profiler.disable()
        groups: defaultdict[str, float] = defaultdict(float)
        for (filename, _line, funcname), (_cc, _nc, tt, _ct, _callers) in pstats.Stats(profiler).stats.items():
            groups[package_of(filename, funcname, roots)] += tt
        prof.packages = {g: ms(t / n) for g, t in groups.items()}
        prof.profiled_ms = sum(prof.packages.values())
        results[key] = prof
    # The profile's POSTs queued runs: gone, so that the gunicorn phase lists the completed runs.
    Run.objects.filter(created_at__gte=_aware(marker)).delete()
    get_broker().purge_queue()
    log_file.flush()
    return results


def _aware(epoch: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC)


# --- report ---------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(p) - 1]


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # nan
        return "n/a"
    return f"{value:.{digits}f}" if value < 100 else f"{value:.0f}"


def table(headers: tuple, rows: list[tuple], indent: str = "  ") -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(indent + line.format(*headers))
    print(indent + "  ".join("-" * w for w in widths))
    for r in rows:
        print(indent + line.format(*(str(c) for c in r)))


def print_settings(note: str, args, data: dict) -> None:
    import django
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pg_version = connection.cursor().connection.info.server_version
    threads = os.environ.get("WEB_THREADS", "8")
    print("Settings")
    print(
        f"  gunicorn        : gunicorn.conf.py: gthread, {os.environ.get('WEB_CONCURRENCY', '2')} workers x "
        f"{threads} threads, preload; --access-logfile - (to a file)"
    )
    middleware = len(settings.MIDDLEWARE)
    print(f"  project         : DEBUG=0, LOG_LEVEL={args.log_level}, LOG_FORMAT=json, {middleware} middleware")
    print(f"  CONN_MAX_AGE    : {db.get('CONN_MAX_AGE')}   CONN_HEALTH_CHECKS: {db.get('CONN_HEALTH_CHECKS')} (both)")
    print(f"  cache / broker  : {settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1]} / ORM (django-q2)")
    print(f"  database        : {BENCH_DB} on {db['HOST']}:{db['PORT']} (PostgreSQL {pg_version // 10000})")
    print(f"  data            : {sum(data['statuses'].values())} runs {data['statuses']}, token of a superuser")
    if note:
        print(f"  note            : {note}")
    print(
        f"  machine         : {os.cpu_count()} CPUs ({affinity} usable), Python {platform.python_version()}, "
        f"Django {django.get_version()}"
    )
    print()


def pooled(rounds: list[Round]) -> dict:
    window = sum(r.window for r in rounds)
    ok = sum(r.ok for r in rounds)
    answered = sum(sum(r.statuses.values()) for r in rounds)
    latencies = [x for r in rounds for x in r.latencies]
    statuses = sum((r.statuses for r in rounds), Counter())
    errors = sum((r.errors for r in rounds), Counter())
    per = max(1, answered)
    return {
        "per_s": ok / window if window else float("nan"),
        "p50": ms(pct(latencies, 50)),
        "p95": ms(pct(latencies, 95)),
        "statuses": statuses,
        "non2xx": sum(n for s, n in statuses.items() if not 200 <= s < 300),
        "errors": errors,
        "server_cpu": ms(sum(r.server_cpu for r in rounds) / per),
        "pg_cpu": ms(sum(r.pg_cpu for r in rounds) / per),
        "gen_cpu": ms(sum(r.generator_cpu for r in rounds) / per),
        "per_round": [r.ok / r.window for r in rounds],
    }


def print_http_report(results: dict, data: dict, args) -> None:
    rows, rows2 = [], []
    for key, label, *_rest, target in requests_for(data):
        if key not in results:
            continue
        p, b = pooled(results[key]["project"]), pooled(results[key]["bare"])
        r = p["per_s"] / b["per_s"] if b["per_s"] else float("nan")
        met = "-" if target is None else "n/a" if r != r else ("yes" if r >= target else "NO")
        wanted = "-" if target is None else f">= {target}x"
        rows.append((label, fmt(p["per_s"], 0), fmt(b["per_s"], 0), f"{r:.2f}x", wanted, met))
        for side, f in (("project", p), ("bare", b)):
            statuses = " ".join(f"{s}:{n}" for s, n in sorted(f["statuses"].items()))
            errors = " ".join(f"{e}:{n}" for e, n in sorted(f["errors"].items())) or "-"
            rows2.append(
                (
                    label if side == "project" else "",
                    side,
                    fmt(f["p50"]),
                    fmt(f["p95"]),
                    fmt(f["server_cpu"], 2),
                    fmt(f["pg_cpu"], 2),
                    fmt(f["gen_cpu"], 2),
                    " / ".join(fmt(x, 0) for x in f["per_round"]),
                    statuses,
                    f["non2xx"],
                    errors,
                )
            )
    print(
        f"Results: {args.clients} keep-alive clients, {args.duration:g} s per request and server "
        f"({args.rounds} rounds of {args.duration / args.rounds:g} s, each after {args.warmup:g} s warm-up), "
        "project/bare alternating"
    )
    table(("request", "project 2xx/s", "bare 2xx/s", "ratio", "target", "met"), rows)
    print()
    print("Latency, CPU per answer (gunicorn processes; their PostgreSQL backends; the load generator), statuses")
    table(
        (
            "request",
            "server",
            "p50 ms",
            "p95 ms",
            "CPU ms",
            "PG CPU ms",
            "gen CPU ms",
            "2xx/s per round",
            "statuses",
            "non-2xx",
            "errors",
        ),
        rows2,
    )
    print()


PROFILE_ORDER = [
    "WSGI handler outside middleware",
    "middleware: ",  # each, in order
    "URL resolution",
    "authentication (DRF Token)",
    "permissions",
    "throttling",
    "content negotiation",
    "request parsing (JSON)",
    "filtering (django-filter)",
    "pagination",
    "serializers",
    "runs.selectors.runs_blocked_by",
    "runs.services.run_create (the rest)",
    "run_create: ",
    "health: ",
    "JSON rendering",
    "logging (structlog + handler)",
    "SQL statements (execute, incl. round trip)",
    "COMMIT (an atomic block's, round trip)",
    "DB connection health check",
    "view & DRF (the rest)",
]


def print_profile_report(profiles: dict[str, Profile], data: dict) -> None:
    from django.conf import settings

    keys = [k for k, *_ in REQUESTS if k in profiles]
    labels = {k: label for k, label, *_ in REQUESTS}
    short = {"health": "health", "detail": "GET run", "list": "GET runs?50", "create": "POST runs"}
    n = next(iter(profiles.values())).n
    names = set().union(*(p.exclusive for p in profiles.values()))
    middleware = [f"middleware: {m.rsplit('.', 1)[-1]}" for m in settings.MIDDLEWARE]
    ordered = []
    for entry in PROFILE_ORDER:
        if entry == "middleware: ":
            ordered += [m for m in middleware if m in names]
        elif entry.endswith(": "):
            ordered += sorted(x for x in names if x.startswith(entry))
        elif entry in names:
            ordered.append(entry)
    ordered += sorted(names - set(ordered))
    print(
        f"In-process profile: each request {n} times through agentrunner.wsgi.application (DEBUG=0, every "
        "middleware, log lines to a file), no gunicorn; ms per request, mean"
    )
    rows = [
        ("total (nothing added)", *(fmt(profiles[k].total_ms, 2) for k in keys)),
        ("  p50", *(fmt(profiles[k].p50_ms, 2) for k in keys)),
        ("  CPU of this process (PostgreSQL's not included)", *(fmt(profiles[k].cpu_ms, 2) for k in keys)),
        ("total with the timers below", *(fmt(profiles[k].instrumented_ms, 2) for k in keys)),
    ]
    for name in ordered:
        cells = []
        for k in keys:
            v = profiles[k].exclusive.get(name)
            cells.append("-" if v is None else fmt(v, 2))
        rows.append(("  " + name, *cells))
    rows.append(("SQL statements per request", *(fmt(profiles[k].sql_count, 1) for k in keys)))
    rows.append(("DB health checks per request", *(fmt(profiles[k].health_checks, 1) for k in keys)))
    rows.append(("log calls per request", *(fmt(profiles[k].log_calls, 1) for k in keys)))
    rows.append(("statuses", *(" ".join(f"{s}:{c}" for s, c in sorted(profiles[k].status.items())) for k in keys)))
    table(("exclusive split (adds up to the total)", *(short[k] for k in keys)), rows)
    print(
        "  (each section excludes what it calls that has its own row: SQL run during authentication is in 'SQL', "
        "logging inside django-structlog's middleware is in 'logging'; 'view & DRF (the rest)' is the view layer "
        "outside every named section: DRF dispatch, the view's code, ORM query building and model instances)"
    )
    missing = sorted(set().union(*(p.missing for p in profiles.values())))
    if missing:
        print(f"  (not timed, no longer in the code: {', '.join(missing)})")
    print()
    print("SQL statements per request, by the section that ran them, and what they are")
    for k in keys:
        where = ", ".join(f"{w}: {c:.2g}" for w, c in sorted(profiles[k].sql_where.items(), key=lambda x: -x[1]))
        print(f"  {labels[k]}: {where or 'none'}")
        for text, c in sorted(profiles[k].sql_text.items(), key=lambda x: -x[1]):
            print(f"      {c:.2g} x {text}")
    print()
    groups = Counter()
    for k in keys:
        for g, v in profiles[k].packages.items():
            groups[g] += v / max(profiles[k].profiled_ms, 1e-9)
    top = [g for g, _ in groups.most_common(12)]

    def cell(p: Profile, g: str) -> str:
        v = p.packages.get(g, 0.0)
        return f"{v:.2f} {100 * v / p.profiled_ms:3.0f}%"

    rows = [(g, *(cell(profiles[k], g) for k in keys)) for g in top]
    rows.append(("all (under cProfile)", *(f"{profiles[k].profiled_ms:.2f} 100%" for k in keys)))
    print("cProfile: self time by package, ms per request under the profiler (which inflates Python calls) and share")
    table(("package", *(short[k] for k in keys)), rows)
    print()


# --- main -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent keep-alive connections")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per request and server")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per request and server (ABAB)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each round that are not counted")
    parser.add_argument("--runs", type=int, default=200, help="completed runs created before measuring")
    parser.add_argument("--profile", type=int, default=300, help="in-process requests per request type (0: skip)")
    parser.add_argument("--profile-only", action="store_true", help="only the in-process profile, no gunicorn")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the project (production default: INFO)")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the bench database at the end")
    args = parser.parse_args()
    args.log_level = args.log_level.upper()

    started = time.perf_counter()
    server, note = server_params()
    print(f"API bench: database {BENCH_DB} on {server['host']}:{server['port']}; preparing ...", flush=True)
    recreate_database(server, name=BENCH_DB)
    os.environ.update(production_environment(server, "apibench-main", args.log_level))

    import django

    django.setup()
    import logging
    import warnings

    # WhiteNoise warns that collectstatic never ran: no static file is requested here.
    warnings.filterwarnings("ignore", message="No directory at")
    from django.core.management import call_command
    from django.db import connection

    import agentrunner.wsgi  # noqa: F401 (its django.setup() configures logging again: before the redirect)

    log_dir = Path(tempfile.mkdtemp(prefix="api-bench-"))
    # This process logs as production does (INFO, JSON), into a file instead of the terminal.
    log_file = open(log_dir / "in-process.log", "w")  # noqa: SIM115 (closed below)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(log_file)

    call_command("migrate", verbosity=0, interactive=False)
    data = prepare_data(args.runs)
    write_cluster_heartbeat()
    print()
    print_settings(note, args, data)

    def step(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {text} (load avg {os.getloadavg()[0]:.1f})", flush=True)

    profiles: dict[str, Profile] = {}
    http: dict = {}
    servers: list[Server] = []
    try:
        if args.profile:
            step(f"in-process profile: {args.profile} x 3 passes per request")
            profiles = profile_requests(data, args.profile, log_file)
        if not args.profile_only:
            import psycopg

            write_cluster_heartbeat()  # again: /health re-sets django-q2's list of clusters with a 300 s expiry
            step("starting gunicorn: project, bare and floor")
            project = Server(
                "project",
                "agentrunner.wsgi:application",
                production_environment(server, "apibench-project", args.log_level),
                log_dir,
                "apibench-project",
            )
            servers.append(project)
            bare = Server(
                "bare",
                "bench.bare_wsgi:application",
                production_environment(server, "apibench-bare", args.log_level),
                log_dir,
                "apibench-bare",
            )
            servers.append(bare)
            floor = Server(
                "floor",
                "bench.floor_wsgi:application",
                production_environment(server, "apibench-floor", args.log_level),
                log_dir,
                "apibench-floor",
            )
            servers.append(floor)
            project.wait_ready()
            bare.wait_ready()
            floor.wait_ready()
            with psycopg.connect(**server, dbname=BENCH_DB, autocommit=True) as pg:
                for key, label, method, path, body, _target in requests_for(data):
                    payload = http_request(method, path, data["token"], body)
                    http[key] = {"project": [], "bare": []}
                    step(f"{label}: {args.rounds} rounds per server, project and bare alternating")
                    ours = floor if key.startswith("floor") else project  # a floor's figures go in "project"
                    for _ in range(args.rounds):
                        for side in (ours, bare):  # ABAB
                            http[key]["bare" if side is bare else "project"].append(
                                measure(side, payload, args.clients, args.warmup, args.duration / args.rounds, pg)
                            )
    except Exception as exc:  # report what was measured; clean up below
        import traceback

        traceback.print_exc()
        print(f"\nBENCH ERROR: {exc.__class__.__name__}: {exc}", flush=True)
    finally:
        for s in servers:
            s.stop()
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is log_file:
                handler.setStream(sys.stderr)
        log_file.close()
        connection.close()
        if not args.keep_db:
            recreate_database(server, name=BENCH_DB, drop_only=True)
    print()
    if http:
        print_http_report(http, data, args)
    if profiles:
        print_profile_report(profiles, data)
    for s in servers:
        lines = s.log_path.read_bytes().count(b"\n")
        print(f"gunicorn {s.label}: {lines} log lines ({s.log_path.stat().st_size / 1e6:.1f} MB) in {s.log_path}")
    errors = [p for p in log_dir.iterdir() if re.search(rb'"level": "(error|critical)"|Traceback', p.read_bytes())]
    if errors:
        print(f"Errors logged in: {', '.join(str(p) for p in errors)} (kept)")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
        print("Logs: no error logged (log directory removed).")
    print(f"Bench database {BENCH_DB} {'kept' if args.keep_db else 'dropped'}.")
    print(f"Total bench time {time.perf_counter() - started:.0f} s. Figures are information only (exit status 0).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
