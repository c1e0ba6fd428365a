"""When an attempt ends: record it, then retry the step, or end it and route the run on (or end the run).

`step_finish` is the guarded finish of a worker's attempt (RUNNING, this attempt, this worker); the
reaper and cancel end steps through `attempt_outcome` and `step_end` too, so every way out of a step
is here. After a step ends, a single-agent run ends with it; a flow run asks its pinned flow version's
conditions for the next task; "end" (or no condition) ends the run, COMPLETED after a successful step
and FAILED after a failed one. The run's result keeps every step's output (`execution_history`).
An attempt refused by a rate limit of our own (an agent's RateLimitedError, e.g. a team's LLM requests
per minute) is no failure: the step waits for the limit without using up one of its attempts.

Lock order: the step row (held by the caller), then concurrency key rows (when the next step queues).
Slots are freed by deleting the holder's rows; waiters are woken after commit (`slots_pump_on_commit`).

A flow's conditions are user code (CEL, with an evaluation budget): a worker's finish evaluates them
before its transaction (`route_ahead`), so no row is locked meanwhile. Only rarer ends (the reaper,
a next task whose input cannot be resolved) evaluate them inside, still within the budget.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import timedelta

import structlog
from django.db import transaction
from django.utils import timezone

from agentrunner.agents import BudgetExceededError, InvalidAgentInput, get_agent
from agentrunner.agents.registry import UnknownAgentType
from flows.definition import (
    FAILURE,
    SUCCESS,
    FlowDefinition,
    NextStep,
    ReferenceNotFound,
    choose_next,
    parse_definition,
    resolve_input,
)
from flows.models import FlowVersion
from runs.engine import fastpath, slots
from runs.engine.queue import slots_pump_on_commit, start_deadline, step_enqueue, steps_dispatch_on_commit
from runs.engine.steps import step_lock, step_move
from runs.models import RUN_FINISHED, AttemptStatus, Run, RunStatus, Slot, Step, StepAttempt, StepStatus

log = structlog.get_logger("agentrunner.engine")

RUN_STATUS_AFTER = {
    StepStatus.SUCCESS: RunStatus.COMPLETED,
    StepStatus.FAILED: RunStatus.FAILED,
    StepStatus.CANCELLED: RunStatus.CANCELLED,
}
MAX_STEPS = "max_steps"
CONDITION_TOO_COSTLY = "condition_too_costly"
BUDGET_EXCEEDED = BudgetExceededError.code
WORKER_SHUTDOWN = "worker_shutdown"


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one attempt of a step: what its finish is guarded by."""

    step: Step
    run: Run
    attempt: int
    worker_id: str

    @property
    def guard(self) -> dict:
        return {"attempts": self.attempt, "worker_id": self.worker_id}


# --- an attempt ends ------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Where a flow goes after one of its steps ends with `status`, decided before the finishing transaction."""

    sequence: int
    status: str
    next: NextStep


def route_ahead(*, claim: Claim, output, error: dict | None) -> Route | None:
    """If this attempt will end a flow step, evaluate the flow's conditions now, outside any transaction."""
    step, run = claim.step, claim.run
    if not run.flow_version_id or run.cancel_requested_at:
        return None
    if error is not None and (
        (error["retryable"] and step.attempts < step.max_attempts)
        or error.get("deferred")
        or error["code"] == BUDGET_EXCEEDED
    ):
        return None  # a retry (or a wait for a rate limit), or a budget stop: no routing
    status = StepStatus.SUCCESS if error is None else StepStatus.FAILED
    if error is None:
        output = json.loads(json.dumps(output))  # as the database will give it back (string keys)
    # The history as it will read once this step is stored (its earlier steps are finished and unchanging).
    history = run_history(run=run)
    history[step.name] = {"status": SUCCESS if error is None else FAILURE, "output": output if error is None else None}
    nxt = choose_next(
        definition_of(run.flow_version_id),
        step.name,
        status=SUCCESS if error is None else FAILURE,
        output=output,
        error=error["message"] if error else "",
        run_input=run.input,
        steps=history,
    )
    return Route(sequence=step.sequence, status=status, next=nxt)


