"""The schedule and slot admin by team: a team's staff see and change only its schedules and their slots."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django_q.models import Schedule as QSchedule

from agentrunner.models import Role
from agentrunner.teams.services import team_default
from schedules.models import FireStatus, Schedule, ScheduleFire
from tests.conftest import filter_choices, staff_member, team_named
from tests.flows.factories import flow
from tests.schedules.test_admin import ADD, FIRES, LIST, agent_schedule, change_url, form_data

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture
def beta():
    return team_named("beta")


@pytest.fixture
def theirs(beta) -> Schedule:
    """Team beta's schedule of team beta's flow, with a slot, named so that any page showing them can be told."""
    schedule = agent_schedule(
        name="Beta secret schedule", team=beta, agent_type="", flow=flow(slug="beta-flow", team=beta)
    )
    ScheduleFire.objects.create(schedule=schedule, intended_at=T0, status=FireStatus.SKIPPED_MISSED)
    return schedule


@pytest.fixture
def ours() -> Schedule:
    schedule = agent_schedule(name="Our schedule", agent_type="", flow=flow(slug="our-flow"))
    ScheduleFire.objects.create(schedule=schedule, intended_at=T0, status=FireStatus.SKIPPED_MISSED)
    return schedule


@pytest.fixture
def editor_client(client, staff_user):
    """A staff editor of the default team only."""
    client.force_login(staff_user)
    return client


def fire_url(fire, view="change") -> str:
    return reverse(f"admin:schedules_schedulefire_{view}", args=[fire.pk])


def test_lists__show_only_the_teams_schedules_and_slots(editor_client, ours, theirs):
    for url in (LIST, FIRES, LIST + "?q=beta", FIRES + "?q=beta"):
        page = editor_client.get(url).content.decode()
        assert "Beta secret schedule" not in page and "beta-flow" not in page, url
    assert "Our schedule" in editor_client.get(LIST).content.decode()
    assert "Our schedule" in editor_client.get(FIRES).content.decode()


def test_filters__offer_only_the_teams_flows_and_schedules(editor_client, ours, theirs):
    another = agent_schedule(name="Another of ours")
    ScheduleFire.objects.create(schedule=another, intended_at=T0, status=FireStatus.SKIPPED_MISSED)
    flow_choices = filter_choices(editor_client, LIST)
    assert any("our-flow" in c for c in flow_choices) and not any("beta-flow" in c for c in flow_choices)
    fire_choices = filter_choices(editor_client, FIRES)
    assert "Our schedule" in fire_choices and "Beta secret schedule" not in fire_choices
    # Naming another team's schedule or flow in the address finds nothing.
    for url in (f"{FIRES}?schedule__id__exact={theirs.pk}", f"{LIST}?flow__id__exact={theirs.flow_id}"):
        assert "Beta secret schedule" not in editor_client.get(url).content.decode()


def test_another_teams_schedule_and_slot__every_page_is_missing(editor_client, theirs):
    fire = theirs.fires.get()
    for url in (
        change_url(theirs),
        reverse("admin:schedules_schedule_history", args=[theirs.pk]),
        reverse("admin:schedules_schedule_delete", args=[theirs.pk]),
        fire_url(fire),
        fire_url(fire, "history"),
    ):
        response = editor_client.get(url)
        assert response.status_code == 302, url  # Django's answer for an object that does not exist
        assert "Beta secret schedule" not in editor_client.get(response.url).content.decode()


def test_another_teams_schedule__cannot_be_changed_paused_or_deleted(editor_client, theirs):
    editor_client.post(change_url(theirs), form_data(name="Renamed"))
    editor_client.post(LIST, {"action": "pause_schedules", "_selected_action": [theirs.pk]})
    editor_client.post(LIST, {"action": "delete_selected", "_selected_action": [theirs.pk], "post": "yes"})
    editor_client.post(reverse("admin:schedules_schedule_delete", args=[theirs.pk]), {"post": "yes"})

    theirs.refresh_from_db()
    assert (theirs.name, theirs.enabled) == ("Beta secret schedule", True)


def test_add__offers_only_the_teams_flows_and_refuses_another_teams(editor_client, ours, theirs, beta):
    page = editor_client.get(ADD).content.decode()
    assert "our-flow" in page or "Our" in page
    assert "beta-flow" not in page and f'value="{theirs.flow_id}"' not in page
    assert 'type="hidden" name="team"' in page

    response = editor_client.post(ADD, form_data(name="Sneaky", agent_type="", flow=theirs.flow_id, team=beta.pk))

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Schedule.objects.filter(name="Sneaky").exists()
    created = editor_client.post(ADD, form_data(name="Fine", team=beta.pk))
    assert created.status_code == 302 and Schedule.objects.get(name="Fine").team == team_default()


def test_add__the_same_name_as_another_teams_schedule_is_free(editor_client, theirs):
    response = editor_client.post(ADD, form_data(name="Beta secret schedule"))
    assert response.status_code == 302

    taken = editor_client.post(ADD, form_data(name="Beta secret schedule"))
    assert "A schedule named &#x27;Beta secret schedule&#x27; already exists in this team." in taken.content.decode()


def test_editor_of_two_teams__a_flow_of_the_other_team_is_a_clear_error(client, django_user_model, ours, theirs, beta):
    both = staff_member(django_user_model, "both", (Role.EDITOR, team_default()), (Role.EDITOR, beta))
    client.force_login(both)

    page = client.get(ADD).content.decode()
    assert '<select name="team"' in page
    assert "our-flow (Default team)" in page and "beta-flow (Beta)" in page
    response = client.post(ADD, form_data(name="Mixed", agent_type="", flow=ours.flow_id, team=beta.pk))

    assert response.status_code == 200
    assert "This flow is of team Default team: a schedule of team Beta can start only its flows." in (
        response.content.decode()
    )
    assert not Schedule.objects.filter(name="Mixed").exists()
    fine = client.post(ADD, form_data(name="Beta's own", agent_type="", flow=theirs.flow_id, team=beta.pk))
    assert fine.status_code == 302 and Schedule.objects.get(name="Beta's own").team == beta
    assert "field-team_column" in client.get(LIST).content.decode()
    assert "field-team_display" in client.get(FIRES).content.decode()


def test_pause__of_a_teams_schedules_only_where_the_user_edits(client, django_user_model, ours, theirs, beta):
    user = staff_member(django_user_model, "mixed", (Role.EDITOR, team_default()), (Role.VIEWER, beta))
    client.force_login(user)

    response = client.post(LIST, {"action": "pause_schedules", "_selected_action": [ours.pk, theirs.pk]}, follow=True)

    ours.refresh_from_db()
    theirs.refresh_from_db()
    assert (ours.enabled, theirs.enabled) == (False, True)
    messages = [str(m) for m in response.context["messages"]]
    assert any("Not paused (you may only read them in their team): Beta secret schedule." in m for m in messages)


def test_viewers__read_schedules_but_cannot_change_them(client, django_user_model, ours):
    viewer = staff_member(django_user_model, "viewer", (Role.VIEWER, team_default()))
    client.force_login(viewer)

    page = client.get(change_url(ours))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.get(ADD).status_code == 403
    assert client.post(change_url(ours), form_data(name="Renamed")).status_code == 403
    client.post(LIST, {"action": "pause_schedules", "_selected_action": [ours.pk]})
    ours.refresh_from_db()
    assert (ours.name, ours.enabled) == ("Our schedule", True)


def test_autocomplete_of_schedules__offers_only_the_teams(editor_client, ours, theirs):
    response = editor_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "digests", "model_name": "digestsubscription", "field_name": "schedule", "term": ""},
    )
    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["Our schedule"]


def test_django_q_rows__are_for_superusers_only(editor_client, ours):
    row = QSchedule.objects.get(pk=ours.q_schedule_id)
    assert editor_client.get(reverse("admin:django_q_schedule_changelist")).status_code == 403
    assert editor_client.get(reverse("admin:django_q_schedule_change", args=[row.pk])).status_code in (302, 403)
