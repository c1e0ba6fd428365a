"""Writes: create, change and delete schedules; decide what each fire time becomes.

A fire time ("slot") becomes exactly one ScheduleFire row, claimed under the
schedule's row lock with a unique (schedule, intended_at): a second scheduler
pass, a second cluster or a re-delivered task finds the row and does nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agentrunner.agents import InvalidAgentInput, get_agent
from agentrunner.agents.registry import UnknownAgentType
from agentrunner.db import save_unique_name
from agentrunner.errors import ServiceError
from agentrunner.models import Team
from agentrunner.teams.services import team_or_default
from runs.models import RUN_FINISHED, Run
from runs.services import flow_run_create, run_create
from schedules.exceptions import ScheduleInvalid
from schedules.models import CatchUpPolicy, FireStatus, OverlapPolicy, Schedule, ScheduleFire, ScheduleKind
from schedules.qsync import q_schedule_move, q_schedule_sync
from schedules.timing import Timing, TimingError

log = structlog.get_logger("agentrunner.schedules")

FIRE_TASK = "schedules.tasks.schedule_fire"
# With overlap `queue`, slots beyond this many waiting are skipped (a run that
# never ends must not grow an endless queue).
MAX_QUEUED_SLOTS = 50
EDITABLE = (
    "name",
    "flow",
    "agent_type",
    "input",
    "kind",
    "cron",
    "interval_seconds",
    "timezone",
    "enabled",
    "overlap",
    "catch_up",
)


def schedule_timing(schedule: Schedule) -> Timing:
    if schedule.kind == ScheduleKind.CRON:
        return Timing(cron=schedule.cron, tz=schedule.timezone)
    return Timing(interval_seconds=schedule.interval_seconds, tz=schedule.timezone)


def schedule_check(schedule: Schedule) -> None:
    """Raise ScheduleInvalid listing every problem of an unsaved or changed schedule."""
    errors: dict[str, list[str]] = {}
    if bool(schedule.flow_id) == bool(schedule.agent_type):
        errors.setdefault("target", []).append("Give either a flow or an agent, not both.")
    elif schedule.flow_id and schedule.flow.team_id != schedule.team_id:
        # Another team's flow is refused as one that does not exist: its existence does not leak.
        errors.setdefault("flow", []).append(f"No flow {schedule.flow.slug!r}.")
    elif schedule.agent_type:
        try:
            schedule.input = get_agent(schedule.agent_type).validate_input(schedule.input)
        except UnknownAgentType as exc:
            errors.setdefault("agent_type", []).append(str(exc))
        except InvalidAgentInput as exc:
            for field, messages in exc.errors.items():
                errors.setdefault(f"input.{field}" if field != "input" else "input", []).extend(messages)
    if not isinstance(schedule.input, dict):
        errors.setdefault("input", []).append("The input must be a JSON object.")
    if schedule.kind == ScheduleKind.CRON:
        schedule.interval_seconds = None
        field = "cron"
    else:
        schedule.cron = ""
        field = "interval_seconds"
    try:
        schedule.cron = Timing(cron=schedule.cron, tz="UTC").cron if schedule.cron else ""
        schedule_timing(schedule)
    except TimingError as exc:
        errors.setdefault("timezone" if "zone" in str(exc) else field, []).append(str(exc))
    if errors:
        raise ScheduleInvalid(errors)


@transaction.atomic
def schedule_create(*, created_by=None, team: Team | None = None, **fields: Any) -> Schedule:
    """Create a schedule of `team` (the default team if None) and its django-q2 row; raise ScheduleInvalid with
    every problem. Its name is unique in the team; its flow must be the team's."""
    editable = {k: v for k, v in fields.items() if k in EDITABLE}
    schedule = Schedule(created_by=created_by, team=team_or_default(team), **editable)
    schedule_check(schedule)
    save_unique_name(schedule, invalid=ScheduleInvalid, within="team")
    schedule_sync(schedule=schedule)
    log.info("schedule_created", schedule_id=schedule.pk, name=schedule.name, target=schedule.target_label)
    return schedule


