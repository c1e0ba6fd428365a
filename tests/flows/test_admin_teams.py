"""The flow admin by team: a team's staff see and change only its flows; the role decides what they may do."""

import json

import pytest
from django.urls import reverse

from agentrunner.models import Role
from agentrunner.teams.services import team_default
from flows.models import Flow
from runs.models import Run
from tests.conftest import staff_member, team_named
from tests.flows.test_admin import DEFINITION, FLOW_ADD, FLOW_LIST, change_url, form_data, make_flow
from tests.flows.test_admin import run_url as run_now_url

pytestmark = pytest.mark.django_db

CHECK = reverse("admin:flows_flow_check")


@pytest.fixture
def beta():
    return team_named("beta")


@pytest.fixture
def theirs(beta) -> Flow:
    """Team beta's flow, named so that any page showing it can be told."""
    return make_flow(slug="beta-secret", name="Beta secret flow", team=beta)


@pytest.fixture
def editor_client(client, staff_user):
    """A staff editor of the default team only."""
    client.force_login(staff_user)
    return client


def test_list__shows_only_the_teams_flows(editor_client, theirs):
    make_flow(slug="ours", name="Our flow")

    page = editor_client.get(FLOW_LIST).content.decode()

    assert "Our flow" in page
    assert "Beta secret flow" not in page and "beta-secret" not in page
    searched = editor_client.get(FLOW_LIST, {"q": "beta"}).content.decode()
    assert "Beta secret flow" not in searched and "0 flows" in searched


def test_another_teams_flow__every_page_of_it_is_missing(editor_client, theirs):
    for url in (
        change_url(theirs),
        reverse("admin:flows_flow_history", args=[theirs.pk]),
        reverse("admin:flows_flow_delete", args=[theirs.pk]),
    ):
        response = editor_client.get(url)
        # Django's answer for an object that does not exist: back to the index, saying so.
        assert response.status_code == 302, url
        assert "Beta secret flow" not in editor_client.get(response.url).content.decode()
    assert editor_client.get(run_now_url(theirs)).status_code == 404
    assert editor_client.post(run_now_url(theirs), {"input": "{}"}).status_code == 404
    assert not Run.objects.exists()


def test_another_teams_flow__cannot_be_changed_or_deleted(editor_client, theirs):
    editor_client.post(change_url(theirs), form_data(DEFINITION, slug="beta-secret", name="Renamed"))
    editor_client.post(reverse("admin:flows_flow_delete", args=[theirs.pk]), {"post": "yes"})
    editor_client.post(FLOW_LIST, {"action": "delete_selected", "_selected_action": [theirs.pk], "post": "yes"})

    theirs.refresh_from_db()
    assert theirs.name == "Beta secret flow"


def test_add__a_new_flow_joins_the_only_team_the_user_edits_whatever_is_posted(editor_client, theirs, beta):
    page = editor_client.get(FLOW_ADD).content.decode()
    assert 'type="hidden" name="team"' in page and "Beta" not in page

    response = editor_client.post(FLOW_ADD, {**form_data(DEFINITION, slug="new-one"), "team": beta.pk})

    assert response.status_code == 302
    assert Flow.objects.get(slug="new-one").team == team_default()


def test_add__the_same_slug_as_another_teams_flow_is_free(editor_client, theirs):
    response = editor_client.post(FLOW_ADD, form_data(DEFINITION, slug="beta-secret"))

    assert response.status_code == 302
    assert set(Flow.objects.filter(slug="beta-secret").values_list("team__slug", flat=True)) == {"default", "beta"}


