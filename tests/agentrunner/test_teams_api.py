"""Team management API (`/api/v1/teams...`) and the acting team of every other operation (`X-Team`).

Personas: `acme_admin` (admin of acme, viewer of globex), `acme_editor`, `acme_viewer`, `globex_admin`, a user in
no team, and a superuser. The team a /teams operation acts on is the URL's; another team's is a 404.
"""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from agentrunner.llm.budgets import month_bounds
from agentrunner.models import LLMCall, Membership, Role, Team
from agentrunner.ratelimit import run_start_limits
from runs.models import Run
from tests.agentrunner.test_metrics import llm_call
from tests.conftest import client_for, join, team_named

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return team_named("acme")


@pytest.fixture
def globex():
    return team_named("globex")


def member(django_user_model, username: str, *roles: tuple[Team, str], **extra):
    user = django_user_model.objects.create_user(username=username, password="pw", **extra)
    for team, role in roles:
        join(user, role, team)
    return user


@pytest.fixture
def acme_admin(django_user_model, acme, globex):
    return member(django_user_model, "ann", (acme, Role.ADMIN), (globex, Role.VIEWER))


@pytest.fixture
def acme_editor(django_user_model, acme):
    return member(django_user_model, "ed", (acme, Role.EDITOR))


@pytest.fixture
def acme_viewer(django_user_model, acme):
    return member(django_user_model, "vic", (acme, Role.VIEWER))


@pytest.fixture
def globex_admin(django_user_model, globex):
    return member(django_user_model, "gus", (globex, Role.ADMIN))


@pytest.fixture
def loner(django_user_model):
    return django_user_model.objects.create_user(username="loner", password="pw")


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw")


def body(response, status: int) -> dict:
    assert response.status_code == status, response.content
    return response.json() if response.content else {}


def not_found(response) -> dict:
    data = body(response, 404)
    assert data["code"] == "not_found"
    return data


def denied(response) -> dict:
    data = body(response, 403)
    assert data["code"] == "permission_denied"
    return data


# --- GET/POST /teams ------------------------------------------------------------------------------------------


def test_teams_list__my_teams_with_my_role_without_x_team(acme_admin, acme, globex):
    team_named("initech")
    data = body(client_for(acme_admin).get("/api/v1/teams"), 200)
    assert data["count"] == 2
    assert [(t["slug"], t["role"]) for t in data["results"]] == [("acme", "admin"), ("globex", "viewer")]
    assert set(data["results"][0]) == {"id", "slug", "name", "role", "created_at"}


def test_teams_list__paginated(acme_admin):
    data = body(client_for(acme_admin).get("/api/v1/teams?limit=1&offset=1"), 200)
    assert data["count"] == 2 and [t["slug"] for t in data["results"]] == ["globex"]
    assert body(client_for(acme_admin).get("/api/v1/teams?limit=0"), 400)["errors"] == {
        "limit": ["Must be a whole number from 1 to 1000."]
    }


def test_teams_list__superuser_sees_every_team_as_admin_and_a_loner_none(superuser, loner, acme, globex):
    data = body(client_for(superuser).get("/api/v1/teams"), 200)
    assert {t["slug"]: t["role"] for t in data["results"]} == {"acme": "admin", "globex": "admin", "default": "admin"}
    assert body(client_for(loner).get("/api/v1/teams"), 200)["count"] == 0  # not a 403 no_team: nothing to list


def test_teams__anonymous_is_401():
    for path in ("/api/v1/teams", "/api/v1/teams/acme", "/api/v1/teams/acme/members", "/api/v1/teams/acme/tokens"):
        assert body(APIClient().get(path), 401)["code"] == "not_authenticated"


def test_teams_create__superuser_with_a_first_admin(superuser, loner):
    data = body(
        client_for(superuser).post(
            "/api/v1/teams",
            {"name": "Claims", "slug": "claims", "admin": "loner", "monthly_token_limit": 1000},
            format="json",
        ),
        201,
    )
    assert data["slug"] == "claims" and data["monthly_token_limit"] == 1000
    team = Team.objects.get(slug="claims")
    assert Membership.objects.get(team=team).user == loner
    assert Membership.objects.get(team=team).role == Role.ADMIN
    assert body(client_for(loner).get("/api/v1/teams"), 200)["results"][0]["role"] == "admin"


