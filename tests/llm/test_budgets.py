"""Token budgets: per run, and per owner and per team per calendar month (UTC), reserved before and settled after
each request."""

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from django.db.models import Sum
from django.utils import timezone

from agentrunner.agents.base import AsyncAgentContext, BudgetExceededError
from agentrunner.llm import Completion, LLMUnavailable, acomplete, complete
from agentrunner.llm.budgets import budget_reserve, month_bounds
from agentrunner.llm.gateway import _longest_request_seconds
from agentrunner.models import LLMCall, LLMOutcome, LLMReservation, OwnerBudget
from runs.models import Run, Step
from tests.conftest import team_named
from tests.llm.conftest import context_for, events, new_run
from tests.llm.fake_providers import ok, status

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "Say hello."}]  # 10 characters: a 3-token estimate


def ask(context, max_tokens=50):
    return complete(messages=HELLO, max_tokens=max_tokens, context=context)


def spent(owner, tokens: int, *, at=None, run=None, team=None):
    """Record earlier usage of `owner` (a successful call of `tokens` tokens), in `team` if given."""
    call = LLMCall.objects.create(
        owner=owner,
        run=run,
        team=team,
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


# --- The team's monthly budget -------------------------------------------------------------------------


def test_team_budget__its_own_limit_refuses_a_call_that_does_not_fit(openai_server, owner, make_context):
    team = team_named("claims")
    team.monthly_token_limit = 1000
    team.save()
    spent(owner, 960, team=team)

    with pytest.raises(BudgetExceededError) as caught:
        ask(make_context(team=team), max_tokens=50)

    message = str(caught.value)
    assert "monthly token budget of team claims (1,000 tokens in" in message
    assert "960 of 1,000 tokens used" in message and "up to 53 more" in message
    assert openai_server.count == 0
    refused = LLMCall.objects.get(outcome=LLMOutcome.REFUSED_BUDGET)
    assert (refused.team_id, refused.owner_id, refused.error) == (team.pk, owner.pk, message)


def test_team_budget__the_default_applies_to_a_team_without_its_own(openai_server, llm_settings, owner, make_context):
    llm_settings.TEAM_MONTHLY_TOKEN_BUDGET = 1000
    team = team_named("claims")  # monthly_token_limit empty: the default
    spent(owner, 960, team=team)

    with pytest.raises(BudgetExceededError, match="monthly token budget of team claims"):
        ask(make_context(team=team), max_tokens=50)


def test_team_budget__zero_means_unlimited(openai_server, llm_settings, owner, make_context):
    llm_settings.TEAM_MONTHLY_TOKEN_BUDGET = 1000
    team = team_named("claims")
    team.monthly_token_limit = 0
    team.save()
    spent(owner, 10**9, team=team)

    assert ask(make_context(team=team)).text == "hello"


def test_team_budget__counts_every_members_calls_this_month_and_no_other_teams(
    openai_server, owner, outsider, make_context
):
    team, other = team_named("claims"), team_named("other")
    team.monthly_token_limit = 1000
    team.save()
    start, _ = month_bounds()
    spent(outsider, 50_000, team=team, at=start - timedelta(microseconds=1))  # last month
    spent(outsider, 50_000, team=other)  # another team
    spent(outsider, 500, team=team)  # another member, this month
    spent(owner, 400, team=team)

    assert ask(make_context(team=team), max_tokens=50).text == "hello"  # 900 + 53 <= 1000
    with pytest.raises(BudgetExceededError, match="915 of 1,000 tokens used"):  # + the 15 just spent
        ask(make_context(team=team), max_tokens=100)


@pytest.mark.parametrize(
    ("owner_limit", "team_limit", "refused_by"),
    [(1000, 500, "team claims"), (500, 1000, "user owner"), (500, 500, "user owner")],
)
def test_team_budget__beside_the_owners_the_strictest_refuses(
    openai_server, owner, make_context, owner_limit, team_limit, refused_by
):
    team = team_named("claims")
    team.monthly_token_limit = team_limit
    team.save()
    OwnerBudget.objects.create(user=owner, monthly_token_limit=owner_limit)
    spent(owner, 460, team=team)

    with pytest.raises(BudgetExceededError, match=f"monthly token budget of {refused_by} "):
        ask(make_context(team=team), max_tokens=50)  # 460 + 53 fits 1000, not 500


def test_team_budget__every_call_row_names_the_team(openai_server, owner, make_context):
    team = team_named("claims")
    openai_server.push(status(500))  # a failed try, then an answer

    ask(make_context(team=team, token_budget=1000))

    assert list(LLMCall.objects.values_list("outcome", "team_id").order_by("pk")) == [
        (LLMOutcome.ERROR, team.pk),
        (LLMOutcome.SUCCESS, team.pk),
    ]


def test_team_budget__the_reservation_holds_against_the_team(owner, make_context):
    team = team_named("claims")
    team.monthly_token_limit = 1000
    team.save()
    context = make_context(team=team)

    budget_reserve(
        run_id=context.run_id,
        owner_id=owner.pk,
        team_id=team.pk,
        token_budget=None,
        estimate=ESTIMATE,
        request_id=uuid.uuid4(),
        hold_seconds=90,
    )
    second = budget_reserve(
        run_id=context.run_id,
        owner_id=owner.pk,
        team_id=team.pk,
        token_budget=None,
        estimate=1000 - ESTIMATE + 1,
        request_id=uuid.uuid4(),
        hold_seconds=90,
    )

    assert LLMReservation.objects.get().team_id == team.pk
    assert (second.refused.kind, second.refused.used, second.refused.reserved) == ("team_monthly", 53, 53)


def test_budget_warning__for_the_teams_monthly_budget(openai_server, owner, make_context, caplog):
    caplog.set_level("INFO")
    team = team_named("claims")
    team.monthly_token_limit = 10_000
    team.save()
    spent(owner, 7_900, team=team)
    openai_server.push(ok(prompt_tokens=100, completion_tokens=100))

    ask(make_context(team=team))

    (warning,) = events(caplog, "llm_budget_warning")
    assert (warning["budget"], warning["team_id"], warning["used"]) == ("team_monthly", team.pk, 8_100)


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


# --- Reservations: concurrent requests cannot overspend ---------------------------------------------

ESTIMATE = 53  # HELLO (3 tokens) + max_tokens 50
FITS = 10
CONCURRENT = 50


def budget_fitting_ten(kind: str, owner, llm_settings) -> Run:
    """A run whose run budget (or its owner's or its team's monthly budget) fits exactly FITS requests of ESTIMATE
    tokens; the other budgets do not apply."""
    if kind == "run":
        return new_run(agent_type="llm", created_by=owner, token_budget=FITS * ESTIMATE)
    if kind == "owner_monthly":
        llm_settings.LLM_MONTHLY_TOKEN_BUDGET = FITS * ESTIMATE
        return new_run(agent_type="llm", created_by=owner)
    team = team_named("claims")
    team.monthly_token_limit = FITS * ESTIMATE
    team.save()
    return new_run(agent_type="llm", created_by=owner, team=team)


def assert_exactly_ten_answered(results: list, run: Run, server) -> None:
    unexpected = [r for r in results if not isinstance(r, Completion | BudgetExceededError)]
    assert not unexpected, unexpected
    assert sum(isinstance(r, Completion) for r in results) == FITS
    assert sum(isinstance(r, BudgetExceededError) for r in results) == CONCURRENT - FITS
    assert server.count == FITS
    spent = LLMCall.objects.filter(run=run).aggregate(tokens=Sum("total_tokens"))["tokens"]
    assert spent == FITS * ESTIMATE  # at most the limit
    assert LLMCall.objects.filter(run=run, outcome=LLMOutcome.REFUSED_BUDGET).count() == CONCURRENT - FITS
    assert not LLMReservation.objects.exists()  # every request settled or released its reservation


@pytest.fixture
def slow_exact_answers(openai_server, llm_settings):
    """Answers that take 0.2 s, so that requests overlap, and use exactly the estimate: settling frees nothing."""
    llm_settings.LLM_TIMEOUT_SECONDS = 10
    openai_server.default = ok(prompt_tokens=3, completion_tokens=ESTIMATE - 3, latency=0.2)
    return openai_server


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["run", "owner_monthly", "team_monthly"])
def test_budget__50_concurrent_requests_on_one_event_loop_spend_exactly_what_fits(
    slow_exact_answers, llm_settings, owner, kind
):
    run = budget_fitting_ten(kind, owner, llm_settings)

    async def ask_all():
        try:
            return await asyncio.gather(
                *(
                    acomplete(messages=HELLO, max_tokens=50, context=context_for(run, AsyncAgentContext))
                    for _ in range(CONCURRENT)
                ),
                return_exceptions=True,
            )
        finally:
            await sync_to_async(connections.close_all)()

    # A loop of its own, as on a worker: the database work goes to asgiref's one shared thread.
    results = asyncio.run(ask_all())

    assert_exactly_ten_answered(results, run, slow_exact_answers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["run", "owner_monthly", "team_monthly"])
