"""The `llm` agent run by the engine: a refused budget ends the run BUDGET_EXCEEDED, an answer completes it, the
team's request limit makes its step wait without using up an attempt."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agentrunner.models import LLMCall, LLMOutcome
from runs import engine, services
from runs.engine.recovery import steps_retry_due
from runs.models import AttemptStatus, Run, RunStatus, StepAttempt, StepStatus
from tests.conftest import join, team_named
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
    assert (call.run_id, call.step_id, call.owner_id, call.team_id) == (
        run.pk,
        run.steps.get().pk,
        owner.pk,
        run.team_id,
    )


def test_llm_run__over_its_token_budget_ends_budget_exceeded(openai_server, owner):
    run, _ = services.run_create(
        agent_type="llm", input={"prompt": "Answer?", "max_tokens": 100}, created_by=owner, token_budget=50
    )

    run = execute(run)

    assert run.status == RunStatus.BUDGET_EXCEEDED
    assert "token budget" in run.steps.get().error
    assert openai_server.count == 0
    assert LLMCall.objects.get().outcome == LLMOutcome.REFUSED_BUDGET


# --- Teams: the monthly budget and the LLM request limit -----------------------------------------------


def llm_run(user, team) -> Run:
    run, _ = services.run_create(agent_type="llm", input={"prompt": "Answer?"}, created_by=user, team=team)
    return run


def test_team_budget__stops_all_of_its_users_llm_calls_and_no_other_teams(openai_server, django_user_model):
    team_a, team_b = team_named("team-a"), team_named("team-b")
    ann, bob, cat = (django_user_model.objects.create_user(username=name) for name in ("ann", "bob", "cat"))
    join(ann, team=team_a)
    join(bob, team=team_a)
    join(cat, team=team_b)
    team_a.monthly_token_limit = team_b.monthly_token_limit = 1000
    team_a.save()
    team_b.save()
    openai_server.default = ok("42", prompt_tokens=990, completion_tokens=10)
    assert execute(llm_run(ann, team_a)).status == RunStatus.COMPLETED  # team A's budget: now used up

    refused = [execute(llm_run(user, team_a)) for user in (ann, bob)]
    answered = execute(llm_run(cat, team_b))

    assert [run.status for run in refused] == [RunStatus.BUDGET_EXCEEDED] * 2
    for run in refused:
        assert "monthly token budget of team team-a (1,000 tokens in" in run.error
    assert answered.status == RunStatus.COMPLETED
    assert openai_server.count == 2  # the refused calls were never sent
    assert set(LLMCall.objects.values_list("team__slug", "outcome")) == {
        ("team-a", LLMOutcome.SUCCESS),
        ("team-a", LLMOutcome.REFUSED_BUDGET),
        ("team-b", LLMOutcome.SUCCESS),
    }


def test_team_request_limit__a_step_over_it_waits_and_never_uses_up_its_attempts(openai_server, owner):
    team = team_named("claims")
    join(owner, team=team)
    team.llm_requests_per_minute = 1
    team.save()
    assert execute(llm_run(owner, team)).status == RunStatus.COMPLETED  # the minute's one request
    run = llm_run(owner, team)
    step = run.steps.get()
    max_attempts = step.max_attempts  # 3 for the llm agent

    for deferral in range(1, max_attempts + 3):  # waits more often than the step has attempts
        before = timezone.now()
        assert execute(run).status == RunStatus.RUNNING
        step.refresh_from_db()
        assert (step.status, step.error_code) == (StepStatus.RETRYING, "llm_rate_limited")
        assert (step.attempts, step.max_attempts) == (deferral, max_attempts + deferral)
        assert "LLM request limit of team claims (1 per 60 s)" in step.error
        # It comes back when the team's minute has room again, not after its own (shorter) backoff.
        assert before + timedelta(seconds=step.backoff_seconds) < step.next_attempt_at
        assert step.next_attempt_at <= before + timedelta(seconds=61)
        assert steps_retry_due(now=step.next_attempt_at) == 1

    team.llm_requests_per_minute = 0  # the limit lifted: the next try is sent
    team.save()
    run = execute(run)

    assert run.status == RunStatus.COMPLETED
    assert openai_server.count == 2
    attempts = list(StepAttempt.objects.filter(step=step).order_by("number").values_list("status", "error_code"))
    assert attempts == [(AttemptStatus.FAILED, "llm_rate_limited")] * (max_attempts + 2) + [(AttemptStatus.SUCCESS, "")]


def test_team_request_limit__each_team_has_its_own(openai_server, owner, outsider):
    team, other = team_named("claims"), team_named("other")
    join(owner, team=team)
    for each in (team, other):
        each.llm_requests_per_minute = 1
        each.save()

    assert execute(llm_run(owner, team)).status == RunStatus.COMPLETED
    assert execute(llm_run(owner, team)).steps.get().status == StepStatus.RETRYING
    assert execute(llm_run(outsider, other)).status == RunStatus.COMPLETED
