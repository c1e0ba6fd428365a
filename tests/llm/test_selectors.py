"""run_metrics, owner_usage and breaker_states: JSON-ready figures for the API, health check and admin."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agentrunner.llm import breaker_states, owner_usage, team_usage
from agentrunner.models import BreakerState, LLMCall, LLMOutcome, OwnerBudget, ProviderBreaker
from runs.models import AttemptStatus, Step, StepAttempt
from runs.selectors import run_metrics
from tests.conftest import team_named
from tests.llm.conftest import new_run

pytestmark = pytest.mark.django_db

LLM_KEYS = {
    "calls",
    "failed_calls",
    "refused_calls",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "llm_latency_ms",
}


def call(
    *, run=None, step=None, owner=None, team=None, outcome=LLMOutcome.SUCCESS, prompt=0, completion=0, cost="0", ms=0
):
    return LLMCall.objects.create(
        run=run,
        step=step,
        owner=owner,
        team=team,
        request_id=uuid.uuid4(),
        provider="openai",
        model="gpt-test",
        outcome=outcome,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=Decimal(cost),
        latency_ms=ms,
    )


def attempt(step, number, seconds, status=AttemptStatus.SUCCESS):
    started = timezone.now() - timedelta(seconds=60)
    StepAttempt.objects.create(
        step=step,
        number=number,
        status=status,
        started_at=started,
        finished_at=started + timedelta(seconds=seconds) if seconds is not None else None,
    )


def test_run_metrics__per_step_and_total(owner):
    run = new_run(agent_type="", created_by=owner)
    extract = Step.objects.create(run=run, sequence=0, name="extract", agent_type="document-extractor")
    summarise = Step.objects.create(run=run, sequence=1, name="summarise", agent_type="llm")
    attempt(extract, 1, 1.5, AttemptStatus.FAILED)
    attempt(extract, 2, 2.25)
    attempt(summarise, 1, None, AttemptStatus.RUNNING)
    call(run=run, step=extract, outcome=LLMOutcome.ERROR, ms=30)
    call(run=run, step=extract, prompt=100, completion=20, cost="0.00014", ms=200)
    call(run=run, step=summarise, prompt=50, completion=50, cost="0.0001", ms=100)
    call(run=run, step=summarise, outcome=LLMOutcome.REFUSED_BUDGET)
    call(run=run, step=None, prompt=1, completion=1, cost="0.00000003", ms=5)  # no step: in the total only
    call(run=new_run(agent_type="llm"), prompt=999)  # another run

    with CaptureQueriesContext(connection) as queries:
        metrics = run_metrics(run)

    assert len(queries) <= 3
    json.dumps(metrics)
    assert metrics["run_id"] == str(run.pk)
    assert metrics["total"] == {
        "calls": 4,
        "failed_calls": 1,
        "refused_calls": 1,
        "prompt_tokens": 151,
        "completion_tokens": 71,
        "total_tokens": 222,
        "cost_usd": "0.00024003",
        "llm_latency_ms": 335,
        "duration_ms": 3750,
    }
    first, second = metrics["steps"]
    assert set(first) == LLM_KEYS | {"step_id", "name", "sequence", "agent_type", "status", "duration_ms", "attempts"}
    assert (first["name"], first["calls"], first["failed_calls"], first["total_tokens"]) == ("extract", 2, 1, 120)
    assert first["cost_usd"] == "0.00014000" and first["llm_latency_ms"] == 230
    assert first["duration_ms"] == 3750
    assert first["attempts"] == [
        {"number": 1, "status": "FAILED", "duration_ms": 1500},
        {"number": 2, "status": "SUCCESS", "duration_ms": 2250},
    ]
    assert (second["name"], second["calls"], second["refused_calls"], second["total_tokens"]) == (
        "summarise",
        1,
        1,
        100,
    )
    assert second["duration_ms"] == 0
    assert second["attempts"] == [{"number": 1, "status": "RUNNING", "duration_ms": None}]


def test_run_metrics__of_a_run_without_llm_calls_is_all_zero():
    run = new_run(agent_type="pass")
    Step.objects.create(run=run, name="pass", agent_type="pass")

    metrics = run_metrics(run)

    assert metrics["total"]["calls"] == 0 and metrics["total"]["cost_usd"] == "0.00000000"
    assert metrics["steps"][0]["total_tokens"] == 0


def test_owner_usage__counts_the_month_against_the_limit(owner, outsider, llm_settings):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 1000
    now = timezone.now()
    call(owner=owner, prompt=200, completion=50, cost="0.001")
    call(owner=owner, outcome=LLMOutcome.ERROR)
    old = call(owner=owner, prompt=10_000)
    LLMCall.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=40))
    call(owner=outsider, prompt=10_000)

    usage = owner_usage(owner)

    json.dumps(usage)
    assert usage["month"] == now.astimezone(UTC).strftime("%Y-%m")
    assert (usage["limit"], usage["limit_source"]) == (1000, "default")
    assert (usage["used_tokens"], usage["remaining_tokens"], usage["used_ratio"]) == (250, 750, 0.25)
    assert (usage["calls"], usage["failed_calls"], usage["cost_usd"]) == (2, 1, "0.00100000")
    assert owner_usage(owner, now - timedelta(days=40))["used_tokens"] == 10_000


def test_owner_usage__with_a_users_own_unlimited_budget(owner, llm_settings):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 1000
    OwnerBudget.objects.create(user=owner, monthly_token_limit=0)

    usage = owner_usage(owner.pk, datetime(2020, 2, 10, tzinfo=UTC))

    assert usage["month"] == "2020-02"
    assert (usage["limit"], usage["limit_source"], usage["remaining_tokens"], usage["used_ratio"]) == (
        0,
        "user",
        None,
        None,
    )


def test_team_usage__counts_every_members_calls_this_month_against_the_teams_limit(owner, outsider, llm_settings):
    llm_settings.TEAM_MONTHLY_TOKEN_BUDGET = 1000
    team, other = team_named("claims"), team_named("other")
    now = timezone.now()
    call(owner=owner, team=team, prompt=200, completion=50, cost="0.001")
    call(owner=outsider, team=team, prompt=100)
    old = call(owner=owner, team=team, prompt=10_000)
    LLMCall.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=40))
    call(owner=owner, team=other, prompt=10_000)

    usage = team_usage(team)

    json.dumps(usage)
    assert (usage["team_id"], usage["month"]) == (team.pk, now.astimezone(UTC).strftime("%Y-%m"))
    assert (usage["limit"], usage["limit_source"]) == (1000, "default")
    assert (usage["used_tokens"], usage["remaining_tokens"], usage["used_ratio"]) == (350, 650, 0.35)
    assert (usage["calls"], usage["cost_usd"]) == (2, "0.00100000")
    team.monthly_token_limit = 0
    team.save()
    unlimited = team_usage(team.pk)
    assert (unlimited["limit"], unlimited["limit_source"], unlimited["remaining_tokens"]) == (0, "team", None)


def test_breaker_states__lists_configured_providers_in_order_then_others(openai_server, local_server, llm_settings):
    opened = timezone.now() - timedelta(seconds=10)
    ProviderBreaker.objects.create(provider="local", state=BreakerState.OPEN, opened_at=opened, consecutive_failures=5)
    ProviderBreaker.objects.create(provider="anthropic", consecutive_failures=1)

    states = breaker_states()

    json.dumps(states)
    assert [(s["provider"], s["configured"], s["state"]) for s in states] == [
        ("openai", True, "closed"),
        ("local", True, "open"),
        ("anthropic", False, "closed"),
    ]
    local = states[1]
    assert local["consecutive_failures"] == 5
    assert local["opened_at"] == opened.isoformat()
    assert local["probe_due_at"] == (opened + timedelta(seconds=30)).isoformat()