def step_finish(*, claim: Claim, output=None, error: dict | None = None) -> bool:
    """Record the outcome of an attempt; False if the step was already moved (lease lost, reaped)."""
    if error is None and not claim.step.concurrency_key and fastpath.enabled():
        # The same transition in one statement for a slot-less single-agent step (None: not that case).
        done = fastpath.finish_success(
            step_id=claim.step.pk, attempt=claim.attempt, worker_id=claim.worker_id, output=output, now=timezone.now()
        )
        if done:
            return True
    route = route_ahead(claim=claim, output=output, error=error)
    with transaction.atomic():
        step = step_lock(claim.step.pk)
        if (
            step is None
            or step.status != StepStatus.RUNNING
            or step.attempts != claim.attempt
            or step.worker_id != claim.worker_id
        ):
            log.warning("step_finish_discarded", step_id=claim.step.pk, attempt=claim.attempt)
            return False
        attempt_outcome(step=step, run=step.run, output=output, error=error, now=timezone.now(), route=route)
    return True


def attempt_outcome(*, step: Step, run: Run, output, error: dict | None, now, route: Route | None = None) -> None:
    """With the RUNNING step locked: close the attempt and move step and run on (retry, finish)."""
    cancelled = run.cancel_requested_at is not None
    attempt_status = AttemptStatus.CANCELLED if cancelled else AttemptStatus.FAILED if error else AttemptStatus.SUCCESS
    StepAttempt.objects.filter(step=step, number=step.attempts).update(
        status=attempt_status,
        finished_at=now,
        error=(error or {}).get("message", ""),
        error_code=(error or {}).get("code", ""),
    )
    if cancelled:
        step_end(step=step, run=run, status=StepStatus.CANCELLED, now=now)
    elif error is None:
        step_end(step=step, run=run, status=StepStatus.SUCCESS, now=now, output=output, route=route)
    elif error.get("deferred"):
        _step_defer(step=step, error=error, now=now)
    elif error["retryable"] and step.attempts < step.max_attempts:
        _step_retry_later(step=step, error=error, now=now)
    else:
        message, code = error["message"], error["code"]
        step_end(step=step, run=run, status=StepStatus.FAILED, now=now, error=message, code=code, route=route)


def _step_retry_later(*, step: Step, error: dict, now) -> None:
    delay = min(step.backoff_seconds * 2 ** (step.attempts - 1), step.max_backoff_seconds)
    # A server that says when to come back is believed, within the step's longest backoff.
    delay = max(delay, min(error.get("retry_after") or 0, step.max_backoff_seconds))
    _step_wait(step=step, error=error, now=now, delay=delay)


def _step_defer(*, step: Step, error: dict, now) -> None:
    """Wait for a rate limit of our own (RateLimitedError) to let the step through; the wait is not an attempt.

    The limit says when a request fits again, so that is when the step comes back (not the step's backoff,
    which may be shorter: a try before then would be refused again). As when a worker hands a step back,
    `max_attempts` grows by one: a busy team's steps wait for their turn however often, and never fail for it.
    """
    delay = float(error.get("retry_after") or step.backoff_seconds)
    _step_wait(step=step, error=error, now=now, delay=delay, event="step_deferred", max_attempts=step.max_attempts + 1)


def _step_wait(*, step: Step, error: dict, now, delay: float, event: str = "step_retry_scheduled", **fields) -> None:
    step_move(
        step,
        from_status=StepStatus.RUNNING,
        status=StepStatus.RETRYING,
        error=error["message"],
        error_code=error["code"],
        next_attempt_at=now + timedelta(seconds=delay),
        worker_id="",
        lease_expires_at=None,
        **fields,
    )
    # An agent slot is not held while waiting to retry: the retry queues for it again.
    # (A flow slot belongs to the run and stays with it.)
    slots_pump_on_commit(slots.slots_free_step(step_id=step.pk))
    log.info(event, step_id=step.pk, delay_seconds=delay, error=error["message"])


def step_end(
    *, step: Step, run: Run, status: str, now, output=None, error: str = "", code: str = "", route: Route | None = None
) -> None:
    """With the step locked: finish it, free its slot, and start the run's next step or end the run."""
    fields = {"status": status, "finished_at": now, "lease_expires_at": None}
    if status == StepStatus.SUCCESS:
        fields["output"] = output
    if error or code:
        fields.update(error=error, error_code=code)
    step_move(step, from_status=step.status, **fields)
    freed = slots.slots_free_step(step_id=step.pk)
    freed += after_step(step=step, run=run, now=now, route=route)
    slots_pump_on_commit(freed)


