"""Async agents run by the engine in one process (inline: the step runs to its end in the calling thread)."""

import asyncio
import contextlib
import time

import pytest

from agentrunner.agents import AsyncAgentContext, get_agent
from runs import engine, services
from runs.engine import execute
from runs.models import AttemptStatus, RunStatus, Step, StepStatus

pytestmark = pytest.mark.django_db


def start(agent_type, **input):
    run, _ = services.run_create(agent_type=agent_type, input=input)
    return run, run.steps.get()


def test_async_agent__runs_and_completes():
    assert get_agent("wait").is_async() and not get_agent("pass").is_async()
    run, step = start("wait", seconds=0.05)
    engine.step_execute(step_id=step.id)
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED
    assert run.result["completed"] is True and run.result["waited_seconds"] >= 0.05


def test_async_agent__timeout_seconds_is_enforced_per_step():
    run, step = start("wait", seconds=30)
    Step.objects.filter(pk=step.pk).update(timeout_seconds=0.4, max_attempts=1)  # a timeout is retryable
    started = time.monotonic()
    engine.step_execute(step_id=step.id)
    assert time.monotonic() - started < 15  # not the 30 s the agent asked for
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "timeout")
    assert "timeout of 0.4 s" in run.error
    assert step.attempt_set.get().status == AttemptStatus.FAILED


def test_async_agent__retryable_error_is_retried_later():
    run, step = start("test-async-flaky", succeed_on=2)
    engine.step_execute(step_id=step.id)
    step.refresh_from_db()
    assert step.status == StepStatus.RETRYING and step.error == "attempt 1 failed on purpose"


def test_async_agent__a_bug_fails_its_step_with_the_exception_named(monkeypatch):
    async def broken(self, context):
        await asyncio.sleep(0)
        raise KeyError("document")

    monkeypatch.setattr("tests.fake_agents.AsyncFlakyAgent.run", broken)
    run, step = start("test-async-flaky")
    engine.step_execute(step_id=step.id)
    run.refresh_from_db()
    assert (run.status, run.error_code, run.error) == (RunStatus.FAILED, "agent_crashed", "KeyError: 'document'")


def test_async_agent__that_swallows_cancellation_is_left_behind_after_the_grace(monkeypatch):
    async def stubborn(self, context):
        with contextlib.suppress(asyncio.CancelledError):  # a badly written agent: it swallows the stop
            await asyncio.sleep(10)
        await asyncio.sleep(10)  # (stopped by the loop's shutdown at the end of the test)

    monkeypatch.setattr("tests.fake_agents.AsyncFlakyAgent.run", stubborn)
    monkeypatch.setattr(execute, "STOP_GRACE_SECONDS", 0.3)
    run, step = start("test-async-flaky")
    Step.objects.filter(pk=step.pk).update(timeout_seconds=0.3, max_attempts=1)
    started = time.monotonic()
    engine.step_execute(step_id=step.id)
    assert time.monotonic() - started < 5
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "timeout")


def test_async_context_sleep__wakes_at_once_on_cancel():
    async def scenario():
        context = AsyncAgentContext(run_id=None, step_name="s", attempt=1, input={})
        asyncio.get_running_loop().call_later(0.05, context.request_cancel)
        started = time.monotonic()
        completed = await context.sleep(30)
        return completed, time.monotonic() - started, context.cancelled

    completed, elapsed, cancelled = asyncio.run(scenario())
    assert (completed, cancelled) == (False, True) and elapsed < 10  # not the 30 s


def test_an_attempt_stopped_by_its_workers_shutdown_is_handed_back_not_counted():
    run, step = start("wait", seconds=30)
    claim = engine.step_claim(step_id=step.id, worker_id="w1")
    execution = execute.execution_new(claim, get_agent("wait"))
    execution.stop_reason = execute.SHUTDOWN

    output, error = execute.outcome(execution, None, asyncio.CancelledError(), time.monotonic())
    assert execute.record(execution, output, error)

    step.refresh_from_db()
    # The attempt it had is given back: one more than the agent's (`wait`: the default).
    assert (step.status, step.attempts, step.max_attempts) == (StepStatus.QUEUED, 1, get_agent("wait").max_attempts + 1)
    attempt = step.attempt_set.get()
    assert (attempt.status, attempt.error_code) == (AttemptStatus.CANCELLED, "worker_shutdown")
    assert engine.step_claim(step_id=step.id, worker_id="w2").attempt == 2  # another worker takes it


def test_an_agent_that_ends_by_itself_as_its_worker_shuts_down_keeps_its_result():
    run, step = start("wait", seconds=0)
    claim = engine.step_claim(step_id=step.id, worker_id="w1")
    execution = execute.execution_new(claim, get_agent("wait"))
    execution.stop_reason = execute.SHUTDOWN  # the drain's deadline came as it returned

    output, error = execute.outcome(execution, {"completed": True}, None, time.monotonic())
    assert error is None
    execute.record(execution, output, error)

    run.refresh_from_db()
    assert (run.status, run.result) == (RunStatus.COMPLETED, {"completed": True})
