"""The `llm` agent run by the engine: a refused budget ends the run BUDGET_EXCEEDED, an answer completes it."""

import pytest

from agentrunner.models import LLMCall, LLMOutcome
from runs import engine, services
from runs.models import Run, RunStatus
from tests.llm.fake_providers import ok

pytestmark = pytest.mark.django_db


def execute(run: Run) -> Run:
    engine.step_execute(step_id=run.steps.get().id)
    run.refresh_from_db()
    return run


def test_llm_run__completes_with_the_answer_and_its_calls_charged_to_the_run(openai_server, owner):
    openai_server.push(ok("42", prompt_tokens=30, completion_tokens=2))
    run, _ = services.run_create(agent_type="llm", input={"prompt": "Answer?"}, created_by=owner, token_budget=1000)

    run = execute(run)

    assert run.status == RunStatus.COMPLETED
    assert run.result["text"] == "42" and run.result["usage"]["total_tokens"] == 32
    call = LLMCall.objects.get()
    assert (call.run_id, call.step_id, call.owner_id) == (run.pk, run.steps.get().pk, owner.pk)


def test_llm_run__over_its_token_budget_ends_budget_exceeded(openai_server, owner):
    run, _ = services.run_create(
        agent_type="llm", input={"prompt": "Answer?", "max_tokens": 100}, created_by=owner, token_budget=50
    )

    run = execute(run)

    assert run.status == RunStatus.BUDGET_EXCEEDED
    assert "token budget" in run.steps.get().error
    assert openai_server.count == 0
    assert LLMCall.objects.get().outcome == LLMOutcome.REFUSED_BUDGET
