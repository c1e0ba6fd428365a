"""Executing a step: claim it, run its agent outside any transaction, finish by compare-and-set.

A sync agent runs in the thread that took the message (a django-q2 worker's main thread). An async
agent (`async def run`) runs on the worker process's event loop (`runs.engine.runtime`), up to
ASYNC_STEPS_PER_WORKER at once; the message's task returns as soon as the step is claimed and handed
to the loop. Either way the same watch heartbeats the lease, notices cancel requests and enforces
`timeout_seconds`, and the same `step_finish` records the outcome.

Outside a worker process (tests, one-off commands) there is no runtime: the step runs to its end in
the calling thread, an async agent through `async_to_sync`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import structlog
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import ValidationError

from agentrunner.agents import Agent, AgentContext, AgentError, AsyncAgentContext, RateLimitedError, get_agent
from agentrunner.agents.registry import UnknownAgentType
from agentrunner.validators import validate_storable_json
from runs.engine import runtime
from runs.engine.claim import step_claim, worker_identity
from runs.engine.finish import Claim, step_finish, step_release

log = structlog.get_logger("agentrunner.engine")

TIMEOUT = "timeout"
CANCELLED = "cancelled"
LEASE_LOST = "lease_lost"
SHUTDOWN = "shutdown"
INTERRUPTED = "worker_interrupted"
# An async agent told to stop (cancel, timeout) that has not stopped after this long is left behind:
# its step is finished without it (it swallowed the CancelledError).
STOP_GRACE_SECONDS = 5.0


@dataclass(eq=False)
class Execution:
    """One attempt of a step in this process: its claim, agent, context, and why it was told to stop."""

    claim: Claim
    agent: Agent
    context: AgentContext
    log: object
    log_context: dict  # bound for every line logged while the attempt runs and is recorded (the agent's own too)
    deadline: float | None  # time.monotonic() after which the attempt times out
    last_beat: float = field(default_factory=time.monotonic)
    stop_reason: str | None = None  # TIMEOUT, CANCELLED, LEASE_LOST or SHUTDOWN once told to stop
    stopped_at: float | None = None
    task: asyncio.Task | None = None  # an async agent's task
    abandoned: asyncio.Future | None = None  # resolved by the watch when a stopped agent outstays its grace

    @property
    def run_id(self):
        return self.claim.run.pk

    def stop(self, reason: str) -> bool:
        """Tell the agent to stop (first reason wins); True if this call stopped it."""
        if self.stop_reason is not None:
            return False
        self.stop_reason, self.stopped_at = reason, time.monotonic()
        self.context.request_cancel()
        if self.task is not None:
            self.task.cancel()
        return True

    def outstayed_grace(self, now: float) -> bool:
        """An async agent told to stop that is still running STOP_GRACE_SECONDS later."""
        return (
            self.stopped_at is not None
            and self.task is not None
            and not self.task.done()
            and now - self.stopped_at >= STOP_GRACE_SECONDS
        )


def step_execute(*, step_id: int) -> None:
    """Claim the step and run its agent: here (sync), on this process's event loop (async), or inline."""
    worker = runtime.current()
    if worker is not None:
        worker.reserve(step_id)  # backpressure: waits while the event loop is full
    try:
        claim = step_claim(step_id=step_id, worker_id=worker_identity())
    except BaseException:
        if worker is not None:
            worker.unreserve()
        raise
    if claim is None:
        if worker is not None:
            worker.unreserve()
        log.info("step_claim_skipped", step_id=step_id)
        return
    try:
        agent = get_agent(claim.step.agent_type)
    except UnknownAgentType as exc:
        if worker is not None:
            worker.unreserve()
        step_finish(claim=claim, error=error_info(exc, code="unknown_agent", retryable=False))
        return
    execution = execution_new(claim, agent)
    if agent.is_async():
        if worker is not None:
            worker.submit(execution)  # the reservation is released when the step ends
        else:
            async_to_sync(runtime.run_inline)(execution)
        return
    if worker is not None:
        worker.unreserve()
    runtime.run_sync(execution, worker)


def execution_new(claim: Claim, agent: Agent) -> Execution:
    run, step = claim.run, claim.step
    # The id of the API request that started the run: the request's own log lines carry it too.
    log_context = {"request_id": run.request_id} if run.request_id else {}
    bound = log.bind(
        run_id=str(run.id),
        agent_type=step.agent_type,
        user_id=str(run.user_id) if run.user_id else None,
        step=step.name,
        attempt=claim.attempt,
    )
    context_class = AsyncAgentContext if agent.is_async() else AgentContext
    context = context_class(
        run_id=run.id,
        step_name=step.name,
        attempt=claim.attempt,
        input=step.input,
        user_id=run.user_id,
        log=bound,
        step_id=step.pk,
        owner_id=run.created_by_id,
        team_id=run.team_id,
        token_budget=run.token_budget,
    )
    timeout = step.timeout_seconds
    return Execution(
        claim=claim,
        agent=agent,
        context=context,
        log=bound,
        log_context=log_context,
        deadline=time.monotonic() + timeout if timeout else None,
    )