@transaction.atomic
def schedule_update(*, schedule: Schedule, **fields: Any) -> Schedule:
    """Change a schedule (not its team); its next fire time is recomputed from now (nothing is caught up)."""
    for name, value in fields.items():
        if name in EDITABLE:
            setattr(schedule, name, value)
    if "flow" in fields and fields["flow"] is not None:
        schedule.agent_type = ""
    elif fields.get("agent_type"):
        schedule.flow = None
    schedule_check(schedule)
    save_unique_name(schedule, invalid=ScheduleInvalid, within="team")
    schedule_sync(schedule=schedule)
    if not schedule.enabled:
        ScheduleFire.objects.filter(schedule=schedule, status=FireStatus.QUEUED).update(
            status=FireStatus.SKIPPED_OVERLAP, detail="The schedule was paused before this slot could start."
        )
    log.info("schedule_updated", schedule_id=schedule.pk, enabled=schedule.enabled)
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: Schedule) -> None:
    """Delete a schedule and its django-q2 row; its runs stay, without the link."""
    q_schedule_sync(owner=schedule, func=FIRE_TASK, label="", timing=None)
    schedule.delete()


def schedule_sync(*, schedule: Schedule) -> None:
    """Make django-q2's row match the schedule: fire at its next time when enabled, no row when paused."""
    timing = schedule_timing(schedule) if schedule.enabled else None
    q_schedule_sync(owner=schedule, func=FIRE_TASK, label=f"schedule: {schedule.name}", timing=timing)


def schedules_repair() -> int:
    """Re-create the django-q2 row of enabled schedules that lost theirs (e.g. deleted by hand)."""
    repaired = 0
    for schedule in Schedule.objects.filter(enabled=True, q_schedule__isnull=True):
        with transaction.atomic():
            schedule_sync(schedule=schedule)
        log.warning("schedule_row_recreated", schedule_id=schedule.pk)
        repaired += 1
    return repaired


def schedule_fire(*, schedule_id: int, intended_at: datetime, now: datetime | None = None) -> ScheduleFire | None:
    """Decide what the schedule's current slot becomes (run, queued, skipped); None if already decided."""
    schedule = Schedule.objects.select_related("flow", "team").filter(pk=schedule_id).first()
    if schedule is None:
        return None  # deleted; its django-q2 row went with it
    now = now or timezone.now()
    if not schedule.enabled:
        with transaction.atomic():
            schedule_sync(schedule=schedule)
        return None
    timing = schedule_timing(schedule)
    # Our next fire time replaces django-q2's own computation (which knows no time zones).
    q_schedule_move(owner=schedule, next_run=timing.next_after(now))
    slot = timing.latest_at_or_before(now)
    late_seconds = (now - slot).total_seconds()
    missed = timing.count_between(intended_at, slot) if intended_at < slot else 0
    if missed:
        log.warning("schedule_missed_slots", schedule_id=schedule.pk, missed=missed, since=intended_at.isoformat())
    skip_late = (
        schedule.catch_up == CatchUpPolicy.SKIP_MISSED and late_seconds > settings.SCHEDULE_MISFIRE_GRACE_SECONDS
    )
    with transaction.atomic():
        # Why: slots of one schedule are decided one at a time, so the overlap
        # check ("is a run of this schedule still active?") cannot race.
        Schedule.objects.select_for_update().filter(pk=schedule.pk).first()
        if ScheduleFire.objects.filter(schedule=schedule, intended_at=slot).exists():
            return None
        if skip_late:
            status, detail = FireStatus.SKIPPED_MISSED, f"Workers reached this slot {late_seconds:.0f} s late."
        else:
            status, detail = _overlap_decision(schedule)
            if missed:
                detail = f"One run for {missed + 1} slots missed since {intended_at:%Y-%m-%d %H:%M:%S} UTC."
        try:
            with transaction.atomic():
                fire = ScheduleFire.objects.create(schedule=schedule, intended_at=slot, status=status, detail=detail)
        except IntegrityError:
            return None  # another process decided this slot first
        if status == FireStatus.STARTED:
            _fire_start(fire=fire)
    log.info(
        "schedule_fired",
        schedule_id=schedule.pk,
        intended_at=slot.isoformat(),
        status=fire.status,
        run_id=str(fire.run_id) if fire.run_id else None,
        late_ms=round(late_seconds * 1000),
    )
    return fire


