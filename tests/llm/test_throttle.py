"""The team's LLM request limit in the gateway: every provider try counts one; a try over it is not sent."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections
from django.utils import timezone

from agentrunner import ratelimit
from agentrunner.agents.base import AsyncAgentContext, RateLimitedError, RetryableAgentError
from agentrunner.agents.builtin.document_extractor import DocumentExtractorAgent
from agentrunner.llm import Completion, LLMGatewayError, LLMRateLimited, acomplete, complete
from agentrunner.llm.breaker import Admission, breaker_admit
from agentrunner.llm.throttle import request_admit, team_request_limit
from agentrunner.models import BreakerState, LLMCall, LLMReservation, ProviderBreaker
from tests.agentrunner.test_ratelimit import REDIS_URL, redis_or_skip
from tests.conftest import team_named
from tests.llm.conftest import context_for, events, new_run
from tests.llm.fake_providers import ok, status

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "Say hello."}]


def ask(context):
    return complete(messages=HELLO, max_tokens=50, context=context)


@pytest.fixture(params=["database", "redis"])
def store(request, settings, monkeypatch):
    """Where the limit is counted: the database, or Redis under keys of this test's own (tests share Redis)."""
    if request.param == "database":
        settings.REDIS_URL = ""
        yield
        return
    client = redis_or_skip()
    url = REDIS_URL
    prefix = f"agentrunner:test-{uuid.uuid4().hex[:12]}:"
    monkeypatch.setattr(ratelimit, "REDIS_PREFIX", prefix)
    settings.REDIS_URL = url
    yield
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def limited_team(per_minute: int | None, slug: str = "claims"):
    team = team_named(slug)
    team.llm_requests_per_minute = per_minute
    team.save()
    return team


def test_team_request_limit__a_request_over_it_is_not_sent_and_waits(openai_server, make_context, caplog, store):
    caplog.set_level("INFO")
    team = limited_team(2)
    context = make_context(team=team, token_budget=1000)

    ask(context)
    ask(context)
    with pytest.raises(LLMRateLimited) as caught:
        ask(context)

    refused = caught.value
    assert openai_server.count == 2
    assert refused.key == f"llm-requests:team:{team.pk}" and refused.limit == 2
    assert 1 <= refused.retry_after <= 60
    assert str(refused) == (
        f"The LLM request limit of team claims (2 per 60 s) is reached: the step waits {refused.retry_after} s "
        "and tries again."
    )
    assert LLMCall.objects.count() == 2  # nothing was sent, nothing is recorded
    assert not LLMReservation.objects.exists()  # its reservation was given back
    (logged,) = events(caplog, "rate_limited")
    assert (logged["team"], logged["key"], logged["limit"]) == ("claims", refused.key, 2)
    assert logged["retry_after"] == refused.retry_after and logged["team_id"] == team.pk


def test_team_request_limit__waiting_for_it_is_retryable_and_not_a_gateway_failure():
    """The engine defers the step (no attempt used); a caller that falls back on gateway failures does not."""
    assert issubclass(LLMRateLimited, RateLimitedError) and issubclass(LLMRateLimited, RetryableAgentError)
    assert not issubclass(LLMRateLimited, LLMGatewayError)


def test_team_request_limit__every_provider_try_counts_one(openai_server, llm_settings, make_context):
    llm_settings.LLM_MAX_RETRIES = 2
    openai_server.push(status(500))  # the first try fails; the retry is the team's second request
    context = make_context(team=limited_team(2))

    ask(context)
    with pytest.raises(LLMRateLimited):
        ask(context)

    assert openai_server.count == 2


def test_team_request_limit__a_retry_over_it_is_not_sent(openai_server, llm_settings, make_context):
    llm_settings.LLM_MAX_RETRIES = 2
    openai_server.default = status(500)
    context = make_context(team=limited_team(2))

    with pytest.raises(LLMRateLimited):  # tries 1 and 2 fail; try 3 is over the limit
        ask(context)

    assert openai_server.count == 2


def test_team_request_limit__failing_over_counts_the_next_providers_try(openai_server, anthropic_server, make_context):
    openai_server.default = status(400)  # rejected: fail over at once
    context = make_context(team=limited_team(1))

    with pytest.raises(LLMRateLimited):
        ask(context)

    assert (openai_server.count, anthropic_server.count) == (1, 0)


