"""Tasks for the bare django-q2 baseline of `bench/engine_bench.py`, imported by the worker cluster.

`signal_done` is the fair baseline: the least a durable engine must do to make a task's
completion visible, one UPDATE of a row by primary key. django-q2 itself cannot signal it:
with `save_limit=-1` success results are not stored, and result hooks run from the
post_save signal of the stored Task row, so they never run for successes either.
"""

from django.db import connection
from django.utils import timezone

JOB_TABLE = "bench_job"


def noop() -> None:
    """A true no-op (unobservable with save_limit=-1; kept for ad-hoc profiling)."""
    return None


def signal_done(job_id: int) -> None:
    """Mark the bench job row finished: one autocommit UPDATE by primary key."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {JOB_TABLE} SET finished_at = %s WHERE id = %s", [timezone.now(), job_id])
    return None
