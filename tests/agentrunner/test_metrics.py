"""GET /metrics: the exposition parsed back, its values checked against the rows made here; its access rules."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agentrunner import metrics
from agentrunner.models import LLMCall, LLMOutcome, OwnerBudget, ProviderBreaker
from agentrunner.teams.services import team_default
from runs.models import RUN_FINISHED, Run, RunStatus, Step, StepStatus
from tests.conftest import client_for, team_named

pytestmark = pytest.mark.django_db


def scrape(client=None, **headers) -> dict:
    """{(sample name, frozenset of labels): value} of one scrape."""
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(response.content.decode())


def samples(text: str) -> dict:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped, name, **labels):
    return scraped.get((name, frozenset(labels.items())))


def finished_run(agent_type, status, seconds, *, team=None, created_ago=0.0):
    now = timezone.now()
    run = Run.objects.create(agent_type=agent_type, status=status, team=team or team_default())
    Run.objects.filter(pk=run.pk).update(
        created_at=now - timedelta(seconds=created_ago + seconds),
        started_at=now - timedelta(seconds=created_ago + seconds),
        finished_at=now - timedelta(seconds=created_ago),
    )
    return run


def step(run, status, agent_type, **fields):
    return Step.objects.create(run=run, name="s", agent_type=agent_type, status=status, **fields)


def llm_call(provider, model, outcome, *, prompt=0, completion=0, cost="0", ms=0, team=None, owner=None):
    return LLMCall.objects.create(
        request_id=uuid.uuid4(),
        provider=provider,
        model=model,
        outcome=outcome,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=Decimal(cost),
        latency_ms=ms,
        team=team,
        owner=owner,
    )


def test_finished_states_agree_with_runs_models():
    assert set(metrics.RUN_FINISHED) == set(RUN_FINISHED)
    assert (metrics.STEP_QUEUED, metrics.STEP_WAITING, metrics.STEP_RUNNING) == (
        StepStatus.QUEUED,
        StepStatus.WAITING,
        StepStatus.RUNNING,
    )


def test_runs_counted_by_agent_and_final_status__unfinished_runs_not_counted():
    for seconds in (0.2, 0.7, 3.0):
        finished_run("echo", RunStatus.COMPLETED, seconds)
    finished_run("echo", RunStatus.FAILED, 20.0)
    finished_run("wait", RunStatus.COMPLETED, 0.01, team=team_named("other"))
    Run.objects.create(agent_type="echo", status=RunStatus.RUNNING, team=team_default())

    scraped = scrape()

    assert value(scraped, "agent_runs_total", agent="echo", status="COMPLETED") == 3
    assert value(scraped, "agent_runs_total", agent="echo", status="FAILED") == 1
    assert value(scraped, "agent_runs_total", agent="wait", status="COMPLETED") == 1
    assert value(scraped, "agent_runs_total", agent="echo", status="RUNNING") is None


def test_run_duration_histogram__buckets_counted_from_start_and_end():
    for seconds in (0.2, 0.7, 3.0):
        finished_run("echo", RunStatus.COMPLETED, seconds)

    scraped = scrape()

    bucket = lambda le: value(scraped, "agent_run_duration_seconds_bucket", agent="echo", status="COMPLETED", le=le)  # noqa: E731
    assert bucket("0.1") == 0
    assert bucket("0.25") == 1
    assert bucket("1.0") == 2
    assert bucket("5.0") == 3
    assert bucket("+Inf") == 3
    assert value(scraped, "agent_run_duration_seconds_count", agent="echo", status="COMPLETED") == 3
    assert value(scraped, "agent_run_duration_seconds_sum", agent="echo", status="COMPLETED") == pytest.approx(3.9)


def test_duration_histograms_cover_only_the_window(settings):
    settings.METRICS_WINDOW_SECONDS = 60
    finished_run("echo", RunStatus.COMPLETED, 1.0)
    finished_run("echo", RunStatus.COMPLETED, 1.0, created_ago=120)

    scraped = scrape()

    assert value(scraped, "agent_runs_total", agent="echo", status="COMPLETED") == 2  # the counter: every run
    assert value(scraped, "agent_run_duration_seconds_count", agent="echo", status="COMPLETED") == 1


def test_flow_runs_are_labelled_by_flow():
    finished_run("", RunStatus.COMPLETED, 1.0)  # no flow version: an inline flow's run, as far as labels go

    scraped = scrape()

    assert value(scraped, "agent_runs_total", agent="flow:inline", status="COMPLETED") == 1


def test_step_durations_queue_depth_in_flight_and_lag():
    now = timezone.now()
    run = finished_run("echo", RunStatus.COMPLETED, 2.0)
    step(run, StepStatus.SUCCESS, "echo", started_at=now - timedelta(seconds=2), finished_at=now)
    active = Run.objects.create(agent_type="echo", status=RunStatus.RUNNING, team=team_default())
    for sequence, (status, fields) in enumerate(
        [
            (StepStatus.QUEUED, {"dispatched_at": now - timedelta(seconds=7)}),
            (StepStatus.QUEUED, {"dispatched_at": now - timedelta(seconds=2)}),
            (StepStatus.WAITING, {"queued_at": now}),
            (StepStatus.RUNNING, {"lease_expires_at": now + timedelta(seconds=30)}),
        ]
    ):
        Step.objects.create(run=active, sequence=sequence, name="s", agent_type="echo", status=status, **fields)

    scraped = scrape()

    assert value(scraped, "agent_step_duration_seconds_count", agent="echo") == 1
    assert value(scraped, "agent_step_duration_seconds_bucket", agent="echo", le="2.5") == 1
    assert value(scraped, "agent_step_duration_seconds_bucket", agent="echo", le="1.0") == 0
    assert value(scraped, "agent_queue_depth", agent="echo", state="queued") == 2
    assert value(scraped, "agent_queue_depth", agent="echo", state="waiting") == 1
    assert value(scraped, "agent_steps_in_flight", agent="echo") == 1
    assert 7 <= value(scraped, "agent_queue_lag_seconds") < 30


def test_queue_lag_is_zero_with_nothing_queued():
    assert value(scrape(), "agent_queue_lag_seconds") == 0


def test_llm_requests_tokens_cost_and_latency():
    llm_call("openai", "gpt-test", LLMOutcome.SUCCESS, prompt=100, completion=20, cost="0.5", ms=300)
    llm_call("openai", "gpt-test", LLMOutcome.SUCCESS, prompt=50, completion=5, cost="0.25", ms=1500)
    llm_call("openai", "gpt-test", LLMOutcome.ERROR, ms=4000)
    llm_call("anthropic", "claude-test", LLMOutcome.BREAKER_OPEN)
    llm_call("", "", LLMOutcome.REFUSED_BUDGET)

    scraped = scrape()

    assert value(scraped, "llm_requests_total", provider="openai", model="gpt-test", outcome="success") == 2
    assert value(scraped, "llm_requests_total", provider="openai", model="gpt-test", outcome="error") == 1
    assert value(scraped, "llm_requests_total", provider="anthropic", model="claude-test", outcome="breaker_open") == 1
    assert value(scraped, "llm_requests_total", provider="gateway", model="", outcome="refused_budget") == 1
    assert value(scraped, "llm_tokens_total", provider="openai", kind="prompt") == 150
    assert value(scraped, "llm_tokens_total", provider="openai", kind="completion") == 25
    assert value(scraped, "llm_cost_usd_total", provider="openai") == pytest.approx(0.75)
    # Only calls sent to a provider have a latency.
    assert value(scraped, "llm_request_duration_seconds_count", provider="openai") == 3
    assert value(scraped, "llm_request_duration_seconds_bucket", provider="openai", le="0.5") == 1
    assert value(scraped, "llm_request_duration_seconds_bucket", provider="openai", le="2.5") == 2
    assert value(scraped, "llm_request_duration_seconds_sum", provider="openai") == pytest.approx(5.8)
    assert value(scraped, "llm_request_duration_seconds_count", provider="anthropic") is None


def test_breaker_states_as_numbers():
    ProviderBreaker.objects.create(provider="openai", state="open", opened_at=timezone.now())
    ProviderBreaker.objects.create(provider="anthropic", state="half_open")
    ProviderBreaker.objects.create(provider="local", state="closed")

    scraped = scrape()

    assert value(scraped, "llm_circuit_breaker_state", provider="openai") == 2
    assert value(scraped, "llm_circuit_breaker_state", provider="anthropic") == 1
    assert value(scraped, "llm_circuit_breaker_state", provider="local") == 0


def test_budget_ratio_of_the_most_used_team_and_owner(settings, django_user_model):
    settings.TEAM_MONTHLY_TOKEN_BUDGET = 1000
    settings.LLM_MONTHLY_TOKEN_BUDGET = 0  # owners unlimited unless they have their own limit
    busy, quiet = team_named("busy"), team_named("quiet")
    quiet.monthly_token_limit = 100
    quiet.save()
    limited = django_user_model.objects.create_user(username="limited")
    OwnerBudget.objects.create(user=limited, monthly_token_limit=400)
    free = django_user_model.objects.create_user(username="free")
    llm_call("openai", "gpt-test", LLMOutcome.SUCCESS, prompt=500, team=busy, owner=free)
    llm_call("openai", "gpt-test", LLMOutcome.SUCCESS, prompt=80, team=quiet, owner=limited)

    scraped = scrape()

    assert value(scraped, "llm_budget_used_ratio", scope="team") == pytest.approx(0.8)  # quiet: 80 of 100
    assert value(scraped, "llm_budget_used_ratio", scope="owner") == pytest.approx(0.2)  # limited: 80 of 400


def test_budget_ratio_is_zero_without_limits():
    llm_call("openai", "gpt-test", LLMOutcome.SUCCESS, prompt=500, team=team_default())
    scraped = scrape()
    assert value(scraped, "llm_budget_used_ratio", scope="team") == 0
    assert value(scraped, "llm_budget_used_ratio", scope="owner") == 0


def test_workers_alive_without_clusters_is_zero():
    assert value(scrape(), "workers_alive") == 0


def views(scraped) -> set[str]:
    return {dict(labels)["view"] for name, labels in scraped if name == "http_requests_total"}


def test_http_requests_labelled_by_url_name_never_by_path():
    client = Client()
    before = scrape(client)
    health = client.get("/api/v1/health").status_code  # 503: no worker runs
    client.get(f"/api/v1/runs/{uuid.uuid4()}")  # 401: no credentials; labelled by the pattern, not the id
    client.get("/no/such/path/123")

    scraped = scrape(client)

    def grew(name, **labels):
        return (value(scraped, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert grew("http_requests_total", view="health", status=str(health)) == 1
    assert grew("http_request_duration_seconds_count", view="health") == 1
    assert grew("http_requests_total", view="metrics", status="200") == 1  # the first scrape
    assert grew("http_requests_total", view=metrics.NO_VIEW, status="404") == 1
    assert sum(grew("http_requests_total", view=view, status="401") for view in views(scraped)) == 1
    assert not any("/" in view for view in views(scraped))


# --- access ---


def test_without_token_loopback_clients_are_served_others_refused(settings):
    settings.METRICS_TOKEN = ""
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="10.0.0.7").get("/metrics").status_code == 403


def test_with_token_the_bearer_token_is_required_from_everywhere(settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert Client(REMOTE_ADDR="10.0.0.7").get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    loopback = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert loopback.status_code == 401
    assert loopback["WWW-Authenticate"].startswith("Bearer")
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401


def test_a_team_members_api_token_does_not_open_metrics(settings, owner, superuser):
    # /metrics is the operator's (every team's runs, added up): no team role or API token opens it.
    settings.METRICS_TOKEN = "s3cret-token"
    assert client_for(owner).get("/metrics").status_code == 401
    assert client_for(superuser).get("/metrics").status_code == 401


def test_only_get(settings):
    settings.METRICS_TOKEN = ""
    assert Client().post("/metrics").status_code == 405
