"""How late scheduled runs start relative to their intended time, on PostgreSQL with one real qcluster.

N interval schedules of the `pass` agent fire for a while; for every slot it
prints how long after the intended time (a) the slot was decided (django-q2's
scheduler pass + our fire task) and (b) the run's step started in a worker.
Prints figures, asserts nothing. Reuses engine_bench.py's set-up helpers.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import engine_bench as eb  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=20, help="schedules firing at once")
    parser.add_argument("--every", type=int, default=5, help="interval of each schedule, seconds")
    parser.add_argument("--seconds", type=int, default=60, help="how long to let them fire")
    parser.add_argument("--redis", action="store_true", help="use the Redis broker")
    args = parser.parse_args()
    server, note = eb.server_params()
    eb.recreate_database(server, name=eb.BENCH_DB)
    eb.configure_environment(eb.bench_url(server), "redis://127.0.0.1:6379/14" if args.redis else "")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from django.conf import settings

    from runs.models import Run
    from schedules.models import ScheduleFire
    from schedules.services import schedule_create

    log_dir = Path(tempfile.mkdtemp(prefix="schedule-bench-"))
    cluster = eb.Cluster(log_dir, "schedule")
    try:
        from django_q.status import Stat

        eb.wait_for(Stat.get_all, timeout=30, interval=0.1, what="cluster start", cluster=cluster)
        for i in range(args.schedules):
            schedule_create(
                name=f"bench-{i}", agent_type="pass", input={"i": i}, kind="interval", interval_seconds=args.every
            )
        time.sleep(args.seconds)
        from schedules.models import Schedule

        for s in Schedule.objects.all():
            s.enabled = False
            s.save(update_fields=["enabled"])
        time.sleep(2)
        fires = list(ScheduleFire.objects.all())
        decided = [(f.created_at - f.intended_at).total_seconds() for f in fires]
        starts = [
            (r.started_at - r.scheduled_for).total_seconds()
            for r in Run.objects.filter(started_at__isnull=False, scheduled_for__isnull=False)
        ]
        statuses = {s: sum(f.status == s for f in fires) for s in {f.status for f in fires}}
    finally:
        cluster.stop()
        from django.db import connection

        connection.close()
        eb.recreate_database(server, name=eb.BENCH_DB, drop_only=True)
    broker = "Redis" if args.redis else "ORM (poll 0.05 s)"
    print(
        f"{args.schedules} schedules every {args.every} s for {args.seconds} s, 1 cluster × 2 workers, "
        f"broker {broker}, engine tick {settings.ENGINE_TICK_SECONDS} s. {note}"
    )
    print(f"  slots: {len(fires)} {statuses}")
    for label, values in (("slot decided", decided), ("run started", starts)):
        if values:
            print(
                f"  {label} after its intended time: p50 {eb.ms(eb.pct(values, 50)):.0f} ms, "
                f"p95 {eb.ms(eb.pct(values, 95)):.0f} ms, max {eb.ms(max(values)):.0f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