def run_agent_sync(execution: Execution):
    """Run a sync agent in this thread; return (output, error)."""
    with structlog.contextvars.bound_contextvars(**execution.log_context):
        execution.log.info("agent_start")
        started = time.monotonic()
        try:
            output, raised = execution.agent.run(execution.context), None
        except Exception as exc:  # an agent's bug must fail its step, not the worker
            output, raised = None, exc
        return outcome(execution, output, raised, started)


async def run_agent_async(execution: Execution):
    """Run an async agent in its own task (the watch cancels that task); return (output, error)."""
    # Bound in this coroutine's task only (each step has its own); the agent's task inherits a copy.
    with structlog.contextvars.bound_contextvars(**execution.log_context):
        return await _run_agent_async(execution)


async def _run_agent_async(execution: Execution):
    execution.log.info("agent_start")
    started = time.monotonic()
    execution.abandoned = asyncio.get_running_loop().create_future()
    execution.task = asyncio.ensure_future(execution.agent.run(execution.context))
    if execution.stop_reason is not None:  # told to stop before the task existed
        execution.task.cancel()
    output, raised = None, None
    try:
        # The watch resolves `abandoned` when a stopped agent has not ended within STOP_GRACE_SECONDS.
        await asyncio.wait({execution.task, execution.abandoned}, return_when=asyncio.FIRST_COMPLETED)
        if execution.task.done():
            output = execution.task.result()
        else:
            execution.log.warning("agent_ignored_cancel", grace_seconds=STOP_GRACE_SECONDS)
            raised = asyncio.CancelledError()  # recorded as stopped, as if it had obeyed
    except asyncio.CancelledError as exc:
        if execution.stop_reason is None or not execution.task.cancelled():
            raise  # not the agent's task: this coroutine itself is being cancelled
        raised = exc
    except Exception as exc:  # an agent's bug must fail its step, not the worker
        raised = exc
    return outcome(execution, output, raised, started)


def outcome(execution: Execution, output, raised: BaseException | None, started: float):
    """Map what an attempt returned or raised to (output, error), as `step_finish` takes them."""
    error = None
    if execution.stop_reason == TIMEOUT:  # whatever the agent returned or raised once told to stop
        output = None
        error = {
            "message": f"Timed out: the attempt ran longer than its timeout of "
            f"{execution.claim.step.timeout_seconds:g} s.",
            "code": TIMEOUT,
            "retryable": True,
        }
    elif execution.stop_reason is not None and (
        isinstance(raised, asyncio.CancelledError) or (raised is None and execution.stop_reason != SHUTDOWN)
    ):
        # (An agent that ends by itself while its worker shuts down keeps its result.)
        output = None
        error = {"message": f"Stopped ({execution.stop_reason}).", "code": execution.stop_reason, "retryable": False}
    elif isinstance(raised, AgentError):
        error = error_info(raised, code=raised.code, retryable=raised.retryable)
        if getattr(raised, "retry_after", None):  # e.g. an HTTP 429/503 Retry-After
            error["retry_after"] = float(raised.retry_after)
        if isinstance(raised, RateLimitedError):  # our own limit: wait for it, without using up an attempt
            error["deferred"] = True
    elif raised is not None:
        error = error_info(raised, code="agent_crashed", retryable=False)
    else:
        try:  # stored as JSON: refuse what cannot be (PostgreSQL refuses NaN, NUL and lone surrogates too)
            json.dumps(output, allow_nan=False)
            validate_storable_json(output)
        except ValidationError as exc:
            unstorable = ValueError(f"The output cannot be stored. {exc.messages[0]}")
            output, error = None, error_info(unstorable, code="output_not_json", retryable=False)
        except (TypeError, ValueError) as exc:
            output, error = None, error_info(exc, code="output_not_json", retryable=False)
    elapsed_ms = round((time.monotonic() - started) * 1000)
    if error and error["code"] == CANCELLED:
        execution.log.info("agent_cancelled", duration_ms=elapsed_ms)
    elif error:
        # A crash (an exception that is not an AgentError) is a bug in the agent: its traceback goes with it.
        crashed = raised if error["code"] == "agent_crashed" else None
        execution.log.warning(
            "agent_error", error=error["message"], code=error["code"], duration_ms=elapsed_ms, exc_info=crashed
        )
    else:
        execution.log.info("agent_complete", duration_ms=elapsed_ms)
    return output, error


def record(execution: Execution, output, error) -> bool:
    """Finish the attempt, or hand it back to the queue if it was stopped because the worker is shutting down."""
    # The engine's lines for the step (step_retry_scheduled, step_handed_back, flow_next_step...) carry it too.
    with structlog.contextvars.bound_contextvars(**execution.log_context):
        if error is not None and error["code"] == SHUTDOWN:
            return step_release(
                claim=execution.claim,
                reason=f"Handed back: the worker stopped before the attempt ended "
                f"(it had {settings.ASYNC_DRAIN_SECONDS:g} s to finish).",
            )
        return step_finish(claim=execution.claim, output=output, error=error)


def error_info(exc: BaseException, *, code: str, retryable: bool) -> dict:
    message = str(exc) or exc.__class__.__name__
    if code == "agent_crashed":
        message = f"{exc.__class__.__name__}: {message}"
    return {"message": message[:4000], "code": code, "retryable": retryable}
