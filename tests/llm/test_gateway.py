"""complete() and acomplete(): failover, retries and their timing, accounting; real SDKs against fake providers.

Most tests go through `complete()`, the sync bridge to the one implementation, `acomplete()`; those about
what only an event loop has (concurrent requests, a cancelled task) call `acomplete()` under
`async_to_sync`, so that its database work comes back to the test's thread and transaction.
"""

import asyncio
import email.utils
import threading
import time
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync

from agentrunner.agents.base import NonRetryableAgentError, RetryableAgentError
from agentrunner.llm import (
    LLMInvalidRequest,
    LLMNotConfigured,
    LLMRequestRejected,
    LLMUnavailable,
    acomplete,
    complete,
    cost_usd,
)
from agentrunner.llm.providers import OPENAI as OPENAI_KIND
from agentrunner.llm.providers import Provider, configured_providers, model_for, new_client, retry_after_seconds
from agentrunner.models import LLMCall, LLMOutcome, LLMReservation
from tests.llm.conftest import events
from tests.llm.fake_providers import hang, malformed, ok, rate_limited, status

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "Say hello."}]


def ask(context, **options):
    return complete(messages=options.pop("messages", HELLO), context=context, **options)


def outcomes() -> list[tuple[str, str, int]]:
    return list(LLMCall.objects.order_by("id").values_list("provider", "outcome", "attempt"))


def gaps(server) -> list[float]:
    times = [r.at for r in server.requests]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_complete__answer_is_returned_and_recorded_with_tokens_and_cost(openai_server, context):
    openai_server.push(ok("Hello!", prompt_tokens=1000, completion_tokens=500))

    completion = ask(context, max_tokens=50)

    assert completion.text == "Hello!"
    assert (completion.provider, completion.model) == ("openai", "gpt-test")
    assert (completion.prompt_tokens, completion.completion_tokens, completion.total_tokens) == (1000, 500, 1500)
    # gpt-test costs 1 USD per million prompt tokens and 2 per million completion tokens.
    assert completion.cost_usd == Decimal("0.002")
    assert completion.parsed_json is None
    call = LLMCall.objects.get()
    assert call.outcome == LLMOutcome.SUCCESS
    assert (call.run_id, call.step_id, call.owner_id) == (context.run_id, context.step_id, context.owner_id)
    assert (call.provider, call.model, call.attempt, call.step_attempt) == ("openai", "gpt-test", 1, 1)
    assert (call.prompt_tokens, call.completion_tokens, call.total_tokens) == (1000, 500, 1500)
    assert call.cost_usd == Decimal("0.002")
    assert call.latency_ms == completion.latency_ms
    assert call.error == ""


def test_complete__openai_failing_with_500_fails_over_to_anthropic(openai_server, anthropic_server, context):
    openai_server.default = status(500)
    anthropic_server.push(ok("from claude", prompt_tokens=20, completion_tokens=10))

    completion = ask(context)

    assert (completion.provider, completion.model, completion.text) == ("anthropic", "claude-test", "from claude")
    assert openai_server.count == 3  # the first try and LLM_MAX_RETRIES=2 retries
    assert anthropic_server.count == 1
    assert completion.attempts == 4
    assert outcomes() == [
        ("openai", "error", 1),
        ("openai", "error", 2),
        ("openai", "error", 3),
        ("anthropic", "success", 1),
    ]
    assert "HTTP 500" in LLMCall.objects.filter(outcome=LLMOutcome.ERROR).first().error
    assert len(set(LLMCall.objects.values_list("request_id", flat=True))) == 1
    # claude-test: 3 USD / 15 USD per million.
    assert completion.cost_usd == Decimal("0.00021")


def test_complete__a_provider_without_credentials_is_left_out(anthropic_server, context):
    completion = ask(context)

    assert completion.provider == "anthropic"
    assert outcomes() == [("anthropic", "success", 1)]


def test_complete__the_local_server_is_tried_last(openai_server, anthropic_server, local_server, context):
    openai_server.default = status(503)
    anthropic_server.default = status(529)  # Anthropic's "overloaded"
    local_server.push(ok("local answer", prompt_tokens=7, completion_tokens=3))

    completion = ask(context)

    assert (completion.provider, completion.model) == ("local", "llama-test")
    assert completion.cost_usd == Decimal(0)  # not in LLM_PRICES
    assert openai_server.requests[-1].at < anthropic_server.requests[0].at
    assert anthropic_server.requests[-1].at < local_server.requests[0].at
    assert [p for p, *_ in outcomes()] == ["openai"] * 3 + ["anthropic"] * 3 + ["local"]