def test_teams_create__superuser_only(acme_admin):
    data = denied(client_for(acme_admin).post("/api/v1/teams", {"name": "Mine", "slug": "mine"}, format="json"))
    assert data["detail"] == "Only a superuser may create a team."
    assert not Team.objects.filter(slug="mine").exists()


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"name": "Acme again", "slug": "acme"}, "slug"),
        ({"name": "Acme", "slug": "acme2"}, "slug"),  # the name is taken (one message for both)
        ({"name": "X", "slug": "not a slug"}, "slug"),
        ({"slug": "x"}, "name"),
        ({"name": "X", "slug": "x", "admin": "nobody"}, "username"),
        ({"name": "X", "slug": "x", "run_starts_per_minute": -1}, "run_starts_per_minute"),
    ],
)
def test_teams_create__bad_input_is_400(superuser, acme, payload, field):
    before = Team.objects.count()
    data = body(client_for(superuser).post("/api/v1/teams", payload, format="json"), 400)
    assert field in data["errors"], data
    assert Team.objects.count() == before


def test_teams_create__a_token_account_cannot_be_the_first_admin(superuser, acme):
    key = body(client_for(superuser).post("/api/v1/teams/acme/tokens", {"name": "ci", "role": "admin"}), 201)["key"]
    username = Token.objects.get(key=key).user.username
    data = body(
        client_for(superuser).post("/api/v1/teams", {"name": "X", "slug": "x", "admin": username}, format="json"), 400
    )
    assert not Team.objects.filter(slug="x").exists()
    assert data["errors"] == {"username": [f"No user {username!r}."]}


# --- GET/PATCH /teams/{slug} ----------------------------------------------------------------------------------


def test_team_detail__a_member_sees_its_limits_and_the_effective_values(acme_viewer, acme, settings):
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 100
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 20
    settings.LLM_REQUESTS_PER_TEAM_PER_MINUTE = 0
    settings.TEAM_MONTHLY_TOKEN_BUDGET = 50
    settings.RUN_RETENTION_DAYS = 90
    acme.run_starts_per_user_per_minute = 5
    acme.llm_requests_per_minute = 0
    acme.save()
    data = body(client_for(acme_viewer).get("/api/v1/teams/acme"), 200)
    assert data["role"] == "viewer"
    assert (data["run_starts_per_minute"], data["run_starts_per_user_per_minute"]) == (None, 5)
    assert (data["llm_requests_per_minute"], data["monthly_token_limit"]) == (0, None)
    assert data["effective_limits"] == {
        "run_starts_per_minute": 100,
        "run_starts_per_user_per_minute": 5,
        "llm_requests_per_minute": 0,
        "monthly_token_limit": 50,
        "run_retention_days": 90,
    }


def test_team_detail__another_team_is_the_same_404_as_a_missing_one(acme_editor, globex):
    api = client_for(acme_editor)
    assert not_found(api.get("/api/v1/teams/globex")) == not_found(api.get("/api/v1/teams/nope")) | {
        "detail": "No team 'globex'."
    }
    not_found(api.patch("/api/v1/teams/globex", {"name": "x"}, format="json"))


def test_team_update__superuser_sets_limits_that_apply_at_once(superuser, acme, acme_admin):
    api = client_for(superuser)
    data = body(
        api.patch(
            "/api/v1/teams/acme",
            {"run_starts_per_minute": 7, "run_starts_per_user_per_minute": 0, "name": "ACME"},
            format="json",
        ),
        200,
    )
    assert (data["name"], data["run_starts_per_minute"], data["effective_limits"]["run_starts_per_minute"]) == (
        "ACME",
        7,
        7,
    )
    acme.refresh_from_db()
    assert [limit for _, limit in run_start_limits(user=acme_admin, team=acme)] == [7, 0]
    data = body(api.patch("/api/v1/teams/acme", {"run_starts_per_minute": None}, format="json"), 200)
    assert data["run_starts_per_minute"] is None
    assert data["effective_limits"]["run_starts_per_minute"] == django_settings.RUN_STARTS_PER_TEAM_PER_MINUTE


