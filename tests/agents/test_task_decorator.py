"""`@task`: plain functions (sync or async) registered as agent types, run by the engine in one process."""

import uuid

import pytest

from agentrunner.agents import (
    Agent,
    AgentContext,
    ConcurrencyPolicy,
    InvalidAgentInput,
    RetryableAgentError,
    TaskResult,
    get_agent,
    registry,
    task,
)
from runs import engine, services
from runs.models import RunStatus, StepStatus

pytestmark = pytest.mark.django_db


def fetch() -> TaskResult:
    """Fetch data.

    (Only the first line is the description.)
    """
    return TaskResult(status="success", data={"raw_data": "data"})


async def double(payload, context):
    return TaskResult(status="success", data={"doubled": payload["n"] * 2, "step": context.step_name})


def refuses(data) -> TaskResult:
    return TaskResult(status="failure", data={"reason": f"no {data['item']}"})


async def async_refuses() -> TaskResult:
    return TaskResult(status="failure")


def plain_value(data):
    return [data.get("x"), "as returned"]


def crashes():
    raise KeyError("document")


def flaky(context: AgentContext):
    if context.attempt == 1:
        raise RetryableAgentError("try again")
    return {"attempt": context.attempt}


def configured(data):
    return data


# Registered around each test only (`registered`): other tests list every agent type there is.
TASKS = [
    ("test-task-fetch", fetch, {}),
    ("test-task-async-double", double, {}),
    ("test-task-refuses", refuses, {"max_attempts": 3}),
    ("test-task-async-refuses", async_refuses, {}),
    ("test-task-plain-value", plain_value, {}),
    ("test-task-crashes", crashes, {}),
    ("test-task-flaky", flaky, {"max_attempts": 2}),
    (
        "test-task-configured",
        configured,
        {
            "description": "Configured by hand.",
            "input_schema": {"type": "object", "required": ["x"]},
            "concurrency": ConcurrencyPolicy(limit=2),
        },
    ),
]


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setattr(registry, "_AGENTS", dict(registry._AGENTS))
    for name, function, options in TASKS:
        task(name, **options)(function)


def execute(agent_type, **input):
    """Start a run of the agent and execute its step here; return the run and its step."""
    run, _ = services.run_create(agent_type=agent_type, input=input)
    step = run.steps.get()
    engine.step_execute(step_id=step.id)
    run.refresh_from_db()
    step.refresh_from_db()
    return run, step


def test_sync_task__its_data_is_the_output():
    run, _ = execute("test-task-fetch")
    assert (run.status, run.result) == (RunStatus.COMPLETED, {"raw_data": "data"})


def test_async_task__takes_the_input_and_the_context_and_runs_on_the_event_loop():
    assert get_agent("test-task-async-double").is_async() and not get_agent("test-task-fetch").is_async()
    run, step = execute("test-task-async-double", n=21)
    assert run.status == RunStatus.COMPLETED
    assert run.result == {"doubled": 42, "step": step.name}


def test_failure__fails_the_step_at_once_with_the_data_in_the_error():
    run, step = execute("test-task-refuses", item="coffee")
    assert step.max_attempts == 3 and step.attempts == 1  # the function decided: not retried
    assert (run.status, run.error_code) == (RunStatus.FAILED, "task_failed")
    assert run.error == 'Task \'test-task-refuses\' reported failure: {"reason": "no coffee"}.'


def test_async_failure_without_data():
    run, _ = execute("test-task-async-refuses")
    assert (run.status, run.error_code, run.error) == (
        RunStatus.FAILED,
        "task_failed",
        "Task 'test-task-async-refuses' reported failure.",
    )


def test_a_value_that_is_not_a_task_result_is_a_success_with_that_output():
    run, _ = execute("test-task-plain-value", x=1)
    assert (run.status, run.result) == (RunStatus.COMPLETED, [1, "as returned"])


def test_an_exception_is_a_crash_named_as_any_agents_is():
    run, _ = execute("test-task-crashes")
    assert (run.status, run.error_code, run.error) == (RunStatus.FAILED, "agent_crashed", "KeyError: 'document'")


def test_an_agent_error_keeps_its_meaning__retryable_is_retried():
    _, step = execute("test-task-flaky")
    assert (step.status, step.error) == (StepStatus.RETRYING, "try again")


def test_defaults__docstring_description_any_object_no_concurrency_limit_the_sdks_attempts():
    agent = get_agent("test-task-fetch")
    assert agent.description == "Fetch data."
    assert agent.input_schema == {"type": "object"}
    assert agent.concurrency == ConcurrencyPolicy()
    assert agent.max_attempts == Agent.max_attempts
    assert agent.validate_input(None) == {}
    with pytest.raises(InvalidAgentInput):
        agent.validate_input(["not", "an", "object"])


def test_options__description_schema_concurrency_attempts():
    agent = get_agent("test-task-configured")
    assert agent.description == "Configured by hand."
    assert agent.concurrency == ConcurrencyPolicy(limit=2)
    assert get_agent("test-task-refuses").max_attempts == 3
    with pytest.raises(InvalidAgentInput):
        agent.validate_input({})


def test_the_function_is_returned_unchanged():
    assert fetch() == TaskResult(status="success", data={"raw_data": "data"})
    assert get_agent("test-task-fetch").function is fetch


def test_a_signature_it_cannot_call_is_refused_at_once():
    with pytest.raises(TypeError, match="requires a, b"):
        task(f"test-task-{uuid.uuid4()}")(lambda a, b: None)
    with pytest.raises(TypeError, match="requires token"):

        def keyword_only(*, token):
            return token

        task(f"test-task-{uuid.uuid4()}")(keyword_only)


def test_a_name_is_registered_once():
    name = f"test-task-{uuid.uuid4()}"
    task(name)(lambda: None)
    with pytest.raises(ValueError, match="registered twice"):
        task(name)(lambda: None)


def test_task_result_status_is_success_or_failure():
    with pytest.raises(ValueError, match="'success' or 'failure'"):
        TaskResult(status="ok")