def test_budget__50_threads_calling_complete_at_once_spend_exactly_what_fits(
    slow_exact_answers, llm_settings, owner, kind
):
    run = budget_fitting_ten(kind, owner, llm_settings)
    barrier = threading.Barrier(CONCURRENT)
    results = [None] * CONCURRENT

    def ask(index: int):
        try:
            barrier.wait()
            results[index] = complete(messages=HELLO, max_tokens=50, context=context_for(run))
        except Exception as exc:  # asserted below
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads)
    assert_exactly_ten_answered(results, run, slow_exact_answers)


def test_reservation__of_a_request_in_progress_counts_against_the_budget(openai_server, owner, make_context):
    context = make_context(token_budget=FITS * ESTIMATE)
    LLMReservation.objects.create(
        run_id=context.run_id,
        owner=owner,
        request_id=uuid.uuid4(),
        tokens=500,
        expires_at=timezone.now() + timedelta(minutes=5),
    )

    with pytest.raises(BudgetExceededError, match=r"500 of 530 tokens used \(500 of them reserved by requests in"):
        ask(context)

    assert openai_server.count == 0


def test_reservation__left_by_a_dead_process_stops_counting_when_it_expires(openai_server, owner, make_context):
    context = make_context(token_budget=FITS * ESTIMATE)
    LLMReservation.objects.create(
        run_id=context.run_id,
        owner=owner,
        request_id=uuid.uuid4(),
        tokens=500,
        expires_at=timezone.now() - timedelta(seconds=1),
    )

    assert ask(context).text == "hello"


