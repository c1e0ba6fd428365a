"""Runs, steps, attempts and slots for the admin tests: rows only, no worker."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from agentrunner.teams.services import team_or_default
from runs.models import (
    AttemptStatus,
    ConcurrencyKey,
    Run,
    RunStatus,
    Slot,
    Step,
    StepAttempt,
    StepStatus,
)
from tests.flows.factories import chain, flow

STEP_FOR_RUN = {
    RunStatus.PENDING: StepStatus.QUEUED,
    RunStatus.RUNNING: StepStatus.RUNNING,
    RunStatus.COMPLETED: StepStatus.SUCCESS,
    RunStatus.FAILED: StepStatus.FAILED,
    RunStatus.CANCELLED: StepStatus.CANCELLED,
    RunStatus.BUDGET_EXCEEDED: StepStatus.FAILED,
}
ATTEMPT_FOR_RUN = {
    RunStatus.RUNNING: AttemptStatus.RUNNING,
    RunStatus.COMPLETED: AttemptStatus.SUCCESS,
    RunStatus.FAILED: AttemptStatus.FAILED,
    RunStatus.CANCELLED: AttemptStatus.CANCELLED,
    RunStatus.BUDGET_EXCEEDED: AttemptStatus.FAILED,
}
WAIT_KEY = "agent:wait"


def make_run(status=RunStatus.PENDING, *, agent_type="wait", step_status=None, created_by=None, team=None, **fields):
    """A run with one step and, once started, one attempt, in `team` (the default team if None)."""
    now = timezone.now()
    started = now - timedelta(seconds=5) if status != RunStatus.PENDING else None
    finished = now if status in (set(RunStatus) - {RunStatus.PENDING, RunStatus.RUNNING}) else None
    run = Run.objects.create(
        agent_type=agent_type,
        status=status,
        input=fields.pop("input", {"seconds": 1}),
        created_by=created_by,
        started_at=started,
        finished_at=finished,
        team=team_or_default(team),
        **fields,
    )
    step = Step.objects.create(
        run=run,
        name=agent_type,
        agent_type=agent_type,
        status=step_status or STEP_FOR_RUN[status],
        input=run.input,
        max_attempts=2,
        attempts=1 if started else 0,
        queued_at=now,
    )
    if started:
        StepAttempt.objects.create(
            step=step,
            number=1,
            status=ATTEMPT_FOR_RUN[status],
            worker_id="w1",
            started_at=started,
            finished_at=finished,
        )
    return run


def hold_slot(run: Run, *, key: str = WAIT_KEY, limit: int = 1) -> Slot:
    """`run` holds the next free slot of `key` (created with `limit` slots if new)."""
    concurrency_key, _ = ConcurrencyKey.objects.get_or_create(key=key, defaults={"limit": limit})
    return Slot.objects.create(
        key=concurrency_key,
        number=concurrency_key.slots.count(),
        run=run,
        step=run.steps.first(),
        holder="host:1:2",
        expires_at=timezone.now() + timedelta(seconds=30),
    )


def make_waiting_run(*, holder_run=None, key: str = WAIT_KEY):
    """A run whose step waits for a slot of `key`; `holder_run`, if given, takes the key's single slot."""
    if holder_run is not None:
        hold_slot(holder_run, key=key)
    run = make_run(RunStatus.PENDING, step_status=StepStatus.WAITING)
    run.steps.update(concurrency_key=key)
    return run


def add_steps(run: Run, count: int, *, attempts: int = 2, first_sequence: int = 1) -> None:
    """`count` more steps, each tried `attempts` times: every attempt but the last failed with an error."""
    t0 = timezone.now() - timedelta(minutes=30)
    for i in range(count):
        sequence = first_sequence + i
        step = Step.objects.create(
            run=run,
            sequence=sequence,
            name=f"step-{sequence}",
            agent_type="pass",
            status=StepStatus.SUCCESS,
            max_attempts=attempts,
            attempts=attempts,
        )
        for number in range(1, attempts + 1):
            started = t0 + timedelta(seconds=10 * sequence + 3 * number)
            last = number == attempts
            StepAttempt.objects.create(
                step=step,
                number=number,
                status=AttemptStatus.SUCCESS if last else AttemptStatus.FAILED,
                worker_id=f"worker-{number}",
                started_at=started,
                finished_at=started + timedelta(seconds=2),
                error="" if last else f"<b>boom</b> {number}",
                error_code="" if last else "retryable_error",
            )


def make_flow_run(*, slug: str, steps: int = 2, **fields) -> Run:
    """A finished run of a new two-task flow, with `steps` steps (as if its tasks looped)."""
    version = flow(slug=slug, definition=chain(("a", "pass", {}), ("b", "pass", {}))).current_version
    now = timezone.now()
    fields["team"] = team_or_default(fields.get("team"))
    run = Run.objects.create(
        agent_type="",
        flow_version=version,
        status=RunStatus.COMPLETED,
        started_at=now - timedelta(minutes=1),
        finished_at=now,
        **fields,
    )
    add_steps(run, steps, attempts=1, first_sequence=0)
    return run


def add_admin_rows(count: int, *, prefix: str) -> None:
    """`count` of every kind of run the admin lists: retried multi-step runs with users and re-runs, a run
    holding a slot and one waiting for it, flow runs of different flows."""
    User = get_user_model()
    for i in range(count):
        user = User.objects.create_user(username=f"{prefix}-{i}")
        failed = make_run(
            RunStatus.FAILED, created_by=user, user_id=uuid.uuid4(), error="Boom", error_code="retryable_error"
        )
        add_steps(failed, 2)
        make_run(RunStatus.COMPLETED, rerun_of=failed, created_by=user)
        holder = make_run(RunStatus.RUNNING)
        key = f"agent:{prefix}-{i}"
        hold_slot(holder, key=key)
        make_waiting_run(key=key)
        make_flow_run(slug=f"{prefix}-flow-{i}")
