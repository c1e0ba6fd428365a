"""The team pages: superusers create teams and set their limits; a team's admins manage its members only."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from agentrunner.models import Membership, Role, Team
from agentrunner.teams.services import token_create
from tests.agentrunner.test_metrics import llm_call
from tests.conftest import join, team_named

pytestmark = pytest.mark.django_db

TEAMS = reverse("admin:agentrunner_team_changelist")
ADD = reverse("admin:agentrunner_team_add")


def change_url(team):
    return reverse("admin:agentrunner_team_change", args=[team.pk])


@pytest.fixture
def alpha():
    return team_named("alpha")


@pytest.fixture
def beta():
    return team_named("beta")


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def person(django_user_model, username, *roles, staff=True):
    user = django_user_model.objects.create_user(username=username, password="pw", is_staff=staff)
    user.user_permissions.set(Permission.objects.all())  # no longer decides anything
    for role, team in roles:
        join(user, role, team)
    return user


@pytest.fixture
def ada(django_user_model, alpha):
    """Alpha's admin."""
    return person(django_user_model, "ada", (Role.ADMIN, alpha))


def members_form(team, rows, *, new=()):
    """The team page's POST: `rows` are (membership, role, delete) for its members, `new` (username, role) pairs."""
    data = {
        "memberships-TOTAL_FORMS": str(len(rows) + len(new)),
        "memberships-INITIAL_FORMS": str(len(rows)),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "name": team.name,
        "slug": team.slug,
    }
    for i, (membership, role, delete) in enumerate(rows):
        data.update(
            {f"memberships-{i}-id": membership.pk, f"memberships-{i}-team": team.pk, f"memberships-{i}-role": role}
        )
        if delete:
            data[f"memberships-{i}-DELETE"] = "on"
    for j, (username, role) in enumerate(new, start=len(rows)):
        data.update(
            {f"memberships-{j}-team": team.pk, f"memberships-{j}-username": username, f"memberships-{j}-role": role}
        )
    return data


def rows_of(team):
    return list(Membership.objects.filter(team=team).select_related("user").order_by("is_token", "user__username"))


def roles(team) -> dict[str, str]:
    return dict(Membership.objects.filter(team=team).values_list("user__username", "role"))


def errors_of(response) -> str:
    assert response.status_code == 200, response
    return str(response.context["inline_admin_formsets"][0].formset.non_form_errors()) + str(
        [form.errors for form in response.context["inline_admin_formsets"][0].formset.forms]
    )


# --- who sees which team -----------------------------------------------------------------------


def test_team_list__a_team_admin_sees_only_their_teams(ada, alpha, beta):
    client = login(ada)
    response = client.get(TEAMS)
    assert list(response.context["cl"].result_list) == [alpha]
    assert client.get(change_url(beta)).status_code == 302  # Django's "doesn't exist", as for any other id
    assert client.get(ADD).status_code == 403


def test_team_page__a_member_who_is_not_admin_sees_it_read_only(django_user_model, alpha, ada):
    runner = person(django_user_model, "rob", (Role.RUNNER, alpha))
    client = login(runner)
    response = client.get(change_url(alpha))
    assert response.status_code == 200
    assert not response.context["has_change_permission"]
    client.post(change_url(alpha), members_form(alpha, [(m, Role.ADMIN, False) for m in rows_of(alpha)]))
    assert roles(alpha) == {"ada": Role.ADMIN, "rob": Role.RUNNER}


def test_team_page__limits_name_and_slug_are_read_only_for_a_team_admin(ada, alpha):
    client = login(ada)
    data = members_form(alpha, [(m, m.role, False) for m in rows_of(alpha)])
    data.update(name="Renamed", slug="renamed", run_starts_per_minute="100000", monthly_token_limit="0")

    client.post(change_url(alpha), data)

    alpha.refresh_from_db()
    assert (alpha.name, alpha.slug, alpha.run_starts_per_minute, alpha.monthly_token_limit) == (
        "Alpha",
        "alpha",
        None,
        None,
    )


# --- members -----------------------------------------------------------------------------------


def test_members__a_team_admin_adds_changes_and_removes(django_user_model, ada, alpha):
    person(django_user_model, "bob", (Role.VIEWER, alpha))
    person(django_user_model, "carol", staff=False)
    client = login(ada)
    ada_row, bob_row = rows_of(alpha)

    response = client.post(
        change_url(alpha),
        members_form(
            alpha, [(ada_row, Role.ADMIN, False), (bob_row, Role.EDITOR, False)], new=[("carol", Role.RUNNER)]
        ),
    )

    assert response.status_code == 302, errors_of(response)
    assert roles(alpha) == {"ada": Role.ADMIN, "bob": Role.EDITOR, "carol": Role.RUNNER}

    ada_row, bob_row, carol_row = rows_of(alpha)
    client.post(
        change_url(alpha),
        members_form(
            alpha, [(ada_row, Role.ADMIN, False), (bob_row, Role.EDITOR, True), (carol_row, Role.RUNNER, False)]
        ),
    )
    assert roles(alpha) == {"ada": Role.ADMIN, "carol": Role.RUNNER}
    assert django_user_model.objects.filter(username="bob").exists()  # out of the team, not deleted


def test_members__an_unknown_username_or_a_member_is_a_field_error(django_user_model, ada, alpha):
    client = login(ada)
    [ada_row] = rows_of(alpha)

    unknown = client.post(
        change_url(alpha), members_form(alpha, [(ada_row, Role.ADMIN, False)], new=[("nobody", "viewer")])
    )
    assert "There is no user named" in errors_of(unknown)
    twice = client.post(change_url(alpha), members_form(alpha, [(ada_row, Role.ADMIN, False)], new=[("ada", "viewer")]))
    assert "already a member" in errors_of(twice)
    assert roles(alpha) == {"ada": Role.ADMIN}