def step_release(*, claim: Claim, reason: str) -> bool:
    """Hand a running attempt back to the queue (the worker is shutting down); False if it was moved already.

    The attempt is recorded as cancelled with `reason`; it does not use up one of the step's attempts.
    An agent slot stays with the step, its expiry back to a start deadline, so the limit and the FIFO
    order hold while another worker picks the step up.
    """
    with transaction.atomic():
        step = step_lock(claim.step.pk)
        if step is None or not step_move(
            step,
            from_status=StepStatus.RUNNING,
            guard=claim.guard,
            required=False,
            status=StepStatus.QUEUED,
            worker_id="",
            lease_expires_at=None,
            max_attempts=step.max_attempts + 1,
            dispatched_at=timezone.now(),
        ):
            return False
        StepAttempt.objects.filter(step=step, number=claim.attempt).update(
            status=AttemptStatus.CANCELLED, finished_at=timezone.now(), error=reason, error_code=WORKER_SHUTDOWN
        )
        Slot.objects.filter(step=step).update(holder="", heartbeat_at=None, expires_at=start_deadline())
        steps_dispatch_on_commit([step.pk])
    log.info("step_handed_back", step_id=step.pk, attempt=claim.attempt, reason=reason)
    return True


# --- flow routing and the end of a run ---------------------------------------------


def definition_of(version_id: int) -> FlowDefinition:
    """The parsed definition of a version, cached per process by content digest (versions are immutable)."""
    digest = FlowVersion.objects.values_list("digest", flat=True).get(pk=version_id)
    return _parsed(digest, version_id)


@functools.lru_cache(maxsize=256)
def _parsed(digest: str, version_id: int) -> FlowDefinition:
    return parse_definition(FlowVersion.objects.values_list("definition", flat=True).get(pk=version_id))


def after_step(*, step: Step, run: Run, now, route: Route | None = None) -> list[str]:
    """With the step locked: start the next step or end the run; return the slot keys freed.

    `route`, if it was decided for this step ending this way, is used instead of evaluating the conditions here.
    """
    status = step.status
    if status == StepStatus.FAILED and step.error_code == BUDGET_EXCEEDED:
        # A budget is not a branch to route around: the run stops here.
        return run_end(
            run=run,
            status=RunStatus.BUDGET_EXCEEDED,
            result=flow_result(run=run) if run.flow_version_id else None,
            error=step.error,
            error_code=step.error_code,
            now=now,
            started_at=step.started_at,
        )
    if run.flow_version_id is None or status == StepStatus.CANCELLED or run.cancel_requested_at:
        run_status = RunStatus.CANCELLED if run.cancel_requested_at else RUN_STATUS_AFTER[status]
        if run.flow_version_id:
            result = flow_result(run=run)  # what the flow did before it was cancelled
        else:
            result = step.output if run_status == RunStatus.COMPLETED else None
        return run_end(
            run=run,
            status=run_status,
            result=result,
            error=step.error if run_status == RunStatus.FAILED else "",
            error_code=step.error_code if run_status == RunStatus.FAILED else "",
            now=now,
            started_at=step.started_at,
        )
    definition = definition_of(run.flow_version_id)
    if route is not None and route.sequence == step.sequence and route.status == status:
        nxt = route.next
    else:
        nxt = choose_next(
            definition,
            step.name,
            status=SUCCESS if status == StepStatus.SUCCESS else FAILURE,
            output=step.output,
            error=step.error,
            run_input=run.input,
            steps=run_history(run=run),
        )
    for problem in nxt.errors:
        log.warning("condition_error", run_id=str(run.id), step=step.name, error=problem)
    if nxt.too_costly:
        log.warning("condition_too_costly", run_id=str(run.id), step=step.name, error=nxt.too_costly)
        return run_end(
            run=run,
            status=RunStatus.FAILED,
            result=flow_result(run=run),
            error=f"The flow stopped: {nxt.too_costly}. Simplify the condition.",
            error_code=CONDITION_TOO_COSTLY,
            now=now,
            started_at=step.started_at,
        )
    if nxt.task is None:
        failed = status != StepStatus.SUCCESS
        return run_end(
            run=run,
            status=RunStatus.FAILED if failed else RunStatus.COMPLETED,
            result=flow_result(run=run),
            error=step.error if failed else "",
            error_code=step.error_code if failed else "",
            now=now,
            started_at=step.started_at,
        )
    if step.sequence + 1 >= definition.max_steps:
        return run_end(
            run=run,
            status=RunStatus.FAILED,
            result=flow_result(run=run),
            error=f"Stopped after {definition.max_steps} steps (the flow's max_steps): is it looping?",
            error_code=MAX_STEPS,
            now=now,
        )
    log.info("flow_next_step", run_id=str(run.id), step=step.name, next=nxt.task, condition=nxt.condition)
    return step_start_task(run=run, definition=definition, task_name=nxt.task, sequence=step.sequence + 1, now=now)


