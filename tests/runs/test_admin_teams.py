"""The runs admin per team: a team's staff see and operate its runs only, on every page, filter and picker.

Team "alpha" and team "beta" each have runs; alpha's staff must never see, open or change beta's, whatever the
URL: lists, change pages, the run page's side views, the start page, filters' choices and autocomplete.
"""

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from agentrunner.models import Role
from runs.models import Run, RunStatus
from tests.conftest import join, team_named
from tests.runs.factories import hold_slot, make_run, make_waiting_run
from tests.schedules.factories import schedule

pytestmark = pytest.mark.django_db

RUN_LIST = reverse("admin:runs_run_changelist")
START_URL = reverse("admin:runs_run_start")
AUTOCOMPLETE = reverse("admin:autocomplete")


@pytest.fixture
def alpha():
    return team_named("alpha")


@pytest.fixture
def beta():
    return team_named("beta")


def staff(django_user_model, name, *roles):
    """A staff member with every Django permission (which no longer decides anything) and `roles`:
    (role, team) pairs."""
    user = django_user_model.objects.create_user(username=name, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.all())
    for role, team in roles:
        join(user, role, team)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alpha_runner(django_user_model, alpha):
    return staff(django_user_model, "alice", (Role.RUNNER, alpha))


@pytest.fixture
def alpha_viewer(django_user_model, alpha):
    return staff(django_user_model, "vera", (Role.VIEWER, alpha))


@pytest.fixture
def runs(alpha, beta):
    return {
        "alpha": make_run(RunStatus.COMPLETED, agent_type="pass", team=alpha, input={"who": "alpha"}),
        "beta": make_run(RunStatus.COMPLETED, agent_type="fail", team=beta, input={"who": "beta"}),
    }


