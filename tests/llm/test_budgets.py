"""Token budgets: per run and per owner per calendar month (UTC), checked before and counted after each call."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from agentrunner.agents.base import BudgetExceededError
from agentrunner.llm import complete
from agentrunner.llm.budgets import month_bounds
from agentrunner.models import LLMCall, LLMOutcome, OwnerBudget
from tests.llm.conftest import events
from tests.llm.fake_providers import ok

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "Say hello."}]  # 10 characters: a 3-token estimate


def ask(context, max_tokens=50):
    return complete(messages=HELLO, max_tokens=max_tokens, context=context)


def spent(owner, tokens: int, *, at=None, run=None):
    """Record earlier usage of `owner` (a successful call of `tokens` tokens)."""
    call = LLMCall.objects.create(
        owner=owner,
        run=run,
        request_id=uuid.uuid4(),
        provider="openai",
        model="gpt-test",
        outcome=LLMOutcome.SUCCESS,
        prompt_tokens=tokens,
        total_tokens=tokens,
    )
    if at is not None:
        LLMCall.objects.filter(pk=call.pk).update(created_at=at)
    return call


def test_run_budget__a_call_whose_estimate_does_not_fit_is_refused_before_it_is_sent(openai_server, make_context):
    context = make_context(token_budget=100)

    with pytest.raises(BudgetExceededError) as caught:
        ask(context, max_tokens=200)  # 3 + 200 tokens may be needed

    assert openai_server.count == 0
    message = str(caught.value)
    assert "run's token budget (100 tokens" in message
    assert "0 of 100 tokens used" in message and "up to 203 more" in message
    refused = LLMCall.objects.get()
    assert refused.outcome == LLMOutcome.REFUSED_BUDGET
    assert (refused.run_id, refused.provider, refused.attempt, refused.total_tokens) == (context.run_id, "", 0, 0)
    assert refused.error == message


def test_run_budget__a_call_that_fits_is_sent(openai_server, make_context):
    context = make_context(token_budget=53)

    assert ask(context, max_tokens=50).text == "hello"  # 3 + 50 = 53: fits exactly


def test_run_budget__after_actual_usage_crossed_it_the_answer_is_kept_and_the_next_call_refused(
    openai_server, make_context
):
    context = make_context(token_budget=1000)
    openai_server.push(ok("long answer", prompt_tokens=900, completion_tokens=200))

    completion = ask(context, max_tokens=50)  # estimated 53, actually 1100

    assert completion.text == "long answer"
    with pytest.raises(BudgetExceededError, match="1,100 of 1,000 tokens used"):
        ask(context, max_tokens=1)
    assert openai_server.count == 1


def test_run_budget__counts_every_step_of_the_run(openai_server, make_context):
    first = make_context(token_budget=100)
    openai_server.push(ok(prompt_tokens=60, completion_tokens=20))
    ask(first, max_tokens=10)
    second_step = make_context(token_budget=100, run=LLMCall.objects.get().run)

    with pytest.raises(BudgetExceededError, match="80 of 100"):
        ask(second_step, max_tokens=30)


def test_run_budget__none_means_no_limit(openai_server, make_context):
    context = make_context(token_budget=None)
    openai_server.push(ok(prompt_tokens=10**6, completion_tokens=10**6))

    ask(context)
    ask(context)

    assert openai_server.count == 2


def test_owner_budget__the_default_monthly_budget_applies(openai_server, llm_settings, owner, make_context):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 1000
    spent(owner, 960)

    with pytest.raises(BudgetExceededError) as caught:
        ask(make_context(), max_tokens=50)

    assert "monthly token budget of user owner (1,000 tokens in" in str(caught.value)
    assert "960 of 1,000 tokens used" in str(caught.value)
    assert openai_server.count == 0


def test_owner_budget__last_months_usage_does_not_count(openai_server, llm_settings, owner, make_context):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 1000
    start, _ = month_bounds()
    spent(owner, 50_000, at=start - timedelta(microseconds=1))  # the last instant of last month
    spent(owner, 900, at=start)  # the first instant of this one

    assert ask(make_context(), max_tokens=50).text == "hello"  # 900 + 53 <= 1000


def test_owner_budget__other_users_usage_does_not_count(openai_server, llm_settings, outsider, make_context):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 1000
    spent(outsider, 50_000)

    assert ask(make_context()).text == "hello"


def test_owner_budget__a_users_own_limit_replaces_the_default(openai_server, llm_settings, owner, make_context):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 1_000_000
    OwnerBudget.objects.create(user=owner, monthly_token_limit=40)

    with pytest.raises(BudgetExceededError, match="40 tokens"):
        ask(make_context(), max_tokens=50)


def test_owner_budget__zero_means_unlimited(openai_server, llm_settings, owner, make_context):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 1000
    OwnerBudget.objects.create(user=owner, monthly_token_limit=0)
    spent(owner, 10**9)

    assert ask(make_context()).text == "hello"


def test_owner_budget__an_empty_user_limit_falls_back_to_the_default(openai_server, llm_settings, owner, make_context):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 100
    OwnerBudget.objects.create(user=owner, monthly_token_limit=None)
    spent(owner, 90)

    with pytest.raises(BudgetExceededError):
        ask(make_context())


def test_owner_budget__a_run_without_owner_has_none(openai_server, llm_settings, make_context):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 1

    assert ask(make_context(user=None)).text == "hello"


def test_budget_warning__logged_once_when_usage_crosses_80_percent(openai_server, make_context, caplog):
    caplog.set_level("INFO")
    context = make_context(token_budget=1000)
    openai_server.push(
        ok(prompt_tokens=700, completion_tokens=0),  # 70 %
        ok(prompt_tokens=100, completion_tokens=50),  # 85 %: crosses 80 %
        ok(prompt_tokens=10, completion_tokens=0),  # 86 %
    )

    ask(context)
    assert events(caplog, "llm_budget_warning") == []
    ask(context)
    ask(context)

    (warning,) = events(caplog, "llm_budget_warning")
    assert warning["budget"] == "run"
    assert warning["run_id"] == str(context.run_id)
    assert warning["owner_id"] == context.owner_id
    assert (warning["used"], warning["limit"], warning["ratio"]) == (850, 1000, 0.8)


def test_budget_warning__for_the_owners_monthly_budget(openai_server, llm_settings, owner, make_context, caplog):
    caplog.set_level("INFO")
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 10_000
    spent(owner, 7_900)
    openai_server.push(ok(prompt_tokens=100, completion_tokens=100))

    ask(make_context())

    (warning,) = events(caplog, "llm_budget_warning")
    assert (warning["budget"], warning["owner_id"], warning["used"]) == ("owner_monthly", owner.pk, 8_100)


def test_budget_refusal__is_logged(openai_server, make_context, caplog):
    caplog.set_level("INFO")

    with pytest.raises(BudgetExceededError):
        ask(make_context(token_budget=1))

    (refused,) = events(caplog, "llm_budget_refused")
    assert (refused["budget"], refused["limit"], refused["estimate"]) == ("run", 1, 53)


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (datetime(2026, 11, 21, 10, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_month_bounds__are_calendar_months_in_utc(moment, start, end):
    assert month_bounds(moment) == (start, end)


def test_month_bounds__of_a_local_time_use_its_utc_month():
    # 00:30 on 1 December in UTC+1 is still 30 November in UTC.
    local = datetime(2026, 12, 1, 0, 30, tzinfo=timezone.get_fixed_timezone(60))

    assert month_bounds(local)[0] == datetime(2026, 11, 1, tzinfo=UTC)
