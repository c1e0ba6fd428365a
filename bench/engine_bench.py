#!/usr/bin/env python
"""Engine overhead vs bare django-q2, on PostgreSQL, in one invocation. Prints figures, asserts nothing.

    .venv/bin/python bench/engine_bench.py            # ORM broker (production default)
    .venv/bin/python bench/engine_bench.py --redis    # Redis broker (REDIS_URL=redis://127.0.0.1:6379/0)

It creates its own database (`agentrunner_bench`, dropped and re-created on the server named by
DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres), migrates it, starts one real
`manage.py qcluster` (Q_WORKERS=2, otherwise the production settings) and measures:

1. latency: POST -> COMPLETED of sequential no-op runs of agent `pass` (created with
   `runs.services.run_create`, what the POST view calls), interleaved one by one with the same
   number of sequential bare django-q2 tasks, each submitted after a random pause of 0..Q_POLL s;
   by wall clock (polling every 2 ms) and by the rows' own timestamps; plus the engine's queue lag
   (Run.created_at -> StepAttempt.started_at).
2. drain: N runs / N bare tasks enqueued while the cluster is stopped, then the cluster started
   (rounds in ABBA order); throughput from the first to the last completion (rows' timestamps),
   wall clock, and CPU per task of the cluster's processes and of the database's backends.
3. in-process: SQL statements, wall and CPU time per run_create / engine.step_execute (no cluster).

The baseline task (`bench.noop.signal_done`) does one UPDATE of a row by primary key: with
`save_limit=-1` django-q2 stores no success rows (and its result hooks run from the post_save of
that row, so never), and the engine must at least mark its row finished too, so this is the least a
durable task system does to make completion visible. The bench inserts that row before
`async_task` (the record of the work, as run_create inserts a Run), and polls it as it polls runs.

Exit status is 0 whatever the figures; the targets are printed as information.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench.common import CLOCK_TICKS, ms, proc_stat, process_cpu_seconds, recreate_database, server_params  # noqa: E402

BENCH_DB = "agentrunner_bench"
# Own cluster name = own queue key: never take (or leave) messages of another cluster on a shared broker.
CLUSTER_NAME = "agentrunner-bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
BARE_TASK = "bench.noop.signal_done"
JOB_TABLE = "bench_job"
POLL_SECONDS = 0.002
WAIT_TIMEOUT = 30.0
DRAIN_TIMEOUT = 75.0
CLUSTER_STOP_TIMEOUT = 15.0

TARGET_LATENCY_RATIO = 1.25
TARGET_THROUGHPUT_RATIO = 0.8
TARGET_QUEUE_LAG_MS = 50.0


# --- set-up before Django is imported --------------------------------------------


def bench_url(params: dict) -> str:
    auth = params["user"] + (f":{params['password']}" if "password" in params else "")
    return f"postgres://{auth}@{params['host']}:{params['port']}/{BENCH_DB}"


def configure_environment(db_url: str, redis_url: str) -> None:
    """Environment for this process and the cluster: production settings, 2 workers, quiet logs."""
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "agentrunner.settings",
            "SECRET_KEY": "bench-only-insecure-secret-key",
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,  # "" = ORM broker and database cache (settings' default)
            "Q_WORKERS": "2",
            "Q_CLUSTER_NAME": CLUSTER_NAME,
            "PYTHONPATH": str(BASE_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
    )


# --- CPU accounting (Linux /proc) ---------------------------------------------------


# --- the worker cluster ------------------------------------------------------------


class Cluster:
    """One real `manage.py qcluster` process (its own session, so its workers can be killed with it)."""

    def __init__(self, log_dir: Path, label: str):
        self.log_path = log_dir / f"cluster-{label}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "qcluster"],
            cwd=BASE_DIR,
            env=os.environ.copy(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def cpu_seconds(self) -> float:
        """User+system CPU of every live process of the cluster's session, plus their reaped children (recycled)."""
        total = 0.0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = proc_stat(int(entry))
                if stat and int(stat[3]) == self.process.pid:  # field 6: session id
                    total += sum(int(x) for x in stat[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
        return total

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"qcluster exited ({self.process.returncode}):\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> float:
        """SIGTERM, wait, then kill; return the seconds the clean stop took."""
        t0 = time.perf_counter()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=CLUSTER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"  (cluster did not stop within {CLUSTER_STOP_TIMEOUT:g} s of SIGTERM: killed)")
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # leave no orphaned worker behind
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()
        return time.perf_counter() - t0


# --- measuring helpers --------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    if p == 50:
        return statistics.median(values)
    return statistics.quantiles(values, n=100, method="inclusive")[round(p) - 1]


def wait_for(predicate, *, timeout: float, interval: float, what: str, cluster: Cluster | None = None):
    deadline = time.perf_counter() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        if cluster is not None:
            cluster.check_alive()
        time.sleep(interval)


class Bench:
    def __init__(self, args, log_dir: Path):
        from django.db import connection
        from django_q.brokers import get_broker
        from django_q.conf import Conf

        from runs.models import RUN_FINISHED, Run

        self.args = args
        self.log_dir = log_dir
        self.cluster: Cluster | None = None
        self.connection = connection
        self.broker = get_broker()  # one broker object, as runs.dispatch keeps one per process
        self.Conf = Conf
        self.Run = Run
        self.finished = [str(s) for s in RUN_FINISHED]
        self.run_table = Run._meta.db_table
        self.results: dict = {}
        self.team = None  # the default team, read once (the API's requests resolve theirs before run_create)
        self.cluster_count = 0
        self.stop_seconds: list[float] = []  # SIGTERM -> exit of each cluster

    # cluster
    def start_cluster(self, label: str) -> Cluster:
        self.cluster_count += 1
        self.cluster = Cluster(self.log_dir, f"{self.cluster_count}-{label}")
        return self.cluster

    def stop_cluster(self) -> None:
        if self.cluster is not None:
            self.stop_seconds.append(self.cluster.stop())
            self.cluster = None

    def purge_queue(self) -> None:
        self.broker.purge_queue()

    def sql(self, query: str, params=None):
        with self.connection.cursor() as cursor:
            cursor.execute(query, params or [])
            return cursor.fetchall() if cursor.description else None

    def run_start(self):
        """Start a run of `pass` as POST /runs does: `run_create` with the acting team the request resolved."""
        from runs.services import run_create

        if self.team is None:
            from agentrunner.teams.services import team_default

            self.team = team_default()
        return run_create(agent_type="pass", input={}, team=self.team)[0]

    # one engine run / one bare task, waited for
    def engine_once(self) -> tuple[str, float]:
        t0 = time.perf_counter()
        run = self.run_start()
        query = f"SELECT status FROM {self.run_table} WHERE id = %s"
        wait_for(
            lambda: self.sql(query, [run.id])[0][0] in self.finished,
            timeout=WAIT_TIMEOUT,
            interval=POLL_SECONDS,
            what=f"run {run.id}",
            cluster=self.cluster,
        )
        return run.id, time.perf_counter() - t0

    def bare_submit(self, batch: str) -> int:
        from django.utils import timezone
        from django_q.tasks import async_task

        job_id = self.sql(
            f"INSERT INTO {JOB_TABLE} (batch, created_at) VALUES (%s, %s) RETURNING id", [batch, timezone.now()]
        )[0][0]
        async_task(BARE_TASK, job_id, broker=self.broker, task_name=f"bench-{job_id}")
        return job_id

    def bare_once(self) -> tuple[int, float]:
        t0 = time.perf_counter()
        job_id = self.bare_submit("latency")
        query = f"SELECT finished_at IS NOT NULL FROM {JOB_TABLE} WHERE id = %s"
        wait_for(
            lambda: self.sql(query, [job_id])[0][0],
            timeout=WAIT_TIMEOUT,
            interval=POLL_SECONDS,
            what=f"bare task {job_id}",
            cluster=self.cluster,
        )
        return job_id, time.perf_counter() - t0

    # phase 1: latency (cluster running)
    def latency(self, n: int, warmup: int) -> None:
        for _ in range(warmup):  # first tasks pay imports, connections, cache misses
            self.engine_once()
            self.bare_once()
        run_ids, job_ids, eng_wall, bare_wall = [], [], [], []
        rng = random.Random(42)
        pause = self.Conf.POLL
        for i in range(n):
            # Interleaved, alternating who goes first: drift and noise hit both sides alike.
            order = (self.engine_once, self.bare_once) if i % 2 == 0 else (self.bare_once, self.engine_once)
            for fn in order:
                # A random pause of 0..poll before each submission: a closed loop that submits right after
                # the previous completion is phase-locked to the ORM pusher's poll sleep (begun when it took
                # the previous task) and waits nearly a full poll every time, which is no arrival pattern.
                time.sleep(rng.uniform(0, pause))
                ident, seconds = fn()
                if fn == self.engine_once:
                    run_ids.append(ident)
                    eng_wall.append(seconds)
                else:
                    job_ids.append(ident)
                    bare_wall.append(seconds)
        rows = list(
            self.Run.objects.filter(pk__in=run_ids).values_list(
                "status", "created_at", "finished_at", "steps__dispatched_at", "steps__attempt_set__started_at"
            )
        )
        statuses = Counter(r[0] for r in rows)
        eng_db = [(r[2] - r[1]).total_seconds() for r in rows if r[2]]
        lag = [(r[4] - r[1]).total_seconds() for r in rows if r[4]]
        lag_dispatch = [(r[4] - r[3]).total_seconds() for r in rows if r[4] and r[3]]
        jobs = self.sql(f"SELECT created_at, finished_at FROM {JOB_TABLE} WHERE id = ANY(%s)", [job_ids])
        bare_db = [(f - c).total_seconds() for c, f in jobs if f]
        self.results["latency"] = {
            "n": n,
            "pause": pause,
            "statuses": dict(statuses),
            "engine_wall": eng_wall,
            "bare_wall": bare_wall,
            "engine_db": eng_db,
            "bare_db": bare_db,
            "lag": lag,
            "lag_dispatch": lag_dispatch,
        }

    # phase 2: drains (cluster stopped while enqueueing)
    def drain_engine(self, n: int) -> None:
        from django.utils import timezone

        self.stop_cluster()
        marker = timezone.now()
        batch = self.Run.objects.filter(created_at__gte=marker)
        figures = self._drain(
            "engine",
            n,
            enqueue_one=self.run_start,
            remaining=lambda: batch.filter(finished_at__isnull=True).count(),
            finished_times=lambda: list(batch.filter(finished_at__isnull=False).values_list("finished_at", flat=True)),
        )
        figures["statuses"] = dict(Counter(batch.values_list("status", flat=True)))
        self.results.setdefault("engine_drain", []).append(figures)

    def drain_bare(self, n: int) -> None:
        self.stop_cluster()
        self.sql(f"UPDATE {JOB_TABLE} SET batch = 'drained' WHERE batch = 'drain'")  # earlier rounds
        figures = self._drain(
            "bare",
            n,
            enqueue_one=lambda: self.bare_submit("drain"),
            remaining=lambda: self.sql(
                f"SELECT count(*) FROM {JOB_TABLE} WHERE batch = 'drain' AND finished_at IS NULL"
            )[0][0],
            finished_times=lambda: [
                r[0]
                for r in self.sql(
                    f"SELECT finished_at FROM {JOB_TABLE} WHERE batch = 'drain' AND finished_at IS NOT NULL"
                )
            ],
        )
        figures["statuses"] = {"done": figures["done"]}
        self.results.setdefault("bare_drain", []).append(figures)

    def _drain(self, side: str, n: int, *, enqueue_one, remaining, finished_times) -> dict:
        """Enqueue n with no cluster, start one, wait until none remain; CPU sampled from the 1st completion on."""
        self.purge_queue()
        t0 = time.perf_counter()
        for _ in range(n):
            enqueue_one()
        enqueue_s = time.perf_counter() - t0
        cluster = self.start_cluster(f"{side}-drain")
        deadline = time.perf_counter() + DRAIN_TIMEOUT
        first = None  # (remaining, cluster CPU s, PostgreSQL backends CPU s) once completions have begun
        timed_out = False
        while True:
            left = remaining()
            if first is None and left < n:
                first = (left, *self.cpu_sample(cluster))
            if left == 0:
                break
            if time.perf_counter() > deadline:
                timed_out = True
                break
            cluster.check_alive()
            time.sleep(0.05)
        wall = time.perf_counter() - cluster.started
        last = (left, *self.cpu_sample(cluster))
        counted = first[0] - last[0] if first else 0
        done = finished_times()
        # First to last completion: excludes cluster start-up (process spawn, Django set-up).
        span = (max(done) - min(done)).total_seconds() if len(done) > 1 else 0.0
        return {
            "n": n,
            "done": len(done),
            "timed_out": timed_out,
            "enqueue_s": enqueue_s,
            "span_s": span,
            "wall_s": wall,
            "cpu_tasks": counted,
            "cluster_cpu_s": last[1] - first[1] if first else 0.0,
            "pg_cpu_s": last[2] - first[2] if first else 0.0,
        }

    def cpu_sample(self, cluster: Cluster) -> tuple[float, float]:
        """CPU seconds so far of the cluster's processes, and of the bench database's other backends (Linux)."""
        pg_pids = [
            r[0]
            for r in self.sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
        return cluster.cpu_seconds(), sum(process_cpu_seconds(pid) for pid in pg_pids)

    @staticmethod
    def drain_totals(drains: list[dict]) -> dict:
        """Pooled over rounds: completions per second of the runs' own span, of wall clock, enqueues per second."""
        span = sum(d["span_s"] for d in drains)
        return {
            "per_s": sum(d["done"] - 1 for d in drains) / span if span else float("nan"),
            "wall_per_s": sum(d["done"] for d in drains) / sum(d["wall_s"] for d in drains),
            "enqueue_per_s": sum(d["n"] for d in drains) / sum(d["enqueue_s"] for d in drains),
            "cluster_cpu_ms": ms(sum(d["cluster_cpu_s"] for d in drains) / max(1, sum(d["cpu_tasks"] for d in drains))),
            "pg_cpu_ms": ms(sum(d["pg_cpu_s"] for d in drains) / max(1, sum(d["cpu_tasks"] for d in drains))),
        }

    # phase 3: in-process profile (no cluster): statements and time per create / execute
    def profile(self, n: int) -> None:
        from django.db import reset_queries
        from django.test.utils import CaptureQueriesContext

        from bench.noop import signal_done
        from runs import engine

        self.stop_cluster()
        self.purge_queue()
        with CaptureQueriesContext(self.connection) as create_q:
            run = self.run_start()
        step_id = run.steps.get().id
        with CaptureQueriesContext(self.connection) as exec_q:
            engine.step_execute(step_id=step_id)
        # Time split of step_execute: wrap claim and finish (globals of runs.engine.execute, looked up per call).
        from runs.engine import execute as engine_execute

        spent = Counter()
        originals = {name: getattr(engine_execute, name) for name in ("step_claim", "step_finish")}

        def timed(name):
            def wrapper(**kwargs):
                t = time.perf_counter()
                try:
                    return originals[name](**kwargs)
                finally:
                    spent[name] += time.perf_counter() - t

            return wrapper

        step_ids, create_s, create_cpu = [], 0.0, 0.0
        for _ in range(n):
            t, c = time.perf_counter(), time.process_time()
            created = self.run_start()
            create_s, create_cpu = create_s + time.perf_counter() - t, create_cpu + time.process_time() - c
            step_ids.append(created.steps.get().id)
        for name in originals:
            setattr(engine_execute, name, timed(name))
        try:
            t, c = time.perf_counter(), time.process_time()
            for sid in step_ids:
                engine.step_execute(step_id=sid)
            execute_s, execute_cpu = time.perf_counter() - t, time.process_time() - c
        finally:
            for name, fn in originals.items():
                setattr(engine_execute, name, fn)
        job_ids = [self.sql(f"INSERT INTO {JOB_TABLE} (batch) VALUES ('profile') RETURNING id")[0][0] for _ in range(n)]
        t, c = time.perf_counter(), time.process_time()
        for jid in job_ids:
            signal_done(jid)
        bare_s, bare_cpu = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            self.bare_submit("profile")
        submit_s, submit_cpu = time.perf_counter() - t, time.process_time() - c
        self.purge_queue()  # the messages run_create sent: nobody is to run them
        self.results["profile"] = {
            "n": n,
            "create_queries": [q["sql"] for q in create_q.captured_queries],
            "execute_queries": [q["sql"] for q in exec_q.captured_queries],
            "create_ms": ms(create_s / n),
            "create_cpu_ms": ms(create_cpu / n),
            "execute_ms": ms(execute_s / n),
            "execute_cpu_ms": ms(execute_cpu / n),
            "submit_ms": ms(submit_s / n),
            "submit_cpu_ms": ms(submit_cpu / n),
            "bare_cpu_ms": ms(bare_cpu / n),
            "claim_ms": ms(spent["step_claim"] / n),
            "finish_ms": ms(spent["step_finish"] / n),
            "bare_ms": ms(bare_s / n),
        }
        reset_queries()  # after reading them: captured_queries are read from connection.queries


# --- report ---------------------------------------------------------------------------


def fmt(value: float, unit: str = "") -> str:
    if value != value:  # nan
        return "n/a"
    return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def print_settings(server_note: str, redis_url: str) -> None:
    import django
    from django.conf import settings
    from django.db import connection
    from django_q import VERSION as Q_VERSION

    db = settings.DATABASES["default"]
    q = settings.Q_CLUSTER
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pg_version = connection.cursor().connection.info.server_version
    print("Settings")
    print(f"  broker          : {'Redis ' + redis_url if redis_url else 'ORM (django-q2 OrmQ table, default DB)'}")
    print(f"  cache           : {settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1]}")
    print(f"  workers         : {q['workers']}  (one qcluster process: +pusher, monitor, sentinel)")
    print(f"  poll            : {q['poll']} s{'  (ORM broker only)' if redis_url else ''}")
    print(f"  save_limit      : {q['save_limit']}   recycle: {q.get('recycle')}   bulk: {q.get('bulk', 1)}")
    print(f"  CONN_MAX_AGE    : {db.get('CONN_MAX_AGE')}   CONN_HEALTH_CHECKS: {db.get('CONN_HEALTH_CHECKS')}")
    print(f"  engine tick     : {settings.ENGINE_TICK_SECONDS} s   cancel poll: {settings.CANCEL_POLL_SECONDS} s")
    print(f"  database        : {db['NAME']} on {db['HOST']}:{db['PORT']} (PostgreSQL {pg_version // 10000})")
    if server_note:
        print(f"  note            : {server_note}")
    print(
        f"  machine         : {os.cpu_count()} CPUs ({affinity} usable), Python {platform.python_version()}, "
        f"Django {django.get_version()}, django-q2 {'.'.join(map(str, Q_VERSION))}"
    )
    print()


def summarize_sql(sql: str) -> str:
    """One short line per statement: verb, table, columns set, lock."""
    if sql is None:  # Django could not render it with its parameters (server-side binding)
        return "(a prepared statement; text not rendered)"
    words = sql.split()
    verb = words[0].upper() if words else ""
    if verb == "SELECT":
        table = re.search(r'\bFROM "?(\w+)"?', sql)
        where = re.findall(r'"\w+"\."(\w+)" (?:=|IN)', sql.split(" WHERE ", 1)[1]) if " WHERE " in sql else []
        joins = "".join(f" JOIN {t}" for t in re.findall(r'\bJOIN "?(\w+)"?', sql))
        order = " ORDER BY ..." if " ORDER BY " in sql else ""
        lock = " FOR UPDATE" if "FOR UPDATE" in sql else ""
        where_cols = ", ".join(where) or "-"
        return f"SELECT ... FROM {table.group(1) if table else '?'}{joins} WHERE {where_cols}{order}{lock}"
    if verb == "UPDATE":
        table = re.match(r'UPDATE "?(\w+)"?', sql)
        cols = re.findall(r'"(\w+)" = ', sql.split(" WHERE ", 1)[0])
        where = re.findall(r'"\w+"\."(\w+)" (?:=|IN)', sql.split(" WHERE ", 1)[1]) if " WHERE " in sql else []
        return f"UPDATE {table.group(1) if table else '?'} SET {', '.join(cols)} WHERE {', '.join(where) or '-'}"
    if verb == "INSERT":
        table = re.match(r'INSERT INTO "?(\w+)"?', sql)
        return f"INSERT INTO {table.group(1) if table else '?'}"
    return sql[:100]


def print_report(results: dict, elapsed: float, verbose: bool = False) -> None:
    lat = results.get("latency")
    eds, bds = results.get("engine_drain", []), results.get("bare_drain", [])
    ed = Bench.drain_totals(eds) if eds else None
    bd = Bench.drain_totals(bds) if bds else None
    rows = []  # metric, engine, bare, ratio, target, met

    def add(metric, eng, bare, unit, target_ratio=None, higher_is_better=False, absolute=None):
        r = ratio(eng, bare)
        target, met = "-", "-"
        if target_ratio is not None:
            target = f"ratio {'>=' if higher_is_better else '<='} {target_ratio}"
            ok = r >= target_ratio if higher_is_better else r <= target_ratio
            met = "n/a" if r != r else ("yes" if ok else "NO")
        if absolute is not None:
            target = f"engine <= {absolute:g}{unit}"
            met = "n/a" if eng != eng else ("yes" if eng <= absolute else "NO")
        rows.append((metric, fmt(eng, unit), fmt(bare, unit), fmt(r, "x") if r == r else "n/a", target, met))

    if lat:
        for label, e, b in (
            ("wall, poll 2 ms", "engine_wall", "bare_wall"),
            ("row timestamps", "engine_db", "bare_db"),
        ):
            for p in (50, 95):
                add(f"latency p{p} ({label})", ms(pct(lat[e], p)), ms(pct(lat[b], p)), " ms", TARGET_LATENCY_RATIO)
        add("queue lag p50 (created -> start)", ms(pct(lat["lag"], 50)), ms(pct(lat["bare_db"], 50)), " ms", None,
            absolute=TARGET_QUEUE_LAG_MS)  # fmt: skip
        add("queue lag p95 (created -> start)", ms(pct(lat["lag"], 95)), ms(pct(lat["bare_db"], 95)), " ms")
    if ed and bd:
        add("drain throughput (1st->last done)", ed["per_s"], bd["per_s"], "/s", TARGET_THROUGHPUT_RATIO, True)
        add("drain incl. cluster start (wall)", ed["wall_per_s"], bd["wall_per_s"], "/s")
        add("enqueue rate (cluster stopped)", ed["enqueue_per_s"], bd["enqueue_per_s"], "/s")
        add("CPU per task: cluster processes", ed["cluster_cpu_ms"], bd["cluster_cpu_ms"], " ms")
        add("CPU per task: PostgreSQL backends", ed["pg_cpu_ms"], bd["pg_cpu_ms"], " ms")

    headers = ("metric", "engine", "bare django-q2", "ratio", "target", "met")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print("Results")
    print("  " + line.format(*headers))
    print("  " + "  ".join("-" * w for w in widths))
    for r in rows:
        print("  " + line.format(*r))
    print()
    if lat:
        print(
            f"  latency: {lat['n']} engine runs {lat['statuses']} interleaved with {lat['n']} bare tasks, each "
            f"submitted after a random 0-{lat['pause']:g} s pause; "
            f"engine dispatched -> attempt start p50 {fmt(ms(pct(lat['lag_dispatch'], 50)))} ms"
        )
        print(
            "  bare 'queue lag' = job row created -> task's UPDATE (start ~= finish for a no-op); "
            "the queue-lag target applies to the engine."
        )
    for name, drains in (("engine", eds), ("bare", bds)):
        for i, d in enumerate(drains):
            print(
                f"  {name} drain {i + 1}: {d['done']}/{d['n']} done {d['statuses']} at "
                f"{(d['done'] - 1) / d['span_s'] if d['span_s'] else float('nan'):.0f}/s (1st->last), "
                f"wall {d['wall_s']:.1f} s incl. cluster start, enqueue {d['n'] / d['enqueue_s']:.0f}/s"
                f"{'  TIMED OUT' if d['timed_out'] else ''}"
            )
    prof = results.get("profile")
    if prof:
        print()
        print(f"In-process profile (no cluster; mean of {prof['n']}; django-q2's own per-task work not included)")
        print(
            f"  run_create        : {len(prof['create_queries'])} SQL statements, {prof['create_ms']:.2f} ms wall, "
            f"{prof['create_cpu_ms']:.2f} ms CPU (incl. the broker enqueue)"
        )
        print(
            f"  bare submit       : 2 SQL statements, {prof['submit_ms']:.2f} ms wall, "
            f"{prof['submit_cpu_ms']:.2f} ms CPU (job row INSERT + async_task)"
        )
        print(
            f"  step_execute      : {len(prof['execute_queries'])} SQL statements, {prof['execute_ms']:.2f} ms wall "
            f"(claim {prof['claim_ms']:.2f} + finish {prof['finish_ms']:.2f} + agent/watch/logging "
            f"{prof['execute_ms'] - prof['claim_ms'] - prof['finish_ms']:.2f}), {prof['execute_cpu_ms']:.2f} ms CPU"
        )
        print(f"  bare signal_done  : 1 SQL statement, {prof['bare_ms']:.2f} ms wall, {prof['bare_cpu_ms']:.2f} ms CPU")
        for label, key in (("run_create", "create_queries"), ("step_execute", "execute_queries")):
            print(f"  {label} statements:")
            for i, q in enumerate(prof[key], 1):
                print(f"    {i:2d}. {q if verbose else summarize_sql(q)}")
    print()
    print(f"Total bench time {elapsed:.0f} s. Figures are information only (exit status 0 regardless).")


# --- main -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", action="store_true", help=f"use {DEFAULT_REDIS} as broker (and cache)")
    parser.add_argument("--runs", type=int, default=200, help="sequential runs/tasks per side (latency)")
    parser.add_argument("--drain", type=int, default=1000, help="runs/tasks per side (throughput)")
    parser.add_argument("--drain-rounds", type=int, default=2, help="drain rounds per side, ABBA order")
    parser.add_argument("--warmup", type=int, default=10, help="discarded runs/tasks per side before latency")
    parser.add_argument("--profile", type=int, default=50, help="in-process runs for the profile (0: skip)")
    parser.add_argument("--verbose", action="store_true", help="print the profiled SQL statements in full")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the bench database at the end")
    args = parser.parse_args()

    started = time.perf_counter()
    server, note = server_params()
    redis_url = DEFAULT_REDIS if args.redis else ""
    print(f"Engine bench: database {BENCH_DB} on {server['host']}:{server['port']}; preparing ...", flush=True)
    recreate_database(server, name=BENCH_DB)
    configure_environment(bench_url(server), redis_url)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, interactive=False)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {JOB_TABLE} (id bigserial PRIMARY KEY, batch text NOT NULL DEFAULT '', "
            "created_at timestamptz, finished_at timestamptz)"
        )
    print()
    print_settings(note, redis_url)

    log_dir = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    bench = Bench(args, log_dir)
    bench.purge_queue()

    def step(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {text} (load avg {os.getloadavg()[0]:.1f})", flush=True)

    try:
        # Drains in ABBA order (engine, bare, bare, engine for 2 rounds): the machine's load drifts,
        # and the two sides cannot run at once; the latency phase interleaves them run by run.
        for r in range(args.drain_rounds):
            sides = ("engine", "bare") if r % 2 == 0 else ("bare", "engine")
            for side in sides:
                step(
                    f"{side} drain {r + 1}/{args.drain_rounds}: {args.drain} {'runs' if side == 'engine' else 'tasks'}"
                )
                (bench.drain_engine if side == "engine" else bench.drain_bare)(args.drain)
                if r == 0 and side == "engine":  # the cluster is up: measure latency now
                    step(f"latency: {args.runs} engine runs interleaved with {args.runs} bare tasks")
                    bench.latency(args.runs, args.warmup)
        bench.stop_cluster()
        if args.profile:
            step("in-process profile")
            bench.profile(args.profile)
    except Exception as exc:  # report what was measured; clean up below
        print(f"\nBENCH ERROR: {exc.__class__.__name__}: {exc}", flush=True)
    finally:
        bench.stop_cluster()
        try:
            bench.purge_queue()
        except Exception as exc:
            print(f"  (could not purge the queue: {exc})")
        connection.close()
        if not args.keep_db:
            recreate_database(server, name=BENCH_DB, drop_only=True)
    print()
    print_report(bench.results, time.perf_counter() - started, verbose=args.verbose)
    if bench.stop_seconds:
        print(
            f"{len(bench.stop_seconds)} cluster starts; each stopped by SIGTERM in at most "
            f"{max(bench.stop_seconds):.1f} s (then SIGKILL to its process group)."
        )
    logs = [p for p in sorted(log_dir.iterdir()) if p.stat().st_size]
    if logs:
        print(f"Cluster output (warnings, errors) in: {', '.join(str(p) for p in logs)}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
        print("Cluster output: none (no warnings or errors).")
    print(f"Bench database {BENCH_DB} {'kept' if args.keep_db else 'dropped'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
