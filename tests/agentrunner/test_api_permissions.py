"""Who sees what (agentrunner.api.ModelPermissions): flows, schedules and digests are read with their Django view
permission, not by being signed in; inline flows and a user's own runs stay open to every user.

Personas: an outsider (signed in, no permission), staff without permissions (is_staff alone grants nothing), a
viewer (only the three view permissions) and a superuser.
"""

from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from digests.models import DeliveryStatus, DigestDelivery
from runs.models import Run
from schedules.models import FireStatus, ScheduleFire
from tests.conftest import client_for, grant
from tests.digests.factories import digest
from tests.flows.factories import chain, flow
from tests.schedules.factories import schedule

pytestmark = pytest.mark.django_db

# What staff wrote into a task's input, a schedule's input and a digest's recipients.
SECRET = "Bearer sk-live-7f3a9c"
RECIPIENT = "cfo@example.com"
VIEW_PERMISSIONS = ("flows.view_flow", "schedules.view_schedule", "digests.view_digestsubscription")

LISTS = {
    "/api/v1/flows": "Seeing flows needs the flows.view_flow permission.",
    "/api/v1/schedules": "Seeing schedules needs the schedules.view_schedule permission.",
    "/api/v1/digests": "Seeing digests needs the digests.view_digestsubscription permission.",
}
DETAILS = [
    "/api/v1/flows/{flow}",
    "/api/v1/flows/{flow}/versions",
    "/api/v1/schedules/{schedule}",
    "/api/v1/schedules/{schedule}/fires",
    "/api/v1/digests/{digest}",
    "/api/v1/digests/{digest}/deliveries",
    "/api/v1/digests/{digest}/preview",
]
# The same paths for objects that do not exist: a hidden object must answer exactly like these.
MISSING = {"flow": "ghost", "schedule": 999_999, "digest": 999_999}


@pytest.fixture
def stored(staff_user):
    """A flow, a schedule and a digest with their secrets, a delivery and a fire; ids by name for the paths."""
    payroll = flow(slug="payroll", definition=chain(("call", "pass", {"authorization": SECRET})), owner=staff_user)
    nightly = schedule(name="Nightly payroll", flow=payroll, input={"authorization": SECRET}, created_by=staff_user)
    mailed = digest(name="Payroll, daily", flow=payroll, recipients=RECIPIENT, created_by=staff_user)
    now = timezone.now()
    DigestDelivery.objects.create(
        subscription=mailed, period_key="k", period_start=now, period_end=now, status=DeliveryStatus.SENT
    )
    ScheduleFire.objects.create(
        schedule=nightly, intended_at=datetime(2026, 11, 21, 12, tzinfo=UTC), status=FireStatus.FAILED
    )
    return {"flow": payroll.slug, "schedule": nightly.pk, "digest": mailed.pk}


@pytest.fixture
def personas(outsider, django_user_model):
    staff = django_user_model.objects.create_user(username="staff-no-perms", password="pw", is_staff=True)
    viewer = django_user_model.objects.create_user(username="viewer", password="pw")
    grant(viewer, *VIEW_PERMISSIONS)
    superuser = django_user_model.objects.create_superuser(username="root", password="pw", email="root@example.com")
    return {"outsider": outsider, "staff without permissions": staff, "viewer": viewer, "superuser": superuser}


# --- the read matrix ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "allowed"),
    [("outsider", False), ("staff without permissions", False), ("viewer", True), ("superuser", True)],
)
def test_read_matrix__lists_403_and_objects_404_without_the_view_permission(stored, personas, persona, allowed):
    client = client_for(personas[persona])
    for path, message in LISTS.items():
        response = client.get(path)
        if allowed:
            assert response.status_code == 200, (path, response.content)
        else:
            assert response.status_code == 403, (path, response.content)
            assert response.json() == {"detail": message, "code": "permission_denied", "errors": {}}
    for path in DETAILS:
        response = client.get(path.format(**stored))
        assert response.status_code == (200 if allowed else 404), (path, response.content)


def test_a_hidden_object_answers_exactly_as_a_missing_one(stored, outsider, staff_api):
    client = client_for(outsider)
    for path in DETAILS:
        hidden, missing = client.get(path.format(**stored)), client.get(path.format(**MISSING))
        assert (hidden.status_code, hidden.json()) == (missing.status_code, missing.json()), path
        assert staff_api.get(path.format(**MISSING)).json() == missing.json(), path  # the missing one's own 404


def test_nothing_an_outsider_reads_holds_a_definition_input_or_recipient(stored, outsider):
    client = client_for(outsider)
    paths = [*LISTS, *(path.format(**stored) for path in DETAILS), "/api/v1/runs", "/api/v1/agents"]
    for path in paths:
        body = client.get(path).content.decode()
        assert SECRET not in body and RECIPIENT not in body, path