def test_team_update__team_admin_is_403_and_changes_nothing(acme_admin, acme):
    data = denied(client_for(acme_admin).patch("/api/v1/teams/acme", {"run_starts_per_minute": 0}, format="json"))
    assert "superuser" in data["detail"]
    acme.refresh_from_db()
    assert acme.run_starts_per_minute is None


@pytest.mark.parametrize(
    "payload",
    [
        {"run_starts_per_minute": -1},
        {"llm_requests_per_minute": "many"},
        {"run_starts_per_user_per_minute": 2**31},
        {"monthly_token_limit": 2**63},
        {"run_retention_days": 7},  # a weekly digest would miss runs
        {"run_retention_days": 36501},
        {"run_starts_per_minute": 1.5},
        {"name": ""},
        {"name": "Globex"},  # taken
    ],
)
def test_team_update__bad_values_are_400(superuser, acme, globex, payload):
    data = body(client_for(superuser).patch("/api/v1/teams/acme", payload, format="json"), 400)
    assert set(data["errors"]) == set(payload)


@pytest.mark.parametrize(("days", "effective"), [(0, 0), (8, 8), (400, 400), (None, 30)])
def test_team_update__run_retention_days_keep_every_run_or_at_least_8(superuser, acme, settings, days, effective):
    settings.RUN_RETENTION_DAYS = 30
    data = body(client_for(superuser).patch("/api/v1/teams/acme", {"run_retention_days": days}, format="json"), 200)
    assert (data["run_retention_days"], data["effective_limits"]["run_retention_days"]) == (days, effective)
    acme.refresh_from_db()
    assert acme.run_retention_days == days


def test_team_update__a_big_monthly_limit_fits(superuser, acme):
    data = body(
        client_for(superuser).patch("/api/v1/teams/acme", {"monthly_token_limit": 2**63 - 1}, format="json"), 200
    )
    assert data["effective_limits"]["monthly_token_limit"] == 2**63 - 1


# --- GET /teams/{slug}/usage -----------------------------------------------------------------------------------


def call_at(when, *, team, owner, prompt, completion, cost):
    call = llm_call("openai", "gpt-test", "success", prompt=prompt, completion=completion, cost=cost, team=team,
                    owner=owner)  # fmt: skip
    LLMCall.objects.filter(pk=call.pk).update(created_at=when)


def test_team_usage__a_member_sees_the_months_totals_and_each_accounts_share(
    acme_viewer, acme_editor, acme, globex, settings
):
    settings.TEAM_MONTHLY_TOKEN_BUDGET = 1000
    now = timezone.now()
    last_month = month_bounds(now)[0] - timedelta(days=1)
    call_at(now, team=acme, owner=acme_editor, prompt=300, completion=100, cost="0.4")
    call_at(now, team=acme, owner=acme_viewer, prompt=50, completion=50, cost="0.1")
    call_at(now, team=acme, owner=acme_editor, prompt=100, completion=0, cost="0.1")
    call_at(now, team=globex, owner=acme_editor, prompt=999, completion=0, cost="9")  # another team's
    call_at(last_month, team=acme, owner=acme_viewer, prompt=7, completion=0, cost="0")  # another month

    data = body(client_for(acme_viewer).get("/api/v1/teams/acme/usage"), 200)

    assert (data["team"], data["month"]) == ("acme", now.strftime("%Y-%m"))
    assert (data["limit"], data["limit_source"], data["used_tokens"], data["remaining_tokens"]) == (
        1000,
        "default",
        600,
        400,
    )
    assert (data["used_ratio"], data["calls"], data["cost_usd"]) == (0.6, 3, "0.60000000")
    assert [(m["username"], m["total_tokens"], m["calls"], m["cost_usd"]) for m in data["members"]] == [
        ("ed", 500, 2, "0.50000000"),
        ("vic", 100, 1, "0.10000000"),
    ]

    earlier = body(client_for(acme_viewer).get(f"/api/v1/teams/acme/usage?month={last_month:%Y-%m}"), 200)
    assert (earlier["used_tokens"], [m["username"] for m in earlier["members"]]) == (7, ["vic"])


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "nov", "2026-11-01", "1899-12", "2100-01"])
def test_team_usage__a_month_that_is_not_yyyy_mm_is_400(acme_viewer, month):
    data = body(client_for(acme_viewer).get("/api/v1/teams/acme/usage", {"month": month}), 400)
    assert data["errors"] == {"month": ["Use YYYY-MM, e.g. 2026-11."]}