def test_reservation__holds_the_estimate_until_the_real_usage_replaces_it(owner, make_context):
    context = make_context(token_budget=1000)
    request_id = uuid.uuid4()

    reservation = budget_reserve(
        run_id=context.run_id,
        owner_id=owner.pk,
        token_budget=1000,
        estimate=ESTIMATE,
        request_id=request_id,
        hold_seconds=90,
    )

    held = LLMReservation.objects.get()
    assert held.pk == reservation.reservation_id
    assert (held.run_id, held.owner_id, held.request_id, held.tokens) == (context.run_id, owner.pk, request_id, 53)
    assert timedelta(seconds=89) < held.expires_at - timezone.now() <= timedelta(seconds=90)
    assert not LLMCall.objects.exists()  # not a call: the admin and the metrics never see it


def test_reservation__is_replaced_by_the_answers_usage(openai_server, make_context):
    ask(make_context(token_budget=1000))

    assert LLMCall.objects.get().total_tokens == 15
    assert not LLMReservation.objects.exists()


def test_reservation__is_released_when_no_provider_answers(openai_server, make_context):
    openai_server.default = status(500)

    with pytest.raises(LLMUnavailable):
        ask(make_context(token_budget=1000))

    assert not LLMReservation.objects.exists()


def test_reservation__counts_for_longer_than_a_request_can_take(llm_settings):
    llm_settings.LLM_TIMEOUT_SECONDS = 60
    llm_settings.LLM_MAX_RETRIES = 2

    # Per provider: 3 tries of 60 s and 2 waits of at most 33 s (30 s backoff + 10 % jitter; Retry-After
    # waits stop at 30 s); then a margin of 60 s.
    assert _longest_request_seconds(2) == 2 * (3 * 60 + 2 * 33) + 60


def test_reservation__refused_requests_reserve_nothing(openai_server, make_context):
    with pytest.raises(BudgetExceededError):
        ask(make_context(token_budget=10))

    assert not LLMReservation.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["run", "team_monthly"])
def test_budget_reserve__the_second_of_two_requests_waits_for_the_first_and_counts_its_reservation(
    owner, llm_settings, kind
):
    """Two connections, one lock hand-off: B's check starts while A holds the run's (or the team's) lock, and
    must wait for it."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite serialises whole transactions)")
    run = budget_fitting_ten(kind, owner, llm_settings)
    reserve = {
        "run_id": run.pk,
        "owner_id": owner.pk,
        "team_id": run.team_id,
        "token_budget": run.token_budget,
        "request_id": uuid.uuid4(),
        "hold_seconds": 60,
    }
    a_holds, a_may_commit = threading.Event(), threading.Event()
    b_pid, b_result = [], []

    def request_a():
        try:
            with transaction.atomic():  # A's reservation stays uncommitted, its lock held, until told
                budget_reserve(estimate=500, **reserve)
                a_holds.set()
                a_may_commit.wait(10)
        finally:
            connection.close()

    def request_b():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                b_pid.append(cursor.fetchone()[0])
            b_result.append(budget_reserve(estimate=ESTIMATE, **reserve))
        finally:
            connection.close()

    a = threading.Thread(target=request_a)
    a.start()
    assert a_holds.wait(10)
    b = threading.Thread(target=request_b)
    b.start()
    wait_until_waiting_for_a_lock(b_pid)
    # FOR NO KEY UPDATE: rows referencing the locked run or team (steps, LLM calls, runs) are still written meanwhile.
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '2s'")
    Step.objects.create(run=run, sequence=0, name="other", agent_type="llm")
    new_run(agent_type="llm", created_by=owner, team=run.team)
    a_may_commit.set()
    a.join(10)
    b.join(10)

    (refused,) = b_result
    assert refused.refused is not None
    assert (refused.refused.used, refused.refused.reserved) == (500, 500)
    assert LLMReservation.objects.count() == 1


def wait_until_waiting_for_a_lock(pid_holder: list, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if pid_holder:
            with connection.cursor() as cursor:
                cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid_holder[0]])
                row = cursor.fetchone()
            if row and row[0] == "Lock":
                return
        assert time.monotonic() < deadline, "the second request never waited for the lock"
        time.sleep(0.02)
