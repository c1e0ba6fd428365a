"""Circuit breakers in the database: open after failures, skip while open, one half-open probe across threads."""

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone

from agentrunner.agents.base import AgentContext
from agentrunner.llm import LLMUnavailable, acomplete, breaker_reset, complete
from agentrunner.llm.breaker import Admission, breaker_admit
from agentrunner.models import BreakerState, LLMCall, LLMOutcome, ProviderBreaker
from tests.llm.fake_providers import hang, ok, status

HELLO = [{"role": "user", "content": "hi"}]


def ask(context):
    return complete(messages=HELLO, context=context)


def breaker(provider="openai") -> ProviderBreaker:
    return ProviderBreaker.objects.get(provider=provider)


def open_breaker(provider="openai", *, seconds_ago: float, failures: int = 5):
    ProviderBreaker.objects.update_or_create(
        provider=provider,
        defaults={
            "state": BreakerState.OPEN,
            "opened_at": timezone.now() - timedelta(seconds=seconds_ago),
            "consecutive_failures": failures,
        },
    )


@pytest.mark.django_db
def test_breaker__opens_after_the_configured_failures_in_a_row(openai_server, anthropic_server, llm_settings, context):
    llm_settings.LLM_BREAKER_FAILURES = 3
    openai_server.default = status(500)

    assert ask(context).provider == "anthropic"

    row = breaker()
    assert row.state == BreakerState.OPEN
    assert row.consecutive_failures == 3
    assert row.opened_at is not None
    assert openai_server.count == 3


@pytest.mark.django_db
def test_breaker__opening_stops_the_retries_on_that_provider(openai_server, anthropic_server, llm_settings, context):
    llm_settings.LLM_BREAKER_FAILURES = 2
    llm_settings.LLM_MAX_RETRIES = 5
    openai_server.default = status(500)

    assert ask(context).provider == "anthropic"
    assert openai_server.count == 2


@pytest.mark.django_db
def test_breaker__an_open_provider_is_skipped_without_a_request(openai_server, anthropic_server, context):
    open_breaker(seconds_ago=1)

    completion = ask(context)

    assert completion.provider == "anthropic"
    assert openai_server.count == 0
    skipped = LLMCall.objects.get(provider="openai")
    assert skipped.outcome == LLMOutcome.BREAKER_OPEN
    assert skipped.attempt == 0 and skipped.total_tokens == 0
    assert "circuit breaker open" in skipped.error


@pytest.mark.django_db
def test_breaker__all_providers_open_is_a_retryable_error(openai_server, anthropic_server, context):
    open_breaker("openai", seconds_ago=1)
    open_breaker("anthropic", seconds_ago=1)

    with pytest.raises(LLMUnavailable, match="openai: skipped: circuit breaker open"):
        ask(context)

    assert openai_server.count == anthropic_server.count == 0


@pytest.mark.django_db
def test_breaker__a_success_clears_the_failure_count(openai_server, context):
    openai_server.push(status(500), status(500), ok())

    ask(context)

    row = breaker()
    assert (row.state, row.consecutive_failures) == (BreakerState.CLOSED, 0)


@pytest.mark.django_db
def test_breaker__a_rejected_request_does_not_count_against_the_provider(openai_server, anthropic_server, context):
    openai_server.default = status(400)

    for _ in range(6):
        ask(context)

    assert (breaker().state, breaker().consecutive_failures) == (BreakerState.CLOSED, 0)


@pytest.mark.django_db
def test_breaker__a_bad_key_counts_against_the_provider(openai_server, anthropic_server, llm_settings, context):
    llm_settings.LLM_BREAKER_FAILURES = 2
    openai_server.default = status(401)

    ask(context)
    ask(context)

    assert breaker().state == BreakerState.OPEN
    assert openai_server.count == 2  # not retried: one try per request


@pytest.mark.django_db
def test_breaker__after_the_reset_time_one_probe_that_succeeds_closes_it(openai_server, anthropic_server, context):
    open_breaker(seconds_ago=31)  # LLM_BREAKER_RESET_SECONDS = 30

    completion = ask(context)

    assert completion.provider == "openai"
    assert openai_server.count == 1
    row = breaker()
    assert (row.state, row.consecutive_failures, row.opened_at) == (BreakerState.CLOSED, 0, None)


@pytest.mark.django_db
def test_breaker__before_the_reset_time_there_is_no_probe(openai_server, anthropic_server, context):
    open_breaker(seconds_ago=29)

    assert ask(context).provider == "anthropic"
    assert breaker().state == BreakerState.OPEN


