"""The digest and delivery admin by team: a team's staff see and change only its digests and their deliveries."""

import pytest
from django.urls import reverse

from agentrunner.models import Role
from agentrunner.teams.services import team_default
from digests.models import DeliveryStatus, DigestDelivery, DigestSubscription
from tests.conftest import filter_choices, staff_member, team_named
from tests.digests.test_admin import (
    DELIVERY_LIST,
    DIGEST_ADD,
    DIGEST_LIST,
    NEEDS_DECISION,
    change_url,
    delivery,
    delivery_url,
    form_data,
    make_digest,
)
from tests.flows.factories import flow
from tests.schedules.factories import schedule

pytestmark = pytest.mark.django_db


@pytest.fixture
def beta():
    return team_named("beta")


@pytest.fixture
def theirs(beta) -> DigestSubscription:
    """Team beta's digest, with a failed delivery, named so that any page showing them can be told."""
    digest = make_digest("Beta secret digest", team=beta, agent_type="", flow=flow(slug="beta-flow", team=beta))
    delivery(digest, DeliveryStatus.FAILED)
    return digest


@pytest.fixture
def ours() -> DigestSubscription:
    digest = make_digest("Our digest", agent_type="", flow=flow(slug="our-flow"))
    delivery(digest, DeliveryStatus.FAILED)
    return digest


@pytest.fixture
def editor_client(client, staff_user):
    """A staff editor of the default team only."""
    client.force_login(staff_user)
    return client


def test_lists__show_only_the_teams_digests_and_deliveries(editor_client, ours, theirs):
    for url in (DIGEST_LIST, DELIVERY_LIST, NEEDS_DECISION, DELIVERY_LIST + "?q=beta", DIGEST_LIST + "?q=beta"):
        page = editor_client.get(url).content.decode()
        assert "Beta secret" not in page, url
    assert "Our digest" in editor_client.get(DIGEST_LIST).content.decode()
    assert "Our digest" in editor_client.get(NEEDS_DECISION).content.decode()
    # The "needs a decision" count is of the team's deliveries: one, not two.
    assert editor_client.get(DIGEST_LIST).context["needs_decision_count"] == 1
    assert editor_client.get(DELIVERY_LIST).context["needs_decision_count"] == 1


def test_delivery_filter__offers_only_the_teams_digests(editor_client, ours, theirs):
    delivery(make_digest("Another of ours"), DeliveryStatus.SENT)

    choices = filter_choices(editor_client, DELIVERY_LIST)

    assert "Our digest" in choices and "Another of ours" in choices and "Beta secret digest" not in choices
    page = editor_client.get(f"{DELIVERY_LIST}?subscription__id__exact={theirs.pk}").content.decode()
    assert "Beta secret" not in page


def test_another_teams_digest__every_page_is_missing(editor_client, theirs):
    for url in (
        change_url(theirs),
        reverse("admin:digests_digestsubscription_history", args=[theirs.pk]),
        reverse("admin:digests_digestsubscription_delete", args=[theirs.pk]),
    ):
        response = editor_client.get(url)
        assert response.status_code == 302, url  # Django's answer for an object that does not exist
        assert "Beta secret" not in editor_client.get(response.url).content.decode()
    assert editor_client.get(reverse("admin:digests_digestsubscription_preview", args=[theirs.pk])).status_code == 404
    assert editor_client.post(reverse("admin:digests_digestsubscription_send", args=[theirs.pk])).status_code == 404
    assert theirs.deliveries.count() == 1  # nothing was sent


def test_another_teams_delivery__every_page_and_decision_is_missing(editor_client, theirs):
    failed = theirs.deliveries.get()
    response = editor_client.get(delivery_url(failed))
    assert response.status_code == 302 and "Beta secret" not in editor_client.get(response.url).content.decode()
    for view in ("email", "resend", "mark_sent"):
        assert editor_client.post(delivery_url(failed, view)).status_code == 404, view
    for action in ("resend_selected", "mark_sent_selected"):
        editor_client.post(DELIVERY_LIST, {"action": action, "_selected_action": [failed.pk], "post": "yes"})
    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.FAILED


def test_another_teams_digest__cannot_be_changed_or_deleted(editor_client, theirs):
    editor_client.post(change_url(theirs), form_data(name="Renamed"))
    editor_client.post(DIGEST_LIST, {"action": "delete_selected", "_selected_action": [theirs.pk], "post": "yes"})
    theirs.refresh_from_db()
    assert theirs.name == "Beta secret digest"