def test_team_usage__another_team_is_the_404_of_a_missing_one(acme_viewer, globex):
    not_found(client_for(acme_viewer).get("/api/v1/teams/globex/usage"))


# --- members --------------------------------------------------------------------------------------------------


def test_members__any_member_lists_people_not_tokens(acme_admin, acme_viewer, superuser):
    body(client_for(acme_admin).post("/api/v1/teams/acme/tokens", {"name": "ci", "role": "runner"}), 201)
    data = body(client_for(acme_viewer).get("/api/v1/teams/acme/members"), 200)
    assert [(m["username"], m["role"]) for m in data["results"]] == [("ann", "admin"), ("vic", "viewer")]
    assert data["count"] == 2 and set(data["results"][0]) == {"username", "role", "joined_at"}


def test_members__admin_adds_changes_and_removes(acme_admin, loner, acme):
    api = client_for(acme_admin)
    data = body(api.post("/api/v1/teams/acme/members", {"username": "loner", "role": "runner"}, format="json"), 201)
    assert data["username"] == "loner" and data["role"] == "runner"
    # The new member acts in the team at once (their only team: no X-Team needed).
    assert body(client_for(loner).post("/api/v1/runs", {"agent_type": "pass"}, format="json"), 202)
    assert Run.objects.get(created_by=loner).team == acme

    assert body(api.patch("/api/v1/teams/acme/members/loner", {"role": "viewer"}, format="json"), 200)["role"] == (
        "viewer"
    )
    denied(client_for(loner).post("/api/v1/runs", {"agent_type": "pass"}, format="json"))

    body(api.delete("/api/v1/teams/acme/members/loner"), 204)
    assert not Membership.objects.filter(user=loner).exists()
    assert Run.objects.filter(created_by=loner, team=acme).count() == 1  # their runs stay the team's


def test_members__bad_requests(acme_admin, acme_viewer, loner):
    api = client_for(acme_admin)
    assert body(api.post("/api/v1/teams/acme/members", {"username": "nobody", "role": "runner"}), 400)["errors"] == {
        "username": ["No user 'nobody'."]
    }
    assert "role" in body(api.post("/api/v1/teams/acme/members", {"username": "loner", "role": "owner"}), 400)["errors"]
    assert body(api.post("/api/v1/teams/acme/members", {"username": "vic", "role": "runner"}), 409)["code"] == (
        "already_member"
    )
    assert "role" in body(api.patch("/api/v1/teams/acme/members/vic", {"role": "god"}, format="json"), 400)["errors"]
    assert not_found(api.patch("/api/v1/teams/acme/members/loner", {"role": "admin"}, format="json"))["detail"] == (
        "No member 'loner' in acme."
    )
    not_found(api.delete("/api/v1/teams/acme/members/nobody"))


@pytest.mark.parametrize("persona", ["acme_editor", "acme_viewer"])
def test_members__changes_need_the_admin_role(persona, request, acme_viewer, loner):
    api = client_for(request.getfixturevalue(persona))
    for response in (
        api.post("/api/v1/teams/acme/members", {"username": "loner", "role": "admin"}, format="json"),
        api.patch("/api/v1/teams/acme/members/vic", {"role": "admin"}, format="json"),
        api.delete("/api/v1/teams/acme/members/vic"),
    ):
        assert denied(response)["detail"].startswith("This needs the admin role in team 'acme'")
    assert Membership.objects.get(user=acme_viewer).role == Role.VIEWER
    assert not Membership.objects.filter(user=loner).exists()