def test_team_request_limit__the_setting_is_the_default(openai_server, llm_settings, make_context):
    llm_settings.LLM_REQUESTS_PER_TEAM_PER_MINUTE = 1
    context = make_context(team=limited_team(None))

    ask(context)
    with pytest.raises(LLMRateLimited, match=r"\(1 per 60 s\)"):
        ask(context)


def test_team_request_limit__zero_means_none(openai_server, llm_settings, make_context):
    llm_settings.LLM_REQUESTS_PER_TEAM_PER_MINUTE = 1
    context = make_context(team=limited_team(0))

    for _ in range(3):
        ask(context)

    assert openai_server.count == 3


def test_team_request_limit__a_request_without_a_team_has_none(openai_server, llm_settings, make_context):
    llm_settings.LLM_REQUESTS_PER_TEAM_PER_MINUTE = 1
    context = make_context()
    context.team_id = None

    for _ in range(3):
        ask(context)

    assert team_request_limit(team_id=None).limit == 0


def test_team_request_limit__another_teams_requests_do_not_count(openai_server, make_context):
    ours, theirs = make_context(team=limited_team(1)), make_context(team=limited_team(1, "other"))

    ask(ours)
    ask(theirs)

    with pytest.raises(LLMRateLimited):
        ask(ours)


def test_team_request_limit__a_window_of_its_own_when_shortened(openai_server, llm_settings, make_context):
    llm_settings.LLM_REQUESTS_WINDOW_SECONDS = 5
    context = make_context(team=limited_team(1))

    ask(context)
    with pytest.raises(LLMRateLimited, match=r"\(1 per 5 s\)") as caught:
        ask(context)

    assert 1 <= caught.value.retry_after <= 5


def test_team_request_limit__a_half_open_providers_probe_is_left_to_another_caller(
    openai_server, anthropic_server, make_context
):
    team = limited_team(1)
    request_admit(limit=team_request_limit(team_id=team.pk))  # the minute's one request, made elsewhere
    ProviderBreaker.objects.create(
        provider="openai", state=BreakerState.OPEN, opened_at=timezone.now() - timedelta(seconds=31)
    )  # past LLM_BREAKER_RESET_SECONDS: the next caller makes the test call

    with pytest.raises(LLMRateLimited):  # admitted to make the test call, then over the limit: nothing sent
        ask(make_context(team=team))

    row = ProviderBreaker.objects.get(provider="openai")
    assert (row.state, row.probe_started_at) == (BreakerState.HALF_OPEN, None)
    assert breaker_admit(provider="openai").admission == Admission.PROBE  # another caller may make it
    assert openai_server.count == anthropic_server.count == 0


@pytest.mark.django_db(transaction=True)
def test_team_request_limit__concurrent_async_requests_send_exactly_the_limit(
    openai_server, llm_settings, owner, store
):
    openai_server.default = ok(latency=0.1)
    llm_settings.LLM_TIMEOUT_SECONDS = 10
    run = new_run(agent_type="llm", created_by=owner, team=limited_team(5))

    async def ask_all():
        try:
            return await asyncio.gather(
                *(
                    acomplete(messages=HELLO, max_tokens=50, context=context_for(run, AsyncAgentContext))
                    for _ in range(20)
                ),
                return_exceptions=True,
            )
        finally:
            await sync_to_async(connections.close_all)()

    results = async_to_sync(ask_all)()

    assert sum(isinstance(r, Completion) for r in results) == 5
    assert sum(isinstance(r, LLMRateLimited) for r in results) == 15
    assert openai_server.count == 5


def test_document_extractor_llm__waits_for_the_team_limit_instead_of_falling_back(openai_server, make_context):
    agent = DocumentExtractorAgent()
    data = agent.validate_input({"text": "Policy Number: PL-1", "mode": "llm"})
    context = make_context(team=limited_team(1), input=data, asynchronous=True)
    ask(context)

    with pytest.raises(LLMRateLimited):
        async_to_sync(agent.run)(context)

    assert openai_server.count == 1