def step_start_task(*, run: Run, definition: FlowDefinition, task_name: str, sequence: int, now) -> list[str]:
    """Create the step for a task, with its input resolved, and queue it; a bad input fails the step at once."""
    task = definition.tasks[task_name]
    step = Step(
        run=run,
        sequence=sequence,
        name=task.name,
        agent_type=task.agent,
        max_attempts=task.retry.max_attempts,
        backoff_seconds=task.retry.backoff_seconds,
        max_backoff_seconds=task.retry.max_backoff_seconds,
        timeout_seconds=task.timeout_seconds,
        queued_at=now,
    )
    try:
        step.input = resolve_input(task.input, run_input=run.input, steps=run_history(run=run))
        step.input = get_agent(task.agent).validate_input(step.input)
    except (ReferenceNotFound, InvalidAgentInput, UnknownAgentType) as exc:
        step.status, step.error, step.finished_at = StepStatus.FAILED, str(exc), now
        step.error_code = getattr(exc, "code", "invalid_input")
        step.save()
        log.warning("step_input_error", run_id=str(run.id), step=step.name, error=str(exc))
        return after_step(step=step, run=run, now=now)  # a failure may be routed on by a condition
    step.save()
    step_enqueue(step=step, run=run)
    return []


def run_history(*, run: Run) -> dict:
    """The latest execution of each task so far: {task: {"status": "success"|"failure", "output": ...}}."""
    history = {}
    for name, status, output in (
        run.steps.filter(status__in=[StepStatus.SUCCESS, StepStatus.FAILED])
        .order_by("sequence")
        .values_list("name", "status", "output")
    ):
        history[name] = {"status": "success" if status == StepStatus.SUCCESS else "failure", "output": output}
    return history


def flow_result(*, run: Run) -> dict:
    """The flow's output (its last step's) and every step's, flow-manager style."""
    steps = list(
        run.steps.filter(status__in=[StepStatus.SUCCESS, StepStatus.FAILED])
        .order_by("sequence")
        .values("name", "status", "output", "error")
    )
    history = {
        s["name"]: {
            "status": "success" if s["status"] == StepStatus.SUCCESS else "failure",
            "data": s["output"] if s["status"] == StepStatus.SUCCESS else {"error": s["error"]},
        }
        for s in steps
    }
    return {
        "output": steps[-1]["output"] if steps else None,
        "execution_history": history,
        "path": [s["name"] for s in steps],
    }


def run_end(*, run: Run, status: str, result, error: str, error_code: str, now, started_at=None) -> list[str]:
    """End the run (guarded: a finished run stays as it is) and free every slot it holds."""
    if status == RunStatus.CANCELLED:
        error = "Cancelled."
    ended = (
        Run.objects.filter(pk=run.pk)
        .exclude(status__in=RUN_FINISHED)
        .update(
            status=status,
            result=result,
            error=error,
            error_code=error_code,
            finished_at=now or timezone.now(),
            started_at=run.started_at or started_at,
        )
    )
    if not ended:  # e.g. a cancel ended it while its last step was still being recorded
        log.info("run_end_skipped", run_id=str(run.pk), status=status)
    return slots.slots_free_run(run_id=run.pk)