def test_members__the_last_admin_stays(acme_admin, acme_viewer):
    api = client_for(acme_admin)
    assert body(api.patch("/api/v1/teams/acme/members/ann", {"role": "editor"}, format="json"), 409)["code"] == (
        "last_admin"
    )
    assert body(api.delete("/api/v1/teams/acme/members/ann"), 409)["code"] == "last_admin"
    body(api.patch("/api/v1/teams/acme/members/vic", {"role": "admin"}, format="json"), 200)
    body(api.patch("/api/v1/teams/acme/members/ann", {"role": "editor"}, format="json"), 200)  # vic is admin now
    assert body(client_for(acme_viewer).delete("/api/v1/teams/acme/members/vic"), 409)["code"] == "last_admin"
    body(client_for(acme_viewer).delete("/api/v1/teams/acme/members/ann"), 204)


def test_members__superuser_manages_any_team(superuser, acme_viewer, acme):
    api = client_for(superuser)
    body(api.patch("/api/v1/teams/acme/members/vic", {"role": "editor"}, format="json"), 200)
    assert body(api.get("/api/v1/teams/acme/members"), 200)["count"] == 1


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/api/v1/teams/globex"),
        ("get", "/api/v1/teams/globex/members"),
        ("post", "/api/v1/teams/globex/members"),
        ("patch", "/api/v1/teams/globex/members/gus"),
        ("delete", "/api/v1/teams/globex/members/gus"),
        ("get", "/api/v1/teams/globex/tokens"),
        ("post", "/api/v1/teams/globex/tokens"),
        ("delete", "/api/v1/teams/globex/tokens/1"),
    ],
)
def test_every_team_operation__a_non_member_gets_404_like_a_missing_team(method, path, acme_editor, globex_admin):
    api = client_for(acme_editor)
    payload = {"username": "ed", "role": "admin", "name": "x"}
    answer = not_found(getattr(api, method)(path, payload, format="json"))
    missing = not_found(getattr(api, method)(path.replace("globex", "nope"), payload, format="json"))
    assert answer == missing | {"detail": "No team 'globex'."}
    assert Membership.objects.get(user=globex_admin).role == Role.ADMIN
    assert not Membership.objects.filter(user=acme_editor, team=globex_admin.memberships.get().team).exists()


# --- tokens ---------------------------------------------------------------------------------------------------


def test_tokens__created_key_acts_at_once_in_its_team_only(acme_admin, acme, globex, globex_admin):
    api = client_for(acme_admin)
    data = body(api.post("/api/v1/teams/acme/tokens", {"name": "nightly-ci", "role": "runner"}, format="json"), 201)
    assert set(data) == {"id", "name", "role", "created_at", "key"}
    assert (data["name"], data["role"]) == ("nightly-ci", "runner")

    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Token {data['key']}")
    run = body(token.post("/api/v1/runs", {"agent_type": "pass"}, format="json"), 202)
    assert Run.objects.get(pk=run["id"]).team == acme
    assert body(token.get("/api/v1/runs"), 200)["count"] == 1
    assert body(token.get("/api/v1/teams"), 200)["results"][0]["slug"] == "acme"
    # Another team, by X-Team or by URL: the same 404 as a team that does not exist.
    not_found(token.get("/api/v1/runs", HTTP_X_TEAM="globex"))
    not_found(token.get("/api/v1/teams/globex/members"))
    body(token.get("/api/v1/runs", HTTP_X_TEAM="acme"), 200)
    # A runner token may start runs, not manage the team.
    denied(token.post("/api/v1/teams/acme/tokens", {"name": "more", "role": "admin"}, format="json"))
    denied(token.post("/api/v1/teams/acme/members", {"username": "gus", "role": "admin"}, format="json"))


def test_tokens__list_shows_no_keys_and_delete_revokes(acme_admin, acme):
    api = client_for(acme_admin)
    created = body(api.post("/api/v1/teams/acme/tokens", {"name": "ci", "role": "viewer"}, format="json"), 201)
    body(api.post("/api/v1/teams/acme/tokens", {"name": "etl", "role": "runner"}, format="json"), 201)
    listed = body(api.get("/api/v1/teams/acme/tokens"), 200)
    assert listed["count"] == 2
    assert [(t["name"], t["role"]) for t in listed["results"]] == [("ci", "viewer"), ("etl", "runner")]
    assert all(set(t) == {"id", "name", "role", "created_at"} for t in listed["results"])
    assert created["key"] not in str(listed)

    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Token {created['key']}")
    body(token.get("/api/v1/runs"), 200)
    body(api.delete(f"/api/v1/teams/acme/tokens/{created['id']}"), 204)
    assert body(token.get("/api/v1/runs"), 401)["code"] == "authentication_failed"
    not_found(api.delete(f"/api/v1/teams/acme/tokens/{created['id']}"))
    assert body(api.get("/api/v1/teams/acme/tokens"), 200)["count"] == 1