@pytest.mark.django_db
def test_breaker__a_failed_probe_reopens_it_without_retrying(openai_server, anthropic_server, context):
    open_breaker(seconds_ago=31, failures=5)
    openai_server.default = status(500)
    before = timezone.now()

    assert ask(context).provider == "anthropic"

    assert openai_server.count == 1  # a probe is one call, LLM_MAX_RETRIES notwithstanding
    row = breaker()
    assert row.state == BreakerState.OPEN
    assert row.opened_at >= before  # the reset time starts again
    assert row.consecutive_failures == 6


@pytest.mark.django_db
def test_breaker__a_probe_answered_with_a_client_error_closes_it(openai_server, anthropic_server, context):
    open_breaker(seconds_ago=31)
    openai_server.push(status(400))

    assert ask(context).provider == "anthropic"
    assert breaker().state == BreakerState.CLOSED  # the provider answered: it is up


@pytest.mark.django_db
def test_breaker__while_half_open_others_skip_the_provider(openai_server, anthropic_server, context):
    open_breaker(seconds_ago=31)
    assert breaker_admit(provider="openai").admission == Admission.PROBE

    assert breaker_admit(provider="openai").admission == Admission.REFUSED
    assert ask(context).provider == "anthropic"
    assert openai_server.count == 0


@pytest.mark.django_db
def test_breaker__a_probe_whose_step_is_cancelled_is_left_to_another_caller(openai_server, llm_settings, make_context):
    llm_settings.LLM_TIMEOUT_SECONDS = 10
    open_breaker(seconds_ago=31)
    openai_server.default = hang(5)
    context = make_context(asynchronous=True)

    async def probe_then_cancel():
        task = asyncio.ensure_future(acomplete(messages=HELLO, context=context))
        deadline = time.monotonic() + 5
        while openai_server.count == 0:
            assert time.monotonic() < deadline, "the probe never reached the provider"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async_to_sync(probe_then_cancel)()

    row = breaker()
    assert (row.state, row.probe_started_at) == (BreakerState.HALF_OPEN, None)  # no verdict either way
    assert breaker_admit(provider="openai").admission == Admission.PROBE  # not after the probe lease


@pytest.mark.django_db
def test_breaker__a_probe_lost_with_its_process_is_taken_over(llm_settings):
    llm_settings.LLM_TIMEOUT_SECONDS = 1
    llm_settings.LLM_BREAKER_RESET_SECONDS = 1
    ProviderBreaker.objects.create(
        provider="openai",
        state=BreakerState.HALF_OPEN,
        opened_at=timezone.now() - timedelta(seconds=10),
        probe_started_at=timezone.now() - timedelta(seconds=2.5),  # older than timeout + reset
    )

    assert breaker_admit(provider="openai").admission == Admission.PROBE
    assert breaker_admit(provider="openai").admission == Admission.REFUSED


@pytest.mark.django_db
def test_breaker_reset__closes_an_open_breaker(llm_settings):
    open_breaker(seconds_ago=1)

    assert breaker_reset(provider="openai") is True
    assert (breaker().state, breaker().consecutive_failures) == (BreakerState.CLOSED, 0)
    assert breaker_reset(provider="openai") is False


@pytest.mark.django_db(transaction=True)
def test_breaker__two_threads_racing_in_half_open_make_exactly_one_probe(openai_server, anthropic_server, llm_settings):
    """Both threads find the breaker due for a probe; the compare-and-set lets one of them call openai."""
    llm_settings.LLM_TIMEOUT_SECONDS = 5
    open_breaker(seconds_ago=31)
    openai_server.default = ok("probe answer", latency=0.4)  # still in flight while the other thread decides
    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker():
        context = AgentContext(run_id=None, step_name="x", attempt=1, input={})
        try:
            barrier.wait()
            results.append(ask(context).provider)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert not errors
    assert sorted(results) == ["anthropic", "openai"]
    assert openai_server.count == 1
    assert anthropic_server.count == 1
    assert breaker().state == BreakerState.CLOSED


@pytest.mark.django_db(transaction=True)
def test_breaker_admit__of_eight_racing_threads_exactly_one_gets_the_probe(llm_settings):
    open_breaker(seconds_ago=31)
    barrier = threading.Barrier(8)
    admissions = []

    def worker():
        try:
            barrier.wait()
            admissions.append(breaker_admit(provider="openai").admission)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(admissions) == [Admission.PROBE] + [Admission.REFUSED] * 7
    assert breaker().state == BreakerState.HALF_OPEN