def test_complete__order_follows_llm_providers(openai_server, anthropic_server, llm_settings, context):
    llm_settings.LLM_PROVIDERS = ["anthropic", "openai"]

    assert ask(context).provider == "anthropic"
    assert openai_server.count == 0


def test_complete__when_every_provider_fails_the_error_is_retryable_and_names_each_last_error(
    openai_server, anthropic_server, context
):
    openai_server.default = status(500)
    anthropic_server.default = hang(5)

    with pytest.raises(LLMUnavailable) as caught:
        ask(context)

    assert isinstance(caught.value, RetryableAgentError)
    message = str(caught.value)
    assert "No LLM provider answered" in message
    assert "openai: HTTP 500: fake error 500 (3 tries)" in message
    assert "anthropic: timed out after 0.5 s (3 tries)" in message
    assert set(caught.value.errors) == {"openai", "anthropic"}


def test_complete__a_rejected_request_is_not_retried_but_fails_over(openai_server, anthropic_server, context):
    openai_server.push(status(400))

    completion = ask(context)

    assert completion.provider == "anthropic"
    assert openai_server.count == 1
    assert outcomes() == [("openai", "error", 1), ("anthropic", "success", 1)]


@pytest.mark.parametrize("code", [400, 401, 404, 422])
def test_complete__a_request_every_provider_rejects_is_not_retryable(openai_server, anthropic_server, context, code):
    openai_server.default = status(code)
    anthropic_server.default = status(code)

    with pytest.raises(LLMRequestRejected) as caught:
        ask(context)

    assert isinstance(caught.value, NonRetryableAgentError)
    assert f"openai: HTTP {code}" in str(caught.value) and f"anthropic: HTTP {code}" in str(caught.value)
    assert openai_server.count == anthropic_server.count == 1


def test_complete__a_timeout_is_retried_on_the_same_provider(openai_server, llm_settings, context):
    llm_settings.LLM_TIMEOUT_SECONDS = 0.3
    openai_server.push(hang(30), ok("late but fine"))

    started = time.monotonic()
    completion = ask(context)

    assert completion.text == "late but fine"
    assert openai_server.count == 2
    assert 0.3 <= time.monotonic() - started < 15  # gave up on the hung request long before it answered
    error = LLMCall.objects.get(outcome=LLMOutcome.ERROR)
    assert error.error == "timed out after 0.3 s"
    assert error.latency_ms >= 300


def test_complete__a_malformed_response_is_retried(openai_server, anthropic_server, context):
    openai_server.push(malformed(), ok("good"))
    anthropic_server.push(malformed(), ok("unused"))

    assert ask(context).text == "good"
    assert openai_server.count == 2 and anthropic_server.count == 0
    assert LLMCall.objects.get(outcome=LLMOutcome.ERROR).error.startswith("malformed response")


def test_complete__a_malformed_anthropic_response_is_retried(anthropic_server, context):
    anthropic_server.push(malformed(), ok("good"))

    assert ask(context).text == "good"
    assert anthropic_server.count == 2


def test_complete__retries_back_off_exponentially(openai_server, llm_settings, context, caplog):
    llm_settings.LLM_RETRY_BACKOFF_SECONDS = 0.2
    llm_settings.LLM_MAX_RETRIES = 3
    openai_server.default = status(502)

    with pytest.raises(LLMUnavailable):
        ask(context)

    assert openai_server.count == 4
    # 0.2 s, 0.4 s, 0.8 s, each plus up to 10 % jitter: what the gateway chose, and (the clock has no upper
    # bound on a loaded machine) at least that long between the tries.
    chosen = [event["delay_seconds"] for event in events(caplog, "llm_retry")]
    for delay, expected in zip(chosen, [0.2, 0.4, 0.8], strict=True):
        assert expected <= delay <= round(expected * 1.1, 3), (delay, expected)
    for gap, delay in zip(gaps(openai_server), chosen, strict=True):
        assert gap >= delay - 0.001, (gap, delay)


def test_complete__retry_after_of_a_429_is_honoured(openai_server, context, caplog):
    openai_server.push(rate_limited("0.6"), ok("after the wait"))

    assert ask(context).text == "after the wait"
    assert [event["delay_seconds"] for event in events(caplog, "llm_retry")] == [0.6]  # not the 0.01 s backoff
    (gap,) = gaps(openai_server)
    assert gap >= 0.6


def test_complete__a_retry_after_too_long_to_wait_fails_over_at_once(openai_server, anthropic_server, context, caplog):
    openai_server.push(rate_limited("120"))

    completion = ask(context)

    assert completion.provider == "anthropic"
    assert openai_server.count == 1
    assert events(caplog, "llm_retry") == []  # no wait at all before the next provider
    assert LLMCall.objects.get(provider="openai").error.startswith("HTTP 429")