def listed(client, url=RUN_LIST, **params) -> list:
    response = client.get(url, params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


# --- lists, change pages, side views -----------------------------------------------------------


def test_run_list__shows_only_the_users_teams_runs(alpha_runner, runs):
    assert listed(alpha_runner) == [runs["alpha"]]
    assert listed(alpha_runner, q=str(runs["beta"].pk)) == []
    assert listed(alpha_runner, q=str(runs["beta"].pk)[:8]) == []


def test_run_page__another_teams_run_does_not_exist(alpha_runner, runs):
    mine = alpha_runner.get(reverse("admin:runs_run_change", args=[runs["alpha"].pk]))
    assert mine.status_code == 200
    theirs = alpha_runner.get(reverse("admin:runs_run_change", args=[runs["beta"].pk]))
    assert theirs.status_code == 302 and theirs.url == reverse("admin:index")  # Django's "doesn't exist"


@pytest.mark.parametrize("view", ["value", "live"])
def test_run_side_views__another_teams_run_is_404(alpha_runner, runs, view):
    url = reverse(f"admin:runs_run_{view}", args=[runs["beta"].pk])
    assert alpha_runner.get(url, {"of": "input"}).status_code == 404
    assert alpha_runner.get(reverse(f"admin:runs_run_{view}", args=[runs["alpha"].pk])).status_code == 200


@pytest.mark.parametrize("button", ["cancel", "rerun", "resume"])
def test_run_buttons__another_teams_run_is_404_and_untouched(alpha_runner, beta, button):
    theirs = make_run(RunStatus.PENDING, team=beta)
    assert alpha_runner.post(reverse(f"admin:runs_run_{button}", args=[theirs.pk])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == RunStatus.PENDING
    assert Run.objects.count() == 1


def test_run_buttons__a_viewer_may_see_but_not_cancel(alpha_viewer, alpha):
    run = make_run(RunStatus.PENDING, team=alpha)
    page = alpha_viewer.get(reverse("admin:runs_run_change", args=[run.pk]))
    assert page.status_code == 200
    assert not page.context["can_operate"]
    assert alpha_viewer.post(reverse("admin:runs_run_cancel", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING


def test_run_buttons__a_runner_cancels_their_teams_run(alpha_runner, alpha):
    run = make_run(RunStatus.PENDING, team=alpha)
    assert alpha_runner.get(reverse("admin:runs_run_change", args=[run.pk])).context["can_operate"]
    alpha_runner.post(reverse("admin:runs_run_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_actions__skip_runs_of_a_team_where_the_user_only_views(django_user_model, alpha, beta):
    client = staff(django_user_model, "mia", (Role.RUNNER, alpha), (Role.VIEWER, beta))
    ours, theirs = make_run(RunStatus.PENDING, team=alpha), make_run(RunStatus.PENDING, team=beta)

    response = client.post(RUN_LIST, {"action": "cancel_runs", "_selected_action": [ours.pk, theirs.pk]}, follow=True)

    ours.refresh_from_db(), theirs.refresh_from_db()
    assert ours.status == RunStatus.CANCELLED
    assert theirs.status == RunStatus.PENDING
    assert any("1 run(s) skipped" in str(m) for m in response.context["messages"])


def test_delete__refused_for_runs_of_a_team_where_the_user_only_views(django_user_model, alpha, beta):
    client = staff(django_user_model, "mia", (Role.RUNNER, alpha), (Role.VIEWER, beta))
    ours, theirs = make_run(RunStatus.COMPLETED, team=alpha), make_run(RunStatus.COMPLETED, team=beta)

    both = {"action": "delete_selected", "_selected_action": [ours.pk, theirs.pk], "post": "yes"}
    assert client.post(RUN_LIST, both).status_code == 403  # Django asks each run's delete permission
    assert Run.objects.count() == 2

    client.post(RUN_LIST, {**both, "_selected_action": [ours.pk]})
    assert list(Run.objects.all()) == [theirs]


def test_waiting_run__names_only_its_teams_slot_holders(alpha_runner, alpha, beta):
    theirs = make_run(RunStatus.RUNNING, team=beta)
    waiting = make_waiting_run(holder_run=theirs)
    Run.objects.filter(pk=waiting.pk).update(team=alpha)

    page = alpha_runner.get(reverse("admin:runs_run_change", args=[waiting.pk])).content.decode()

    assert str(theirs.pk)[:8] not in page
    assert "1 run of other teams" in page


# --- filters and autocomplete ------------------------------------------------------------------


def test_filters__offer_only_the_users_teams_values(alpha_runner, alpha, beta, runs):
    ours = schedule("ours", team=alpha)
    theirs = schedule("theirs-secret", team=beta)
    make_run(RunStatus.COMPLETED, team=alpha, schedule=ours)
    make_run(RunStatus.COMPLETED, team=beta, schedule=theirs)

    response = alpha_runner.get(RUN_LIST)
    page = response.content.decode()

    assert "theirs-secret" not in page
    assert "ours" in page
    agent_filter = next(f for f in response.context["cl"].filter_specs if getattr(f, "field_path", "") == "agent_type")
    assert "fail" not in agent_filter.lookup_choices  # beta's agent is not offered
    # A team filter only for who sees several teams.
    assert not any(getattr(f, "parameter_name", "") == "team" for f in response.context["cl"].filter_specs)


def test_filters__an_other_teams_value_in_the_url_shows_none_of_their_runs(alpha_runner, alpha, beta, runs):
    theirs = schedule("theirs", team=beta)
    make_run(RunStatus.COMPLETED, team=beta, schedule=theirs)
    schedule("ours", team=alpha)
    assert runs["beta"] not in listed(alpha_runner, schedule__id__exact=theirs.pk)
    assert listed(alpha_runner, team=runs["beta"].team_id) == []


def test_team_filter_and_column__for_who_belongs_to_several_teams(django_user_model, alpha, beta, runs):
    client = staff(django_user_model, "mia", (Role.RUNNER, alpha), (Role.VIEWER, beta))
    team_named("gamma")
    make_run(RunStatus.COMPLETED, team=team_named("gamma"))

    response = client.get(RUN_LIST)
    team_filter = next(f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", "") == "team")

    assert [label for _, label in team_filter.lookup_choices] == ["Alpha", "Beta"]  # not gamma
    assert set(response.context["cl"].result_list) == {runs["alpha"], runs["beta"]}
    assert "team_column" in response.context["cl"].list_display
    assert listed(client, team=beta.pk) == [runs["beta"]]
    assert listed(client, team=team_named("gamma").pk) == []


def autocomplete(client, **params):
    return client.get(AUTOCOMPLETE, {"term": "", **params})


def test_autocomplete__runs_and_teams_only_of_the_users_teams(alpha_runner, alpha, runs):
    response = autocomplete(alpha_runner, app_label="runs", model_name="slot", field_name="run")
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [str(runs["alpha"].pk)]

    response = autocomplete(alpha_runner, app_label="runs", model_name="run", field_name="team")
    assert [r["text"] for r in response.json()["results"]] == ["Alpha"]


def test_autocomplete__users_are_not_for_team_staff(alpha_runner):
    response = autocomplete(alpha_runner, app_label="agentrunner", model_name="membership", field_name="user")
    assert response.status_code == 403


def test_popup_picker__lists_only_the_users_teams_runs(alpha_runner, runs):
    assert listed(alpha_runner, _popup=1, _to_field="id") == [runs["alpha"]]


# --- start a run -------------------------------------------------------------------------------


def test_start_page__one_team_has_no_team_choice_and_the_run_goes_there(alpha_runner, alpha):
    response = alpha_runner.get(START_URL)
    assert "team" not in response.context["form"].fields

    alpha_runner.post(START_URL, {"agent_type": "wait", "input": '{"seconds": 0}'})

    assert Run.objects.get().team == alpha


def test_start_page__several_teams_choose_among_those_where_the_user_runs(django_user_model, alpha, beta):
    gamma = team_named("gamma")
    client = staff(django_user_model, "mia", (Role.RUNNER, alpha), (Role.EDITOR, beta), (Role.VIEWER, gamma))

    form = client.get(START_URL).context["form"]
    assert [label for _, label in form.fields["team"].choices] == ["Alpha", "Beta"]

    client.post(START_URL, {"team": beta.pk, "agent_type": "wait", "input": '{"seconds": 0}'})
    assert Run.objects.get().team == beta

    refused = client.post(START_URL, {"team": gamma.pk, "agent_type": "wait", "input": '{"seconds": 0}'})
    assert refused.status_code == 200 and refused.context["form"].errors["team"]
    assert Run.objects.count() == 1


def test_start_page__a_viewer_may_not_start(alpha_viewer):
    assert alpha_viewer.get(START_URL).status_code == 403


def test_start_page__from_another_teams_run_is_not_filled_in(alpha_runner, runs):
    response = alpha_runner.get(START_URL, {"from": runs["beta"].pk})
    assert response.context["source"] is None
    assert "beta" not in response.content.decode()
    mine = alpha_runner.get(START_URL, {"from": runs["alpha"].pk})
    assert mine.context["source"] == runs["alpha"]


# --- the service's own pages -------------------------------------------------------------------

GLOBAL_PAGES = [
    "runs_slot",
    "runs_agentpolicy",
    "agentrunner_ownerbudget",
    "agentrunner_providerbreaker",
    "auth_user",
    "auth_group",
    "authtoken_tokenproxy",
    "django_q_success",
]


@pytest.mark.parametrize("page", GLOBAL_PAGES)
def test_service_settings__superusers_only_whatever_the_django_permissions(django_user_model, alpha, page):
    team_admin = staff(django_user_model, "ada", (Role.ADMIN, alpha))
    assert team_admin.get(reverse(f"admin:{page}_changelist")).status_code == 403


def test_slot_page__superuser_still_sees_every_teams_slots(admin_client, alpha, beta):
    hold_slot(make_run(RunStatus.RUNNING, team=beta))
    assert admin_client.get(reverse("admin:runs_slot_changelist")).status_code == 200


def test_run_list__a_staff_member_of_no_team_sees_no_runs(django_user_model, runs):
    client = staff(django_user_model, "nobody")
    assert client.get(RUN_LIST).status_code == 403
    assert client.get(reverse("admin:runs_run_value", args=[runs["alpha"].pk])).status_code == 403


def test_run_list__superuser_sees_every_team(admin_client, runs):
    assert set(listed(admin_client)) == set(runs.values())


def test_unknown_run_id__is_404_like_another_teams(alpha_runner):
    assert alpha_runner.get(reverse("admin:runs_run_value", args=[uuid.uuid4()])).status_code == 404
