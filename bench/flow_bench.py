"""Per-step overhead of flows on PostgreSQL: a 10-step flow of `pass` steps, start to COMPLETED.

Prints figures, asserts nothing. Uses its own database and one real qcluster (2 workers), like
engine_bench.py, whose set-up helpers it reuses.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import engine_bench as eb  # noqa: E402

STEPS = 10


def definition() -> dict:
    names = [f"s{i}" for i in range(STEPS)]
    return {
        "name": "ten passes",
        "start_task": names[0],
        "tasks": [{"name": n, "agent": "pass", "input": {"i": i}} for i, n in enumerate(names)],
        "conditions": [
            {"name": f"c{i}", "source_task": a, "outcome": "success", "target_task_success": b}
            for i, (a, b) in enumerate(zip(names, names[1:], strict=False))
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="sequential flow runs to time")
    parser.add_argument("--redis", action="store_true", help="use the Redis broker")
    args = parser.parse_args()
    server, note = eb.server_params()
    eb.recreate_database(server, name=eb.BENCH_DB)
    eb.configure_environment(eb.bench_url(server), "redis://127.0.0.1:6379/14" if args.redis else "")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from flows.services import flow_create
    from runs.models import Run, StepAttempt
    from runs.services import flow_run_create

    version = flow_create(slug="ten-passes", name="ten passes", definition=definition()).current_version
    log_dir = Path(tempfile.mkdtemp(prefix="flow-bench-"))
    cluster = eb.Cluster(log_dir, "flow")
    try:
        from django_q.status import Stat

        eb.wait_for(Stat.get_all, timeout=30, interval=0.1, what="cluster start", cluster=cluster)
        walls, spans, gaps = [], [], []
        for i in range(args.runs + 3):
            t0 = time.perf_counter()
            run, _ = flow_run_create(version=version, input={})
            done = eb.wait_for(
                lambda run=run: Run.objects.filter(pk=run.pk, finished_at__isnull=False).first(),
                timeout=60,
                interval=eb.POLL_SECONDS,
                what="flow run",
                cluster=cluster,
            )
            if i < 3:  # warm-up
                continue
            walls.append(time.perf_counter() - t0)
            spans.append((done.finished_at - done.created_at).total_seconds())
            attempts = list(StepAttempt.objects.filter(step__run=run).order_by("started_at"))
            assert len(attempts) == STEPS and done.status == "COMPLETED", done.status
            gaps += [
                (b.started_at - a.finished_at).total_seconds() for a, b in zip(attempts, attempts[1:], strict=False)
            ]
    finally:
        cluster.stop()
        from django.db import connection

        connection.close()
        eb.recreate_database(server, name=eb.BENCH_DB, drop_only=True)
    broker = "Redis" if args.redis else "ORM (poll 0.05 s)"
    print(f"10-step flow of `pass` steps, {args.runs} sequential runs, 2 workers, broker {broker}. {note}")
    p50, p95 = eb.ms(eb.pct(spans, 50)), eb.ms(eb.pct(spans, 95))
    print(f"  start -> COMPLETED (row timestamps): p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    print(f"  start -> COMPLETED (wall, poll 2 ms): p50 {eb.ms(eb.pct(walls, 50)):.1f} ms")
    print(f"  per step: {eb.ms(eb.pct(spans, 50)) / STEPS:.1f} ms (p50 span / {STEPS})")
    print(
        f"  gap between a step's end and the next step's start: p50 {eb.ms(eb.pct(gaps, 50)):.1f} ms, "
        f"p95 {eb.ms(eb.pct(gaps, 95)):.1f} ms (broker pick-up + claim)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