def _overlap_decision(schedule: Schedule) -> tuple[str, str]:
    if schedule.overlap == OverlapPolicy.ALLOW:
        return FireStatus.STARTED, ""
    active = Run.objects.filter(schedule=schedule).exclude(status__in=RUN_FINISHED).first()
    queued = ScheduleFire.objects.filter(schedule=schedule, status=FireStatus.QUEUED).count()
    if schedule.overlap == OverlapPolicy.SKIP:
        if active:
            return FireStatus.SKIPPED_OVERLAP, f"Run {active.pk} was still {active.status.lower()}."
        return FireStatus.STARTED, ""
    if queued >= MAX_QUEUED_SLOTS:
        return FireStatus.SKIPPED_OVERLAP, f"{queued} slots are already queued."
    if active or queued:
        return FireStatus.QUEUED, f"Waits for run {active.pk}." if active else "Waits for earlier queued slots."
    return FireStatus.STARTED, ""


def _fire_start(*, fire: ScheduleFire) -> None:
    """Start the slot's run in the caller's transaction; a refusal is recorded on the slot.

    The run belongs to the schedule's team (a flow's run to the flow's, which schedule_check made the same).
    """
    schedule = fire.schedule
    common = {"input": schedule.input, "created_by": schedule.created_by, "team": schedule.team}
    try:
        with transaction.atomic():
            if schedule.flow_id:
                run, _ = flow_run_create(version=schedule.flow.current_version, **common)
            else:
                run, _ = run_create(agent_type=schedule.agent_type, **common)
            run.schedule, run.scheduled_for = schedule, fire.intended_at
            run.save(update_fields=["schedule", "scheduled_for"])
    except (ServiceError, InvalidAgentInput) as exc:
        fire.status, fire.detail = FireStatus.FAILED, str(exc)
        fire.save(update_fields=["status", "detail"])
        log.warning("schedule_start_failed", schedule_id=schedule.pk, error=str(exc))
        return
    fire.status, fire.run = FireStatus.STARTED, run
    fire.save(update_fields=["status", "run"])


def schedule_queue_advance() -> int:
    """Start the oldest queued slot of every schedule whose previous run has finished."""
    started = 0
    schedule_ids = set(ScheduleFire.objects.filter(status=FireStatus.QUEUED).values_list("schedule_id", flat=True))
    for schedule_id in sorted(schedule_ids):
        with transaction.atomic():
            # Same lock as schedule_fire: the overlap check and the start are one decision.
            Schedule.objects.select_for_update().filter(pk=schedule_id).first()
            if Run.objects.filter(schedule_id=schedule_id).exclude(status__in=RUN_FINISHED).exists():
                continue
            fire = (
                ScheduleFire.objects.select_related("schedule__flow", "schedule__team")
                .filter(schedule_id=schedule_id, status=FireStatus.QUEUED)
                .order_by("intended_at")
                .first()
            )
            if fire is None:
                continue
            _fire_start(fire=fire)
            started += fire.status == FireStatus.STARTED
    return started


def schedule_fires_purge(*, team_id: int, before: datetime, batch: int) -> int:
    """Delete up to `batch` of the team's schedule fires of slots before `before`, oldest first; return how many.

    A queued fire stays whatever its age: it still waits for its turn. An old slot is never decided again (a
    schedule only ever decides its current slot), so the fire's unique (schedule, slot) row is not needed.
    """
    deleted = 0
    for schedule_id in Schedule.objects.filter(team_id=team_id).order_by("pk").values_list("pk", flat=True):
        old = ScheduleFire.objects.filter(schedule_id=schedule_id, intended_at__lt=before).exclude(
            status=FireStatus.QUEUED
        )
        ids = list(old.order_by("intended_at").values_list("pk", flat=True)[: batch - deleted])
        if ids:
            deleted += old.filter(pk__in=ids).delete()[0]
        if deleted >= batch:
            break
    return deleted