def test_add__offers_only_the_teams_flows_and_schedules(editor_client, ours, theirs, beta):
    beta_schedule = schedule(name="Beta secret schedule", team=beta)
    schedule(name="Our schedule")

    page = editor_client.get(DIGEST_ADD).content.decode()

    assert "our-flow" in page and "Our schedule" in page
    assert "beta-flow" not in page and "Beta secret schedule" not in page
    assert 'type="hidden" name="team"' in page
    response = editor_client.post(DIGEST_ADD, form_data(name="Sneaky", agent_type="", schedule=beta_schedule.pk))
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    created = editor_client.post(DIGEST_ADD, form_data(name="Beta secret digest", team=beta.pk))
    assert created.status_code == 302  # the same name as another team's digest is free
    assert DigestSubscription.objects.get(name="Beta secret digest", team=team_default())


def test_editor_of_two_teams__a_source_of_the_other_team_is_a_clear_error(
    client, django_user_model, ours, theirs, beta
):
    both = staff_member(django_user_model, "both", (Role.EDITOR, team_default()), (Role.EDITOR, beta))
    client.force_login(both)

    page = client.get(DIGEST_ADD).content.decode()
    assert '<select name="team"' in page and "beta-flow (Beta)" in page
    response = client.post(DIGEST_ADD, form_data(name="Mixed", agent_type="", flow=ours.flow_id, team=beta.pk))

    assert response.status_code == 200
    assert "This flow is of team Default team: a digest of team Beta reports only its own." in (
        response.content.decode()
    )
    fine = client.post(DIGEST_ADD, form_data(name="Beta own", agent_type="", flow=theirs.flow_id, team=beta.pk))
    assert fine.status_code == 302 and DigestSubscription.objects.get(name="Beta own").team == beta
    assert "field-team_display" in client.get(DELIVERY_LIST).content.decode()
    taken = client.post(DIGEST_ADD, form_data(name="Beta own", team=beta.pk))
    assert "A digest named &#x27;Beta own&#x27; already exists in this team." in taken.content.decode()


def test_decisions__only_in_the_teams_where_the_user_edits(client, django_user_model, ours, theirs, beta):
    user = staff_member(django_user_model, "mixed", (Role.EDITOR, team_default()), (Role.VIEWER, beta))
    client.force_login(user)
    our_failed, their_failed = ours.deliveries.get(), theirs.deliveries.get()

    confirm = client.post(
        DELIVERY_LIST, {"action": "mark_sent_selected", "_selected_action": [our_failed.pk, their_failed.pk]}
    )
    assert "1 selected delivery is left out: you may only read the digests of its team." in confirm.content.decode()
    client.post(
        DELIVERY_LIST,
        {"action": "mark_sent_selected", "_selected_action": [our_failed.pk, their_failed.pk], "post": "yes"},
    )
    assert client.post(delivery_url(their_failed, "resend")).status_code == 403
    assert delivery_url(their_failed, "resend") not in client.get(delivery_url(their_failed)).content.decode()

    statuses = dict(DigestDelivery.objects.values_list("pk", "status"))
    assert statuses == {our_failed.pk: DeliveryStatus.SENT, their_failed.pk: DeliveryStatus.FAILED}


def test_viewers__read_digests_but_cannot_change_or_send_them(client, django_user_model, ours):
    viewer = staff_member(django_user_model, "viewer", (Role.VIEWER, team_default()))
    client.force_login(viewer)

    page = client.get(change_url(ours))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.get(reverse("admin:digests_digestsubscription_preview", args=[ours.pk])).status_code == 200
    assert client.get(DIGEST_ADD).status_code == 403
    assert client.post(change_url(ours), form_data(name="Renamed")).status_code == 403
    assert client.post(reverse("admin:digests_digestsubscription_send", args=[ours.pk])).status_code == 403
    ours.refresh_from_db()
    assert ours.name == "Our digest" and ours.deliveries.count() == 1


def test_autocomplete_of_digests__offers_only_the_teams(editor_client, ours, theirs):
    response = editor_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "digests", "model_name": "digestdelivery", "field_name": "subscription", "term": ""},
    )
    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["Our digest"]
