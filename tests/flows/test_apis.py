"""The flows API: definitions, versions, validation, starting runs; permissions and bad input.

Who may read and run stored flows without permissions is in tests/agentrunner/test_api_permissions.py.
"""

import uuid

import pytest
from django.core.management import call_command

from flows.models import Flow, FlowVersion
from runs.models import Run, RunStatus, Step
from schedules.models import Schedule
from tests.conftest import client_for, grant
from tests.flows.factories import chain, flow
from tests.schedules.factories import schedule

pytestmark = pytest.mark.django_db

GOOD = chain(("a", "pass", {"x": "{{ input.x }}"}), ("b", "pass", {}))


def error_shape(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"detail", "code", "errors"}
    return body


@pytest.fixture
def api(owner):
    """The owner, a non-staff user who may see stored flows (flows.view_flow), and so run them."""
    grant(owner, "flows.view_flow")
    return client_for(owner)


def test_staff_create_a_flow__users_with_the_view_permission_read_it(staff_api, api, outsider):
    response = staff_api.post("/api/v1/flows", {"slug": "demo", "name": "Demo", "definition": GOOD}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["version"] == 1 and response.json()["owner"] == "staff"
    assert api.get("/api/v1/flows/demo").json()["definition"] == GOOD
    assert [f["slug"] for f in api.get("/api/v1/flows").json()["results"]] == ["demo"]
    assert error_shape(client_for(outsider).get("/api/v1/flows/demo"), 404)["code"] == "not_found"


def test_non_staff_cannot_change_flows(api):
    flow(slug="demo")
    error_shape(api.post("/api/v1/flows", {"slug": "x", "name": "x", "definition": GOOD}, format="json"), 403)
    error_shape(api.patch("/api/v1/flows/demo", {"enabled": False}, format="json"), 403)
    error_shape(api.delete("/api/v1/flows/demo"), 403)


def test_invalid_definition_is_400_with_every_problem_by_path(staff_api):
    bad = {
        "name": "bad",
        "start_task": "nope",
        "tasks": [{"name": "a", "agent": "no-such-agent"}, {"name": "a", "agent": "wait", "input": {"seconds": "x"}}],
        "conditions": [{"name": "c", "source_task": "a", "when": "output.(", "target_task_success": "ghost"}],
    }
    body = error_shape(
        staff_api.post("/api/v1/flows", {"slug": "bad", "name": "Bad", "definition": bad}, format="json"), 400
    )
    assert body["code"] == "invalid_definition"
    for path in ("start_task", "tasks[0].agent", "tasks[1].name", "tasks[1].input.seconds", "conditions[0].when"):
        assert path in body["errors"], (path, body["errors"])
    assert any("ghost" in m for msgs in body["errors"].values() for m in msgs)
    assert not Run.objects.exists()


def test_validate_reports_errors_and_warnings_without_saving(api):
    unreachable = chain(("a", "pass", {}), ("island", "pass", {}), conditions=[])
    body = api.post("/api/v1/flows/validate", {"definition": unreachable}, format="json").json()
    assert body["valid"] is True
    assert [p["path"] for p in body["problems"] if p["severity"] == "warning"] == ["tasks[1]"]
    body = api.post("/api/v1/flows/validate", {"definition": {"tasks": 5}}, format="json").json()
    assert body["valid"] is False and body["problems"]
    error_shape(api.post("/api/v1/flows/validate", {}, format="json"), 400)


def test_put_with_a_changed_definition_makes_a_new_version_and_patch_of_fields_does_not(staff_api):
    flow(slug="demo", definition=GOOD)
    changed = chain(("a", "pass", {}))
    response = staff_api.put("/api/v1/flows/demo", {"name": "Demo 2", "definition": changed}, format="json")
    assert response.status_code == 200 and response.json()["version"] == 2
    assert staff_api.patch("/api/v1/flows/demo", {"enabled": False}, format="json").json()["version"] == 2
    same = staff_api.patch("/api/v1/flows/demo", {"definition": changed}, format="json")
    assert same.json()["version"] == 2  # an identical definition is not a new version
    versions = staff_api.get("/api/v1/flows/demo/versions").json()["results"]
    assert [v["number"] for v in versions] == [2, 1]
    assert versions[1]["definition"] == GOOD


def test_lists_are_paginated__flows_by_slug_with_their_current_version_and_versions_newest_first(api, staff_api):
    for slug in ("c", "a", "b"):
        flow(slug=slug, definition=GOOD)
    changed = chain(("a", "pass", {}))
    staff_api.patch("/api/v1/flows/b", {"definition": changed}, format="json")

    page = api.get("/api/v1/flows?limit=2").json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 3 and page["previous"] is None and "offset=2" in page["next"]
    assert [(f["slug"], f["version"]) for f in page["results"]] == [("a", 1), ("b", 2)]
    assert page["results"][1]["definition"] == changed  # the current version's, not the first one's
    assert [f["slug"] for f in api.get("/api/v1/flows?limit=2&offset=2").json()["results"]] == ["c"]

    versions = api.get("/api/v1/flows/b/versions?limit=1").json()
    assert versions["count"] == 2 and [v["number"] for v in versions["results"]] == [2]
    assert [v["number"] for v in api.get("/api/v1/flows/b/versions?offset=1").json()["results"]] == [1]
    assert "limit" in error_shape(api.get("/api/v1/flows?limit=0"), 400)["errors"]
    assert "offset" in error_shape(api.get("/api/v1/flows/b/versions?offset=-1"), 400)["errors"]
    error_shape(api.get("/api/v1/flows/ghost/versions"), 404)


def test_start_a_flow_run_and_read_it(api):
    flow(slug="demo", definition=GOOD)
    response = api.post("/api/v1/flows/demo/runs", {"input": {"x": 1}, "idempotency_key": "k"}, format="json")
    assert response.status_code == 202
    run_id = response.json()["id"]
    assert response.json() == api.get(f"/api/v1/runs/{run_id}").json()  # the run, as POST /runs answers
    again = api.post("/api/v1/flows/demo/runs", {"input": {"x": 1}, "idempotency_key": "k"}, format="json")
    assert again.status_code == 200 and again.json()["id"] == run_id
    assert "run_id" not in response.json()
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert run["flow"]["slug"] == "demo" and run["flow"]["version"] == 1
    assert run["agent_type"] == ""
    assert api.get("/api/v1/runs?flow=demo").json()["count"] == 1
    steps = api.get(f"/api/v1/runs/{run_id}/steps").json()["results"]
    assert [(s["name"], s["input"]) for s in steps] == [("a", {"x": 1})]


def test_runs_api_starts_flows_too(api):
    flow(slug="demo", definition=GOOD)
    response = api.post("/api/v1/runs", {"flow": "demo", "input": {"x": 2}}, format="json")
    assert response.status_code == 202 and response.json()["flow"]["slug"] == "demo"
    error_shape(api.post("/api/v1/runs", {"flow": "demo", "agent_type": "pass"}, format="json"), 400)
    error_shape(api.post("/api/v1/runs", {"flow": "ghost"}, format="json"), 404)


def test_input_missing_for_the_first_task_is_400(api):
    flow(slug="demo", definition=GOOD)
    body = error_shape(api.post("/api/v1/flows/demo/runs", {"input": {}}, format="json"), 400)
    assert "input.x" in body["detail"]
    assert not Run.objects.exists()


def test_disabled_unknown_and_busy_flows(api, staff_api):
    flow(slug="demo", definition=GOOD, enabled=False)
    assert error_shape(api.post("/api/v1/flows/demo/runs", {"input": {"x": 1}}, format="json"), 409)["code"] == (
        "flow_disabled"
    )
    error_shape(api.post("/api/v1/flows/ghost/runs", {}, format="json"), 404)
    error_shape(api.get("/api/v1/flows/ghost"), 404)
    flow(slug="one", definition=chain(("a", "pass", {}), concurrency={"limit": 1, "on_busy": "reject"}))
    assert api.post("/api/v1/flows/one/runs", {}, format="json").status_code == 202
    assert error_shape(api.post("/api/v1/flows/one/runs", {}, format="json"), 409)["code"] == "agent_busy"


def test_delete_only_a_flow_that_never_ran(staff_api):
    flow(slug="unused")
    assert staff_api.delete("/api/v1/flows/unused").status_code == 204
    flow(slug="used", definition=GOOD)
    staff_api.post("/api/v1/flows/used/runs", {"input": {"x": 1}}, format="json")
    assert error_shape(staff_api.delete("/api/v1/flows/used"), 409)["code"] == "flow_in_use"


@pytest.mark.parametrize(
    "payload",
    [
        {"slug": "Bad Slug!", "name": "x", "definition": GOOD},
        {"slug": "ok", "name": "x", "definition": [1]},
        {"slug": "ok", "name": "x"},
        {"slug": "ok", "definition": GOOD},
    ],
)
def test_create_bad_payloads_are_400(staff_api, payload):
    error_shape(staff_api.post("/api/v1/flows", payload, format="json"), 400)


def test_duplicate_slug_is_400(staff_api):
    flow(slug="demo")
    error_shape(staff_api.post("/api/v1/flows", {"slug": "demo", "name": "x", "definition": GOOD}, format="json"), 400)


@pytest.mark.parametrize(
    "payload",
    [
        {"flow": {"tasks": []}},
        {"flow": GOOD, "wait": 61},
        {"flow": GOOD, "wait": -1},
        {"flow": GOOD, "input": [1]},
        {},
    ],
)
def test_flow_execute_bad_input_is_400(api, payload):
    error_shape(api.post("/api/v1/flow/execute", payload, format="json"), 400)


def test_resume_endpoint(api, owner):
    flow(slug="demo", definition=GOOD)
    run_id = api.post("/api/v1/flows/demo/runs", {"input": {"x": 1}}, format="json").json()["id"]
    assert error_shape(api.post(f"/api/v1/runs/{run_id}/retry"), 409)["code"] == "not_resumable"
    Step.objects.filter(run_id=run_id).update(status="FAILED", error="boom")
    Run.objects.filter(pk=run_id).update(status=RunStatus.FAILED, error="boom")
    response = api.post(f"/api/v1/runs/{run_id}/retry")
    assert response.status_code == 202 and response.json()["status"] == RunStatus.RUNNING
    assert Step.objects.filter(run_id=run_id).count() == 2
    error_shape(client_for_outsider(owner).post(f"/api/v1/runs/{run_id}/retry"), 404)
    error_shape(api.post(f"/api/v1/runs/{uuid.uuid4()}/retry"), 404)


def client_for_outsider(owner):
    from django.contrib.auth import get_user_model

    outsider = get_user_model().objects.create_user(username="someone-else", password="pw")
    return client_for(outsider)


def test_demo_content_command_is_idempotent(api):
    call_command("ensure_demo_content")
    call_command("ensure_demo_content")
    assert api.get("/api/v1/flows/claim-intake").json()["version"] == 1


def test_run_token_budget_comes_from_the_request_or_the_flow(api):
    flow(slug="budgeted", definition={**GOOD, "budget": {"max_tokens": 900}})
    from_flow = api.post("/api/v1/flows/budgeted/runs", {"input": {"x": 1}}, format="json").json()["id"]
    from_request = api.post(
        "/api/v1/flows/budgeted/runs", {"input": {"x": 1}, "token_budget": 50}, format="json"
    ).json()["id"]
    assert Run.objects.get(pk=from_flow).token_budget == 900
    assert Run.objects.get(pk=from_request).token_budget == 50
    agent_run = api.post("/api/v1/runs", {"agent_type": "pass", "token_budget": 10}, format="json").json()
    assert agent_run["token_budget"] == 10
    error_shape(api.post("/api/v1/runs", {"agent_type": "pass", "token_budget": 0}, format="json"), 400)


def test_flow_runs__token_budget_beyond_32_bits_is_400_and_nothing_stored(api):
    flow(slug="demo", definition=GOOD)
    body = error_shape(
        api.post("/api/v1/flows/demo/runs", {"input": {"x": 1}, "token_budget": 2**31}, format="json"), 400
    )
    assert "token_budget" in body["errors"], body
    assert not Run.objects.exists()


def test_delete__a_flow_schedules_use_is_409_naming_them_and_nothing_deleted(staff_api):
    used = flow(slug="used", definition=GOOD)
    schedule(name="Nightly intake", flow=used, input={"x": 1})
    schedule(name="Hourly intake", flow=used, input={"x": 2})

    body = error_shape(staff_api.delete("/api/v1/flows/used"), 409)

    assert body["code"] == "flow_in_use"
    assert "schedule 'Hourly intake'" in body["detail"] and "schedule 'Nightly intake'" in body["detail"], body
    assert Flow.objects.filter(slug="used").exists() and Schedule.objects.count() == 2


# --- max_steps of inline flows --------------------------------------------------------------------------------


def looping(max_steps=None) -> dict:
    """Two tasks sending the flow to each other for ever: only max_steps ends it."""
    conditions = [
        {"name": "ab", "source_task": "a", "outcome": "success", "target_task_success": "b"},
        {"name": "ba", "source_task": "b", "outcome": "success", "target_task_success": "a"},
    ]
    extra = {} if max_steps is None else {"max_steps": max_steps}
    return chain(("a", "pass", {}), ("b", "pass", {}), conditions=conditions, **extra)


def test_flow_execute__non_staff_asking_for_more_steps_than_allowed_is_400_and_nothing_stored(api):
    body = error_shape(api.post("/api/v1/flow/execute", {"flow": looping(max_steps=101)}, format="json"), 400)
    assert body["code"] == "invalid_definition"
    assert "from 1 to 100" in body["errors"]["max_steps"][0] and "staff" in body["errors"]["max_steps"][0]
    assert not Run.objects.exists() and not FlowVersion.objects.exists()
    assert api.post("/api/v1/flow/execute", {"flow": looping(max_steps=100)}, format="json").status_code == 202
    assert api.post("/api/v1/flow/execute", {"flow": looping()}, format="json").status_code == 202


def test_flow_execute__staff_keep_the_format_limit(staff_api):
    assert staff_api.post("/api/v1/flow/execute", {"flow": looping(max_steps=10_000)}, format="json").status_code == 202
    error_shape(staff_api.post("/api/v1/flow/execute", {"flow": looping(max_steps=10_001)}, format="json"), 400)


def test_flow_execute__the_non_staff_limit_is_a_setting(api, settings):
    settings.FLOW_MAX_STEPS_NON_STAFF = 5
    error_shape(api.post("/api/v1/flow/execute", {"flow": looping(max_steps=6)}, format="json"), 400)
    # Left out, max_steps would be the default (100): more than allowed, so it must be given.
    body = error_shape(api.post("/api/v1/flow/execute", {"flow": looping()}, format="json"), 400)
    assert "max_steps" in body["errors"], body
    assert api.post("/api/v1/flow/execute", {"flow": looping(max_steps=5)}, format="json").status_code == 202


def test_validate__checks_max_steps_against_what_the_caller_may_ask_for(api, staff_api):
    payload = {"definition": looping(max_steps=101)}
    body = api.post("/api/v1/flows/validate", payload, format="json").json()
    assert body["valid"] is False and [p["path"] for p in body["problems"]] == ["max_steps"]
    assert staff_api.post("/api/v1/flows/validate", payload, format="json").json()["valid"] is True
