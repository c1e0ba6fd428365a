"""After a step ends: start the run's next step (flows) or end the run.

A single-agent run ends with its only step. A flow run asks its pinned flow
version's conditions for the next task; "end" (or no condition) ends the run,
COMPLETED after a successful step and FAILED after a failed one. The run's
result keeps every step's output (the flow manager's `execution_history`).
"""

from __future__ import annotations

import functools

import structlog
from django.utils import timezone

from agentrunner.agents import BudgetExceededError, InvalidAgentInput, get_agent
from agentrunner.agents.registry import UnknownAgentType
from flows.definition import FlowDefinition, ReferenceNotFound, choose_next, parse_definition, resolve_input
from flows.models import FlowVersion
from runs import slots
from runs.models import RUN_FINISHED, Run, RunStatus, Step, StepStatus
from runs.queueing import step_enqueue

log = structlog.get_logger("agentrunner.engine")

RUN_STATUS_AFTER = {
    StepStatus.SUCCESS: RunStatus.COMPLETED,
    StepStatus.FAILED: RunStatus.FAILED,
    StepStatus.CANCELLED: RunStatus.CANCELLED,
}
MAX_STEPS = "max_steps"
BUDGET_EXCEEDED = BudgetExceededError.code


def definition_of(version_id: int) -> FlowDefinition:
    """The parsed definition of a version, cached per process by content digest (versions are immutable)."""
    digest = FlowVersion.objects.values_list("digest", flat=True).get(pk=version_id)
    return _parsed(digest, version_id)


@functools.lru_cache(maxsize=256)
def _parsed(digest: str, version_id: int) -> FlowDefinition:
    return parse_definition(FlowVersion.objects.values_list("definition", flat=True).get(pk=version_id))


def after_step(*, step: Step, run: Run, now) -> list[str]:
    """With the step locked: start the next step or end the run; return the slot keys freed."""
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
    history = run_history(run=run)
    nxt = choose_next(
        definition,
        step.name,
        status="success" if status == StepStatus.SUCCESS else "failure",
        output=step.output,
        error=step.error,
        run_input=run.input,
        steps=history,
    )
    for problem in nxt.errors:
        log.warning("condition_error", run_id=str(run.id), step=step.name, error=problem)
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
    Run.objects.filter(pk=run.pk).exclude(status__in=RUN_FINISHED).update(
        status=status,
        result=result,
        error=error,
        error_code=error_code,
        finished_at=now or timezone.now(),
        started_at=run.started_at or started_at,
    )
    return slots.slots_free_run(run_id=run.pk)
