"""Schedules fired by django-q2's scheduler in real qcluster processes."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule as QSchedule
from django_q.tasks import async_task

from runs.models import Run, RunStatus
from schedules import services
from schedules.models import FireStatus, ScheduleFire
from schedules.timing import Timing
from tests.conftest import team_named, wait_for
from tests.schedules.factories import schedule

pytestmark = pytest.mark.cluster


def completed_runs(s, at_least: int):
    runs = list(Run.objects.filter(schedule=s, status=RunStatus.COMPLETED).order_by("scheduled_for"))
    return runs if len(runs) >= at_least else None


def test_schedule_fires_at_its_time_and_starts_one_run_per_slot__in_the_schedules_team(clusters):
    clusters(1)
    s = schedule(interval_seconds=2, input={"score": 3}, team=team_named("other"))
    runs = wait_for(lambda: completed_runs(s, 2), timeout=20, message="two scheduled runs")
    services.schedule_update(schedule=s, enabled=False)
    slots = [r.scheduled_for for r in runs]
    assert len(set(slots)) == len(slots)
    for run in runs:
        assert run.scheduled_for.timestamp() % 2 == 0  # on the interval's boundaries
        assert timedelta(0) <= run.created_at - run.scheduled_for < timedelta(seconds=5)
        assert run.result == {"score": 3} and run.team_id == s.team_id
        assert ScheduleFire.objects.get(schedule=s, intended_at=run.scheduled_for).run_id == run.pk


def test_two_clusters_and_duplicate_fires__one_run_per_slot(clusters):
    clusters(2)
    s = schedule(interval_seconds=1, overlap="allow")
    timing = Timing(interval_seconds=1)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        # A scheduler firing the same slot again, as a second scheduler would.
        slot = timing.latest_at_or_before(timezone.now())
        async_task("schedules.tasks.schedule_fire", s.pk, intended_at=slot.isoformat())
        time.sleep(0.3)
    services.schedule_update(schedule=s, enabled=False)
    time.sleep(1.5)  # let fires already queued finish
    runs = list(Run.objects.filter(schedule=s))
    slots = [r.scheduled_for for r in runs]
    assert len(runs) >= 4
    assert len(set(slots)) == len(slots)
    assert ScheduleFire.objects.filter(schedule=s).count() == len(runs)


def test_overlap_skip__no_second_run_while_the_first_is_active(clusters):
    clusters(1, workers=3)
    s = schedule(agent_type="wait", input={"seconds": 2.5}, interval_seconds=1, overlap="skip")
    wait_for(lambda: completed_runs(s, 2), timeout=25, message="two runs of the slow schedule")
    services.schedule_update(schedule=s, enabled=False)
    runs = list(Run.objects.filter(schedule=s).order_by("started_at"))
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.created_at >= earlier.finished_at, "a run started while the previous one was active"
    skipped = ScheduleFire.objects.filter(schedule=s, status=FireStatus.SKIPPED_OVERLAP)
    assert skipped.count() >= 2
    assert all("still" in f.detail for f in skipped)


def downtime(s, *, since: datetime) -> None:
    """Leave the schedule's django-q2 row as a cluster outage since `since` leaves it."""
    QSchedule.objects.filter(pk=s.q_schedule_id).update(next_run=since)


def test_catch_up_policies_after_downtime(clusters):
    now = datetime.now(UTC)
    # A daily slot at least two minutes in the past, so it is late beyond the grace.
    hour = (now - timedelta(hours=1)).hour if now.minute < 2 else now.hour
    cron = f"0 {hour} * * *"
    latest = Timing(cron=cron).latest_at_or_before(now)
    run_once = schedule(name="run-once", cron=cron, catch_up="run_once")
    skip_missed = schedule(name="skip-missed", cron=cron, catch_up="skip_missed")
    for s in (run_once, skip_missed):
        downtime(s, since=latest - timedelta(days=2))
    clusters(1)
    fires = wait_for(
        lambda: ScheduleFire.objects.count() == 2 and list(ScheduleFire.objects.order_by("schedule__name")),
        timeout=20,
        message="both schedules fired",
    )
    once, skipped = fires
    assert (once.schedule_id, once.status, once.intended_at) == (run_once.pk, FireStatus.STARTED, latest)
    assert "3 slots" in once.detail
    assert Run.objects.get(schedule=run_once).scheduled_for == latest
    assert (skipped.schedule_id, skipped.status) == (skip_missed.pk, FireStatus.SKIPPED_MISSED)
    assert not Run.objects.filter(schedule=skip_missed).exists()
    for s in (run_once, skip_missed):
        assert QSchedule.objects.get(pk=s.q_schedule_id).next_run == latest + timedelta(days=1)