def test_tokens__bad_requests(acme_admin):
    api = client_for(acme_admin)
    body(api.post("/api/v1/teams/acme/tokens", {"name": "ci", "role": "runner"}, format="json"), 201)
    assert body(api.post("/api/v1/teams/acme/tokens", {"name": "ci", "role": "viewer"}, format="json"), 400)[
        "errors"
    ] == {"name": ["The team has a token named 'ci'."]}
    for bad in ({"name": "ci@globex", "role": "runner"}, {"name": "x" * 41, "role": "runner"}, {"role": "runner"}):
        assert "name" in body(api.post("/api/v1/teams/acme/tokens", bad, format="json"), 400)["errors"]
    assert "role" in body(api.post("/api/v1/teams/acme/tokens", {"name": "x", "role": "root"}), 400)["errors"]
    not_found(api.delete("/api/v1/teams/acme/tokens/999999"))


def test_tokens__need_the_admin_role_even_to_list(acme_editor):
    api = client_for(acme_editor)
    denied(api.get("/api/v1/teams/acme/tokens"))
    denied(api.post("/api/v1/teams/acme/tokens", {"name": "ci", "role": "runner"}, format="json"))
    denied(api.delete("/api/v1/teams/acme/tokens/1"))


# --- privilege escalation ---------------------------------------------------------------------------------------


def test_escalation__a_team_admin_cannot_widen_another_teams_token_or_take_it(acme_admin, globex_admin, globex):
    globex_token = body(
        client_for(globex_admin).post("/api/v1/teams/globex/tokens", {"name": "ci", "role": "admin"}, format="json"),
        201,
    )
    username = Token.objects.get(key=globex_token["key"]).user.username
    api = client_for(acme_admin)
    # Adding globex's token account to acme would let its key act in acme: refused as an unknown user.
    assert body(api.post("/api/v1/teams/acme/members", {"username": username, "role": "admin"}), 400)["errors"] == {
        "username": [f"No user {username!r}."]
    }
    # Nor can acme's admin revoke, or reach through acme's URL, globex's token.
    not_found(api.delete(f"/api/v1/teams/acme/tokens/{globex_token['id']}"))
    denied(api.delete(f"/api/v1/teams/globex/tokens/{globex_token['id']}"))  # a viewer of globex
    assert Membership.objects.filter(pk=globex_token["id"]).exists()


def test_escalation__the_token_endpoint_cannot_delete_a_person(acme_admin, acme_viewer, django_user_model):
    membership = Membership.objects.get(user=acme_viewer)
    not_found(client_for(acme_admin).delete(f"/api/v1/teams/acme/tokens/{membership.pk}"))
    assert django_user_model.objects.filter(pk=acme_viewer.pk).exists()
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_escalation__an_admin_elsewhere_cannot_change_their_role_here(acme_admin, globex_admin, globex):
    api = client_for(acme_admin)  # admin of acme, viewer of globex
    for headers in ({}, {"HTTP_X_TEAM": "acme"}):  # the URL's team decides, not X-Team
        denied(api.patch("/api/v1/teams/globex/members/ann", {"role": "admin"}, format="json", **headers))
        denied(api.post("/api/v1/teams/globex/members", {"username": "ann", "role": "admin"}, **headers))
        denied(api.delete("/api/v1/teams/globex/members/gus", **headers))
        denied(api.post("/api/v1/teams/globex/tokens", {"name": "mine", "role": "admin"}, **headers))
    assert Membership.objects.get(user=acme_admin, team=globex).role == Role.VIEWER
    assert not globex.memberships.filter(is_token=True).exists()