def test_editor_of_two_teams__chooses_the_team_and_sees_it_in_the_list(client, django_user_model, theirs, beta):
    both = staff_member(django_user_model, "both", (Role.EDITOR, team_default()), (Role.EDITOR, beta))
    client.force_login(both)
    make_flow(slug="ours", name="Our flow")

    add_page = client.get(FLOW_ADD).content.decode()
    assert '<select name="team"' in add_page and ">Beta</option>" in add_page
    list_page = client.get(FLOW_LIST).content.decode()
    assert "Beta secret flow" in list_page and "field-team_column" in list_page
    only_beta = client.get(FLOW_LIST, {"team": beta.pk}).content.decode()
    assert "Beta secret flow" in only_beta and "Our flow" not in only_beta

    response = client.post(FLOW_ADD, {**form_data(DEFINITION, slug="for-beta"), "team": beta.pk})
    assert response.status_code == 302 and Flow.objects.get(slug="for-beta").team == beta


def test_editor_of_one_team_and_viewer_of_another__adds_only_to_the_first(client, django_user_model, theirs, beta):
    user = staff_member(django_user_model, "mixed", (Role.EDITOR, team_default()), (Role.VIEWER, beta))
    client.force_login(user)

    assert "Beta secret flow" in client.get(FLOW_LIST).content.decode()  # seen: a viewer of beta
    assert 'type="hidden" name="team"' in client.get(FLOW_ADD).content.decode()  # one team to add to
    client.post(change_url(theirs), form_data(DEFINITION, slug="beta-secret", name="Renamed"))
    client.post(FLOW_LIST, {"action": "delete_selected", "_selected_action": [theirs.pk], "post": "yes"})
    theirs.refresh_from_db()
    assert theirs.name == "Beta secret flow"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.RUNNER])
def test_viewers_and_runners__read_flows_but_cannot_change_them(client, django_user_model, role):
    flow = make_flow()
    user = staff_member(django_user_model, "reader", (role, team_default()))
    client.force_login(user)

    page = client.get(change_url(flow))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.get(FLOW_ADD).status_code == 403
    assert client.post(change_url(flow), form_data(DEFINITION, name="Renamed")).status_code == 403
    assert client.post(reverse("admin:flows_flow_delete", args=[flow.pk]), {"post": "yes"}).status_code == 403
    assert client.post(CHECK, json.dumps({"text": "{}"}), content_type="application/json").status_code == 403
    flow.refresh_from_db()
    assert flow.name == "Review claims"


def test_run_now__a_runner_of_the_team_starts_a_run_of_the_team(client, django_user_model):
    flow = make_flow()
    runner = staff_member(django_user_model, "runner", (Role.RUNNER, team_default()))
    client.force_login(runner)

    assert f'href="{run_now_url(flow)}"' in client.get(change_url(flow)).content.decode()
    response = client.post(run_now_url(flow), {"input": json.dumps({"claim": 10})})

    assert response.status_code == 302
    assert Run.objects.get().team == team_default()


def test_staff_of_no_team__see_no_flow_pages(client, django_user_model):
    flow = make_flow()
    client.force_login(staff_member(django_user_model, "nobody"))

    assert client.get(FLOW_LIST).status_code == 403
    assert client.get(change_url(flow)).status_code in (302, 403)
    assert client.get(run_now_url(flow)).status_code == 404


def test_autocomplete_of_flows__offers_only_the_teams(editor_client, theirs):
    make_flow(slug="ours", name="Our flow")

    for app_label, model_name in (("schedules", "schedule"), ("digests", "digestsubscription")):
        response = editor_client.get(
            reverse("admin:autocomplete"),
            {"app_label": app_label, "model_name": model_name, "field_name": "flow", "term": ""},
        )
        assert response.status_code == 200
        assert [r["text"] for r in response.json()["results"]] == ["Our flow"]


def test_change_page__names_the_team_only_to_who_sees_several(editor_client, client, django_user_model, beta):
    flow = make_flow()
    assert "field-team" not in editor_client.get(change_url(flow)).content.decode()

    both = staff_member(django_user_model, "both", (Role.EDITOR, team_default()), (Role.VIEWER, beta))
    client.force_login(both)
    page = client.get(change_url(flow))
    assert "field-team" in page.content.decode() and "team" not in page.context["adminform"].form.fields
