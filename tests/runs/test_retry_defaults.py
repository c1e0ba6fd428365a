"""Retries unless an agent or a flow task says otherwise: 5 attempts, after 2, 4, 8 and 16 s (the platform's)."""

import pytest
from django.db import connection
from django.utils import timezone

from agentrunner.agents import RetryableAgentError
from flows import services as flow_services
from runs import engine, services
from runs.models import Run, RunStatus, Step, StepStatus
from tests.flows.factories import chain

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["fastpath", "orm"])
def engine_variant(request, settings):
    if request.param == "fastpath" and connection.vendor != "postgresql":
        pytest.skip("the fast path is PostgreSQL's")
    settings.ENGINE_FASTPATH = request.param == "fastpath"


def always_down(self, context):
    raise RetryableAgentError("upstream down")


def retry_delays(step: Step) -> list[int]:
    """Run the step until it ends; the delays (s) before each retry it was given."""
    delays = []
    while True:
        before = timezone.now()
        engine.step_execute(step_id=step.pk)
        step.refresh_from_db()
        if step.status != StepStatus.RETRYING:
            return delays
        delays.append(round((step.next_attempt_at - before).total_seconds()))
        Step.objects.filter(pk=step.pk).update(next_attempt_at=timezone.now())
        assert engine.steps_retry_due() == 1


def test_an_agent_that_says_nothing__retried_after_2_4_8_16_s_then_fails(monkeypatch):
    monkeypatch.setattr("agentrunner.agents.builtin.passthrough.PassAgent.run", always_down)
    run, _ = services.run_create(agent_type="pass", input={})
    step = run.steps.get()
    assert retry_delays(step) == [2, 4, 8, 16]
    assert (step.status, step.attempts, step.attempt_set.count()) == (StepStatus.FAILED, 5, 5)
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "retryable_error")


def test_an_agents_own_settings_are_kept(monkeypatch):
    monkeypatch.setattr("tests.fake_agents.FlakyAgent.run", always_down)
    run, _ = services.run_create(agent_type="test-flaky", input={})  # max_attempts = 3, backoff_seconds = 1
    assert retry_delays(run.steps.get()) == [1, 2]


def test_a_flow_task_retries_as_its_agent_unless_the_task_says_otherwise(monkeypatch):
    monkeypatch.setattr("agentrunner.agents.builtin.passthrough.PassAgent.run", always_down)
    default = chain(("a", "pass", {}))
    own = chain(("a", "pass", {}))
    own["tasks"][0]["retry"] = {"max_attempts": 2, "backoff_seconds": 3}
    delays = []
    for definition in (default, own):
        version = flow_services.inline_version(definition=definition)
        run, _ = services.flow_run_create(version=version, input={})
        delays.append(retry_delays(run.steps.get()))
        assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED
    assert delays == [[2, 4, 8, 16], [3]]