def test_escalation__a_team_admin_cannot_reach_members_of_another_team_through_their_own(acme_admin, globex_admin):
    api = client_for(acme_admin)
    not_found(api.patch("/api/v1/teams/acme/members/gus", {"role": "viewer"}, format="json"))
    not_found(api.delete("/api/v1/teams/acme/members/gus"))
    assert Membership.objects.get(user=globex_admin).role == Role.ADMIN


def test_escalation__an_admin_token_manages_its_own_team_only(acme_admin, globex_admin, loner):
    key = body(client_for(acme_admin).post("/api/v1/teams/acme/tokens", {"name": "bot", "role": "admin"}), 201)["key"]
    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    body(token.post("/api/v1/teams/acme/members", {"username": "loner", "role": "viewer"}, format="json"), 201)
    not_found(token.post("/api/v1/teams/globex/members", {"username": "loner", "role": "viewer"}, format="json"))
    denied(token.post("/api/v1/teams", {"name": "Bots", "slug": "bots"}, format="json"))
    denied(token.patch("/api/v1/teams/acme", {"run_starts_per_minute": 0}, format="json"))
    # A token account is not a person: it cannot be given a role through /members, nor removed there.
    username = Token.objects.get(key=key).user.username
    not_found(client_for(acme_admin).patch(f"/api/v1/teams/acme/members/{username}", {"role": "viewer"}))
    assert Membership.objects.get(user__username=username).role == Role.ADMIN


def test_teams_operations__ignore_x_team(acme_admin):
    api = client_for(acme_admin)
    body(api.get("/api/v1/teams/acme/members", HTTP_X_TEAM="globex"), 200)
    body(api.get("/api/v1/teams/acme", HTTP_X_TEAM="nope"), 200)
    body(api.get("/api/v1/teams", HTTP_X_TEAM="nope"), 200)


# --- the acting team of the other operations (X-Team) ---------------------------------------------------------


def test_x_team__two_teams_without_header_is_400_team_required(acme_admin):
    data = body(client_for(acme_admin).get("/api/v1/runs"), 400)
    assert data == {
        "detail": "You belong to several teams (acme, globex): say which one in the X-Team header.",
        "code": "team_required",
        "errors": {},
    }
    body(client_for(acme_admin).get("/api/v1/runs", HTTP_X_TEAM="globex"), 200)


def test_x_team__no_team_is_403_no_team(loner):
    assert body(client_for(loner).get("/api/v1/runs"), 403)["code"] == "no_team"


def test_x_team__unknown_or_not_mine_is_404(acme_editor, globex):
    api = client_for(acme_editor)
    assert not_found(api.get("/api/v1/runs", HTTP_X_TEAM="nope"))["detail"] == "No team 'nope'."
    assert not_found(api.get("/api/v1/runs", HTTP_X_TEAM="globex"))["detail"] == "No team 'globex'."


def test_x_team__the_role_is_the_one_in_the_named_team(acme_admin):
    api = client_for(acme_admin)
    body(api.post("/api/v1/runs", {"agent_type": "pass"}, format="json", HTTP_X_TEAM="acme"), 202)
    denied(api.post("/api/v1/runs", {"agent_type": "pass"}, format="json", HTTP_X_TEAM="globex"))  # a viewer there


# --- the OpenAPI schema -----------------------------------------------------------------------------------------


def test_schema__x_team_and_its_errors_on_team_acting_operations_only():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    paths = schema["paths"]

    def has_header(path: str, method: str) -> bool:
        return any(p["name"] == "X-Team" for p in paths[path][method].get("parameters", []))

    assert has_header("/api/v1/runs", "get") and has_header("/api/v1/runs", "post")
    assert has_header("/api/v1/flows/{slug}", "patch")
    assert not has_header("/api/v1/health", "get")
    assert not has_header("/api/v1/agents/{agent_type}", "patch")  # superusers only, shared by every team
    assert not any(has_header(path, m) for path in paths if path.startswith("/api/v1/teams") for m in paths[path])
    responses = paths["/api/v1/runs"]["get"]["responses"]
    examples = {
        status: {e["value"]["code"] for e in responses[status]["content"]["application/json"]["examples"].values()}
        for status in ("400", "403", "404")
    }
    assert "team_required" in examples["400"] and "no_team" in examples["403"] and "not_found" in examples["404"]