def test_complete__a_429_without_retry_after_uses_the_backoff(openai_server, context, caplog):
    openai_server.push(rate_limited(None), ok())

    ask(context)

    (retry,) = events(caplog, "llm_retry")
    assert 0.01 <= retry["delay_seconds"] <= 0.011


def test_complete__without_any_provider_is_a_non_retryable_error(llm_settings, context):
    with pytest.raises(LLMNotConfigured, match="OPENAI_API_KEY"):
        ask(context)


def test_complete__a_cancelled_step_spends_nothing_more(openai_server, context):
    openai_server.default = status(500)
    context.cancel_event.set()

    with pytest.raises(LLMUnavailable, match="cancelled"):
        ask(context)

    assert openai_server.count == 0


def test_complete__a_cancel_during_the_backoff_stops_retrying(openai_server, llm_settings, context):
    llm_settings.LLM_RETRY_BACKOFF_SECONDS = 30
    openai_server.default = status(500)

    threading.Timer(0.2, context.cancel_event.set).start()
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="cancelled"):
        ask(context)

    assert time.monotonic() - started < 10  # not the 30 s backoff
    assert openai_server.count == 1


def test_acomplete__retry_after_is_waited_for_on_the_event_loop(openai_server, make_context, caplog):
    context = make_context(asynchronous=True)
    openai_server.push(rate_limited("0.6"), ok("after the wait"))

    completion = async_to_sync(acomplete)(messages=HELLO, context=context)

    assert completion.text == "after the wait"
    assert [event["delay_seconds"] for event in events(caplog, "llm_retry")] == [0.6]
    (gap,) = gaps(openai_server)
    assert gap >= 0.6


def test_acomplete__a_cancel_during_the_backoff_stops_retrying(openai_server, llm_settings, make_context):
    llm_settings.LLM_RETRY_BACKOFF_SECONDS = 30
    openai_server.default = status(500)
    context = make_context(asynchronous=True)

    async def ask_then_cancel():
        asyncio.get_running_loop().call_later(0.2, context.request_cancel)
        return await acomplete(messages=HELLO, context=context)

    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="cancelled"):
        async_to_sync(ask_then_cancel)()

    assert time.monotonic() - started < 10  # not the 30 s backoff
    assert openai_server.count == 1


def test_acomplete__a_task_cancelled_mid_call_records_the_call_and_releases_its_tokens(
    openai_server, llm_settings, make_context
):
    """The engine cancels a stopped async step's task: the await on the provider raises at once."""
    llm_settings.LLM_TIMEOUT_SECONDS = 60
    openai_server.default = hang(30)
    context = make_context(token_budget=1000, asynchronous=True)

    async def ask_then_cancel():
        task = asyncio.ensure_future(acomplete(messages=HELLO, context=context))
        deadline = time.monotonic() + 5
        while openai_server.count == 0:  # the request has reached the provider
            assert time.monotonic() < deadline, "the request never reached the provider"
            await asyncio.sleep(0.01)
        context.request_cancel()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    async_to_sync(ask_then_cancel)()

    assert time.monotonic() - started < 10  # not the 30 s the provider takes
    call = LLMCall.objects.get()
    assert (call.provider, call.outcome, call.attempt, call.total_tokens) == ("openai", LLMOutcome.ERROR, 1, 0)
    assert call.error.startswith("cancelled")
    assert not LLMReservation.objects.exists()


def test_acomplete__concurrent_requests_wait_for_their_answers_together(openai_server, llm_settings, make_context):
    """One event loop carries many requests: 20 answers that each take 0.5 s arrive in about 0.5 s, not 10 s."""
    llm_settings.LLM_TIMEOUT_SECONDS = 5
    openai_server.default = ok("hello", latency=0.5)
    contexts = [make_context(asynchronous=True) for _ in range(20)]

    async def ask_all():
        return await asyncio.gather(*(acomplete(messages=HELLO, context=context) for context in contexts))

    started = time.monotonic()
    completions = async_to_sync(ask_all)()
    elapsed = time.monotonic() - started

    assert [c.text for c in completions] == ["hello"] * 20
    assert openai_server.max_in_flight == 20  # every request was waiting at the provider at the same time
    assert elapsed < 5, elapsed
    assert LLMCall.objects.filter(outcome=LLMOutcome.SUCCESS).count() == 20


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role must be one of"),
        ({"messages": [{"role": "user", "content": 3}]}, "content must be a string"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"json_schema": {"type": "nonsense"}}, "not a valid JSON Schema"),
    ],
)
def test_complete__an_invalid_request_is_refused_before_any_call(openai_server, context, options, problem):
    with pytest.raises(LLMInvalidRequest, match=problem):
        ask(context, **options)

    assert openai_server.count == 0