def test_members__another_teams_token_account_cannot_be_added(ada, alpha, beta):
    membership, _ = token_create(team=beta, name="ci", role=Role.RUNNER)
    client = login(ada)
    [ada_row] = rows_of(alpha)

    response = client.post(
        change_url(alpha),
        members_form(alpha, [(ada_row, Role.ADMIN, False)], new=[(membership.user.username, "admin")]),
    )

    assert "There is no user named" in errors_of(response)


@pytest.mark.parametrize("delete", [False, True])
def test_members__the_last_admin_stays(ada, alpha, delete):
    client = login(ada)
    [ada_row] = rows_of(alpha)

    response = client.post(change_url(alpha), members_form(alpha, [(ada_row, Role.EDITOR, delete)]))

    assert "at least one admin" in errors_of(response)
    assert roles(alpha) == {"ada": Role.ADMIN}


def test_members__an_admin_hands_over_in_one_save(django_user_model, ada, alpha):
    person(django_user_model, "bob", (Role.VIEWER, alpha))
    client = login(ada)
    ada_row, bob_row = rows_of(alpha)

    response = client.post(
        change_url(alpha), members_form(alpha, [(ada_row, Role.VIEWER, False), (bob_row, Role.ADMIN, False)])
    )

    assert response.status_code == 302, errors_of(response)
    assert roles(alpha) == {"ada": Role.VIEWER, "bob": Role.ADMIN}


def test_members__another_teams_membership_id_is_not_touched(django_user_model, ada, alpha, beta):
    eve = person(django_user_model, "eve", (Role.ADMIN, beta))
    client = login(ada)
    [ada_row] = rows_of(alpha)
    [eve_row] = rows_of(beta)

    client.post(change_url(alpha), members_form(alpha, [(ada_row, Role.ADMIN, False), (eve_row, Role.VIEWER, True)]))

    assert roles(beta) == {"eve": Role.ADMIN}
    assert eve.memberships.count() == 1


def test_members__token_accounts_are_listed_without_their_key(ada, alpha):
    membership, key = token_create(team=alpha, name="ci", role=Role.RUNNER)

    page = login(ada).get(change_url(alpha)).content.decode()

    assert "ci@alpha" in page and "API token" in page
    assert key not in page


# --- superusers --------------------------------------------------------------------------------


def test_superuser__creates_a_team_with_limits_and_its_slug_then_stays(admin_client, admin_user):
    data = {
        "memberships-TOTAL_FORMS": "1",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "memberships-0-username": admin_user.username,
        "memberships-0-role": Role.ADMIN,
        "name": "Claims ops",
        "slug": "claims-ops",
        "run_starts_per_minute": "50",
        "monthly_token_limit": "1000000",
        "run_retention_days": "7",
    }

    refused = admin_client.post(ADD, data)
    assert refused.status_code == 200
    (message,) = refused.context["adminform"].form.errors["run_retention_days"]
    assert (
        message
        == "Must be 0 (keep every run) or from 8 to 36500 days: a weekly digest reads the runs of its last 7 days."
    )
    data["run_retention_days"] = "90"
    response = admin_client.post(ADD, data)

    assert response.status_code == 302, errors_of(response)
    team = Team.objects.get(slug="claims-ops")
    assert (team.run_starts_per_minute, team.monthly_token_limit, team.run_starts_per_user_per_minute) == (
        50,
        1_000_000,
        None,
    )
    assert team.run_retention_days == 90
    assert roles(team) == {admin_user.username: Role.ADMIN}

    change = members_form(team, [(m, m.role, False) for m in rows_of(team)])
    change.update(slug="moved", run_starts_per_minute="0")
    admin_client.post(change_url(team), change)
    team.refresh_from_db()
    assert (team.slug, team.run_starts_per_minute) == ("claims-ops", 0)


def test_superuser__sees_every_team(admin_client, alpha, beta):
    assert {alpha, beta} <= set(admin_client.get(TEAMS).context["cl"].result_list)


# --- LLM use -----------------------------------------------------------------------------------


def test_team_page__shows_this_months_llm_use_against_the_limit(ada, alpha, beta, settings):
    settings.TEAM_MONTHLY_TOKEN_BUDGET = 0
    alpha.monthly_token_limit = 2_000_000
    alpha.save()
    for team, tokens, cost in ((alpha, 500_000, "0.25"), (alpha, 100_000, "0.05"), (beta, 900_000, "9")):
        llm_call("openai", "gpt-test", "success", prompt=tokens, cost=cost, team=team, owner=ada)

    page = " ".join(login(ada).get(change_url(alpha)).content.decode().split())

    assert "600,000 tokens of 2,000,000 tokens · 2 requests · $0.30" in page
    assert "30 %" in page  # the bar
    assert "<code>GET /api/v1/teams/alpha/usage</code>" in page


def test_team_page__without_a_limit_says_so_and_tiny_costs_are_not_rounded_to_nothing(admin_client, alpha, settings):
    settings.TEAM_MONTHLY_TOKEN_BUDGET = 0
    llm_call("openai", "gpt-test", "success", prompt=10, cost="0.0004", team=alpha)

    page = " ".join(admin_client.get(change_url(alpha)).content.decode().split())

    assert "10 tokens of no limit · 1 request · less than $0.01" in page
