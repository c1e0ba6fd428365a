"""Admin of LLM calls (read-only), monthly budgets (usage in one query) and provider breakers (reset action)."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agentrunner.models import BreakerState, LLMCall, LLMOutcome, OwnerBudget, ProviderBreaker
from tests.llm.conftest import new_run

pytestmark = pytest.mark.django_db

CALLS = reverse("admin:agentrunner_llmcall_changelist")
BUDGETS = reverse("admin:agentrunner_ownerbudget_changelist")
BREAKERS = reverse("admin:agentrunner_providerbreaker_changelist")


@pytest.fixture
def admin_client_(django_user_model):
    user = django_user_model.objects.create_superuser(username="root", password="pw", email="root@example.com")
    client = Client()
    client.force_login(user)
    return client


def call(*, run=None, owner=None, tokens=0, outcome=LLMOutcome.SUCCESS, provider="openai", model="gpt-test"):
    return LLMCall.objects.create(
        run=run,
        owner=owner,
        request_id=uuid.uuid4(),
        provider=provider,
        model=model,
        outcome=outcome,
        prompt_tokens=tokens,
        total_tokens=tokens,
        cost_usd=Decimal("0.0012"),
        latency_ms=1234,
    )


def test_llm_calls__list_shows_columns_and_links_the_run(admin_client_, owner):
    run = new_run(agent_type="llm")
    call(run=run, owner=owner, tokens=1500)
    call(outcome=LLMOutcome.REFUSED_BUDGET, provider="")

    page = admin_client_.get(CALLS).content.decode()

    assert reverse("admin:runs_run_change", args=[run.pk]) in page
    assert str(run.pk)[:8] in page
    assert "$0.00120000" in page and "1,234 ms" in page
    assert "Succeeded" in page and "Refused: over budget" in page and "(none: refused)" in page


def test_llm_calls__are_read_only(admin_client_):
    row = call()

    page = admin_client_.get(reverse("admin:agentrunner_llmcall_change", args=[row.pk]))

    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert admin_client_.get(reverse("admin:agentrunner_llmcall_add")).status_code == 403
    assert admin_client_.post(reverse("admin:agentrunner_llmcall_delete", args=[row.pk])).status_code == 403


def test_llm_calls__filter_by_outcome_and_search_by_run_id(admin_client_):
    run = new_run(agent_type="llm")
    mine = call(run=run, outcome=LLMOutcome.ERROR)
    call(outcome=LLMOutcome.ERROR)
    call(run=run)

    by_outcome = admin_client_.get(CALLS, {"outcome": "error"}).context["cl"].result_list
    by_run = admin_client_.get(CALLS, {"q": str(run.pk)}).context["cl"].result_list
    by_short = admin_client_.get(CALLS, {"q": str(run.pk)[:8]}).context["cl"].result_list
    by_request = admin_client_.get(CALLS, {"q": str(mine.request_id)}).context["cl"].result_list

    assert len(by_outcome) == 2
    assert len(by_run) == 2 and len(by_short) == 2
    assert list(by_request) == [mine]
    for params in ({"provider": "openai"}, {"model": "gpt-test"}, {"created_at__gte": timezone.now().isoformat()}):
        assert admin_client_.get(CALLS, params).status_code == 200


def test_llm_calls__list_queries_do_not_grow_with_rows(admin_client_, owner):
    call(owner=owner, run=new_run(agent_type="llm"))
    with CaptureQueriesContext(connection) as one:
        admin_client_.get(CALLS)
    for _ in range(10):
        call(owner=owner, run=new_run(agent_type="llm"))
    with CaptureQueriesContext(connection) as eleven:
        admin_client_.get(CALLS)

    assert len(eleven) == len(one)


def test_owner_budgets__show_this_months_usage_and_share_in_constant_queries(admin_client_, llm_settings):
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 1000
    users = [get_user_model().objects.create_user(username=f"user{i}") for i in range(6)]
    OwnerBudget.objects.create(user=users[0], monthly_token_limit=None)
    with CaptureQueriesContext(connection) as one:
        admin_client_.get(BUDGETS)
    OwnerBudget.objects.create(user=users[1], monthly_token_limit=200)
    OwnerBudget.objects.create(user=users[2], monthly_token_limit=0)
    for user in users[3:]:
        OwnerBudget.objects.create(user=user, monthly_token_limit=5000)
    call(owner=users[0], tokens=850)
    call(owner=users[1], tokens=300)
    old = call(owner=users[1], tokens=10_000)
    LLMCall.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))

    with CaptureQueriesContext(connection) as six:
        page = admin_client_.get(BUDGETS).content.decode()

    assert len(six) == len(one)
    assert "default (1,000 tokens)" in page and "850 tokens" in page and "85 %" in page
    assert "200 tokens" in page and "300 tokens" in page and "150 %" in page  # last month's 10,000 not counted
    assert "unlimited" in page


def test_owner_budgets__a_limit_can_be_set(admin_client_, owner):
    response = admin_client_.post(
        reverse("admin:agentrunner_ownerbudget_add"), {"user": owner.pk, "monthly_token_limit": "5000"}
    )

    assert response.status_code == 302
    assert OwnerBudget.objects.get(user=owner).monthly_token_limit == 5000


def test_breakers__list_states_and_reset_to_closed(admin_client_):
    ProviderBreaker.objects.create(
        provider="openai", state=BreakerState.OPEN, opened_at=timezone.now(), consecutive_failures=5
    )
    ProviderBreaker.objects.create(provider="anthropic")

    page = admin_client_.get(BREAKERS).content.decode()
    assert "switched off" in page and "in use" in page

    response = admin_client_.post(
        BREAKERS,
        {"action": "reset_to_closed", "_selected_action": list(ProviderBreaker.objects.values_list("pk", flat=True))},
        follow=True,
    )

    assert "Reset to closed: openai." in response.content.decode()
    assert ProviderBreaker.objects.get(provider="openai").state == BreakerState.CLOSED


def test_breakers_and_budgets__superusers_only_whatever_the_django_permissions(django_user_model):
    from django.contrib.auth.models import Permission

    from agentrunner.models import Role
    from tests.conftest import join

    staff = django_user_model.objects.create_user(username="operator", password="pw", is_staff=True)
    staff.user_permissions.set(Permission.objects.all())
    join(staff, Role.ADMIN)  # a team's admin: the service's settings are not theirs
    ProviderBreaker.objects.create(provider="openai", state=BreakerState.OPEN, opened_at=timezone.now())
    client = Client()
    client.force_login(staff)

    assert client.get(BREAKERS).status_code == 403
    assert client.get(BUDGETS).status_code == 403
    assert client.get(CALLS).status_code == 200


def test_llm_calls__a_teams_staff_see_only_its_calls(django_user_model):
    from agentrunner.models import Role
    from tests.conftest import join, team_named

    alpha, beta = team_named("alpha"), team_named("beta")
    staff = django_user_model.objects.create_user(username="ada", password="pw", is_staff=True)
    join(staff, Role.VIEWER, alpha)
    ours = call(run=new_run(team=alpha), tokens=10)
    theirs = call(run=new_run(team=beta), tokens=20)
    ours.team, theirs.team = alpha, beta
    LLMCall.objects.bulk_update([ours, theirs], ["team"])
    client = Client()
    client.force_login(staff)

    assert list(client.get(CALLS).context["cl"].result_list) == [ours]
    assert list(client.get(CALLS, {"q": str(theirs.run_id)}).context["cl"].result_list) == []
    assert client.get(reverse("admin:agentrunner_llmcall_change", args=[theirs.pk])).status_code == 302
    assert client.get(reverse("admin:agentrunner_llmcall_change", args=[ours.pk])).status_code == 200