def test_complete__openai_request_carries_system_limits_and_json_mode(openai_server, context):
    openai_server.push(ok('{"a": 1}'))

    ask(context, system="Be brief.", max_tokens=77, temperature=0.3, json_schema={"type": "object"})

    body = openai_server.requests[0].body
    assert body["model"] == "gpt-test"
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"].startswith("Be brief.\n\nAnswer with one JSON value only")
    assert body["messages"][1:] == HELLO
    assert body["max_completion_tokens"] == 77 and body["temperature"] == 0.3
    assert body["response_format"] == {"type": "json_object"}
    assert openai_server.requests[0].headers["authorization"] == "Bearer test-openai-key"


def test_complete__anthropic_request_has_a_separate_system_prompt(anthropic_server, context):
    ask(context, system="Be brief.", max_tokens=77, temperature=1.7)

    received = anthropic_server.requests[0]
    assert received.body["system"] == "Be brief."
    assert received.body["messages"] == HELLO
    assert received.body["max_tokens"] == 77
    assert "temperature" not in received.body  # not a parameter of the SDK's Messages API any more
    # The SDK sends the key as a bearer token (or x-api-key, depending on its version).
    assert "test-anthropic-key" in received.headers.get("x-api-key", "") + received.headers.get("authorization", "")


def test_complete__local_request_uses_max_tokens(local_server, context):
    ask(context, max_tokens=33)

    assert local_server.requests[0].body["max_tokens"] == 33
    assert local_server.requests[0].headers["authorization"] == "Bearer local"


OPENAI = Provider("openai", "gpt-default", "k", None)
ANTHROPIC = Provider("anthropic", "claude-default", "k", None)
LOCAL = Provider("local", "llama-default", "k", "http://x")


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, ("gpt-default", "claude-default", "llama-default")),
        ("gpt-4o", ("gpt-4o", "claude-default", "gpt-4o")),
        ("claude-3-5-sonnet-latest", ("gpt-default", "claude-3-5-sonnet-latest", "llama-default")),
        ("openai:gpt-4o", ("gpt-4o", "claude-default", "llama-default")),
        ("anthropic:claude-x", ("gpt-default", "claude-x", "llama-default")),
        ("local:llama3.1:8b", ("gpt-default", "claude-default", "llama3.1:8b")),
        ("llama3.1:8b", ("llama3.1:8b", "claude-default", "llama3.1:8b")),
    ],
)
def test_model_for__routes_a_requested_model_to_its_providers(requested, expected):
    assert tuple(model_for(p, requested) for p in (OPENAI, ANTHROPIC, LOCAL)) == expected


def test_complete__a_requested_model_is_sent_and_priced(openai_server, llm_settings, context):
    llm_settings.LLM_PRICES = {"gpt-big": [10, 30]}
    openai_server.push(ok(prompt_tokens=100, completion_tokens=100))

    completion = ask(context, model="openai:gpt-big")

    assert openai_server.requests[0].body["model"] == "gpt-big"
    assert completion.model == "gpt-big"
    assert completion.cost_usd == Decimal("0.004")


def test_cost_usd__is_exact_and_unlisted_models_cost_nothing(llm_settings):
    assert cost_usd("gpt-test", 1, 1) == Decimal("0.00000300")
    assert cost_usd("claude-test", 1_000_000, 1_000_000) == Decimal("18")
    assert cost_usd("unknown", 1000, 1000) == Decimal(0)
    assert cost_usd("gpt-test-2025-01-01", 1_000_000, 0, served="gpt-test") == Decimal(1)


def test_retry_after_seconds__reads_seconds_milliseconds_and_http_dates():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    now = 1_800_000_000.0
    http_date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds({"retry-after": http_date}, now=now) == 30.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_configured_providers__empty_base_urls_mean_the_official_endpoints(llm_settings, monkeypatch):
    # `.env.example` sets these empty; the SDKs would take an empty variable as the URL itself.
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "")
    llm_settings.OPENAI_API_KEY = llm_settings.ANTHROPIC_API_KEY = "key"

    openai_provider, anthropic_provider = configured_providers()

    assert openai_provider.base_url == "https://api.openai.com/v1"
    assert anthropic_provider.base_url == "https://api.anthropic.com"
    assert str(new_client(OPENAI_KIND, "key", openai_provider.base_url, 1.0).base_url) == "https://api.openai.com/v1/"