def test_each_view_permission_opens_only_its_own_model(stored, owner):
    grant(owner, "flows.view_flow")
    client = client_for(owner)
    assert client.get("/api/v1/flows").status_code == 200
    assert client.get(f"/api/v1/flows/{stored['flow']}").json()["definition"]["tasks"][0]["input"] == {
        "authorization": SECRET
    }
    assert client.get("/api/v1/schedules").status_code == 403
    assert client.get(f"/api/v1/schedules/{stored['schedule']}").status_code == 404
    assert client.get("/api/v1/digests").status_code == 403
    assert client.get(f"/api/v1/digests/{stored['digest']}").status_code == 404


def test_the_change_permission_also_lets_one_read__as_in_the_admin(stored, owner):
    grant(owner, "schedules.change_schedule")
    assert client_for(owner).get(f"/api/v1/schedules/{stored['schedule']}").json()["input"] == {"authorization": SECRET}


# --- running a stored flow needs seeing it --------------------------------------------------------------------------


def test_running_a_stored_flow__404_as_for_a_missing_flow_without_the_view_permission(stored, outsider):
    client = client_for(outsider)

    def starts(slug):
        return (
            client.post(f"/api/v1/flows/{slug}/runs", {"input": {}}, format="json"),
            client.post("/api/v1/runs", {"flow": slug, "input": {}}, format="json"),
        )

    for hidden, missing in zip(starts(stored["flow"]), starts(MISSING["flow"]), strict=True):
        assert hidden.status_code == 404, hidden.content
        # The same answer, but for the slug the client sent ("No flow 'payroll'.").
        assert hidden.content.decode().replace(stored["flow"], MISSING["flow"]) == missing.content.decode()
    assert not Run.objects.exists()


def test_a_viewer_runs_a_stored_flow_and_reads_the_run(stored, personas):
    client = client_for(personas["viewer"])
    response = client.post(f"/api/v1/flows/{stored['flow']}/runs", {"input": {}}, format="json")
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    assert client.get(f"/api/v1/runs/{run_id}").json()["flow"]["slug"] == "payroll"
    assert client.post("/api/v1/runs", {"flow": "payroll", "input": {}}, format="json").status_code == 202


# --- what stays open to every signed-in user -----------------------------------------------------------------------


def test_without_permissions__inline_flows_validation_agents_and_own_runs_keep_working(stored, outsider, owner):
    client = client_for(outsider)
    inline = chain(("a", "pass", {"x": "{{ input.x }}"}))
    assert client.post("/api/v1/flows/validate", {"definition": inline}, format="json").json()["valid"] is True
    flow_run = client.post("/api/v1/flow/execute", {"flow": inline, "input": {"x": 1}}, format="json")
    assert flow_run.status_code == 202, flow_run.content
    agent_run = client.post("/api/v1/runs", {"agent_type": "pass", "input": {"y": 2}}, format="json")
    assert agent_run.status_code == 202, agent_run.content

    flow_run_id, agent_run_id = flow_run.json()["run_id"], agent_run.json()["id"]
    assert client.get(f"/api/v1/runs/{flow_run_id}").json()["flow"]["slug"] is None
    assert [s["input"] for s in client.get(f"/api/v1/runs/{flow_run_id}/steps").json()["results"]] == [{"x": 1}]
    assert client.get(f"/api/v1/runs/{agent_run_id}").json()["input"] == {"y": 2}
    assert {r["id"] for r in client.get("/api/v1/runs").json()["results"]} == {flow_run_id, agent_run_id}
    assert client_for(owner).get(f"/api/v1/runs/{flow_run_id}").status_code == 404  # still the runs' own rule


# --- writes: the model permissions, not is_staff -------------------------------------------------------------------


def test_is_staff_alone_changes_nothing__403_naming_the_permission(stored, personas):
    client = client_for(personas["staff without permissions"])
    refused = {
        "Adding flows needs the flows.add_flow permission.": client.post(
            "/api/v1/flows", {"slug": "x", "name": "x", "definition": chain(("a", "pass", {}))}, format="json"
        ),
        "Changing schedules needs the schedules.change_schedule permission.": client.post(
            f"/api/v1/schedules/{stored['schedule']}/pause"
        ),
        "Deleting digests needs the digests.delete_digestsubscription permission.": client.delete(
            f"/api/v1/digests/{stored['digest']}"
        ),
    }
    for message, response in refused.items():
        assert response.status_code == 403, response.content
        assert response.json()["detail"] == message


# --- the admin: Django's own rule, checked ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["flows_flow", "schedules_schedule", "digests_digestsubscription"])
def test_admin__staff_see_flows_schedules_and_digests_only_with_the_permission(stored, client, personas, model):
    staff = personas["staff without permissions"]
    client.force_login(staff)
    assert client.get(reverse(f"admin:{model}_changelist")).status_code == 403
    grant(staff, *VIEW_PERMISSIONS)
    assert client.get(reverse(f"admin:{model}_changelist")).status_code == 200
