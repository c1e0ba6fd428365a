"""Reads: schedules with their newest run, their next fire times and their slot history.

Each read is of one team's schedules (the acting team): another team's schedule is ScheduleNotFound, as a
missing one. What belongs to a schedule (its runs, its slots) is read through the schedule.
"""

from __future__ import annotations

from datetime import datetime

from croniter import CroniterBadDateError
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from runs.models import Run
from schedules.exceptions import ScheduleNotFound
from schedules.models import Schedule, ScheduleFire
from schedules.services import schedule_timing
from schedules.timing import TimingError

NEXT_FIRE_TIMES = 5
RECENT_FIRES = 20
# The run columns a schedule's "last run" shows; never the (possibly large) input and result.
LAST_RUN_FIELDS = ("id", "status", "scheduled_for", "created_at", "finished_at", "schedule_id")


def _last_run_prefetch() -> Prefetch:
    # A sliced prefetch: one query for the whole page, the newest run of each schedule.
    runs = Run.objects.only(*LAST_RUN_FIELDS).order_by("-created_at")[:1]
    return Prefetch("runs", queryset=runs, to_attr="latest_runs")


def with_last_run(schedules: QuerySet[Schedule]) -> QuerySet[Schedule]:
    """`schedules` with their flow, django-q2 row and newest run, in three queries for any number of them."""
    return schedules.select_related("flow", "q_schedule", "created_by").prefetch_related(_last_run_prefetch())


def schedule_list(*, team) -> QuerySet[Schedule]:
    """`team`'s schedules, with their flow, django-q2 row and newest run (with_last_run)."""
    return with_last_run(Schedule.objects.filter(team=team))


def schedule_get(*, team, schedule_id: int) -> Schedule:
    """`team`'s schedule as schedule_list reads it; ScheduleNotFound if it has none with that id (another
    team's schedule too)."""
    schedule = schedule_list(team=team).filter(pk=schedule_id).first()
    if schedule is None:
        raise ScheduleNotFound()
    return schedule


def schedule_last_run(schedule: Schedule) -> Run | None:
    """The newest run the schedule started (prefetched by schedule_list), or None."""
    if hasattr(schedule, "latest_runs"):
        return schedule.latest_runs[0] if schedule.latest_runs else None
    return Run.objects.filter(schedule=schedule).only(*LAST_RUN_FIELDS).order_by("-created_at").first()


def schedule_next_fire_times(
    schedule: Schedule, count: int = NEXT_FIRE_TIMES, *, now: datetime | None = None
) -> list[datetime]:
    """The next `count` fire times (UTC) after now; none while the schedule is paused."""
    if not schedule.enabled:
        return []
    try:
        return schedule_timing(schedule).upcoming(now or timezone.now(), count)
    except (TimingError, CroniterBadDateError, OverflowError):
        # A row saved before a rule tightened (or a cron that never fires): show nothing rather than fail.
        return []


def schedule_fire_list(*, schedule: Schedule) -> QuerySet[ScheduleFire]:
    """The schedule's slots, newest fire time first, with their run's status."""
    return (
        ScheduleFire.objects.filter(schedule=schedule)
        .select_related("run")
        .only(
            "id",
            "schedule_id",
            "intended_at",
            "status",
            "detail",
            "created_at",
            "run__id",
            "run__status",
            "run__finished_at",
        )
        .order_by("-intended_at")
    )
