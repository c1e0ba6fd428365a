"""The flows API: definitions, versions, validation, starting runs; roles, team isolation and bad input.

`owner` is a runner of the default team, `staff_user` an editor of it, `outsider` a runner of team "other".
"""

import uuid

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from agentrunner.models import Role
from agentrunner.teams.services import team_default
from flows.definition import MAX_MAX_STEPS
from flows.models import Flow, FlowVersion
from flows.services import max_steps_allowed
from runs.models import Run, RunStatus, Step
from schedules.models import Schedule
from tests.conftest import client_for, join, team_named
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
def viewer_api(django_user_model):
    """A viewer of the default team: reads its flows, starts nothing."""
    user = django_user_model.objects.create_user(username="viewer", password="pw")
    join(user, Role.VIEWER)
    return client_for(user)


def test_an_editor_creates_a_flow__members_of_the_team_read_it_and_others_get_404(staff_api, api, viewer_api, outsider):
    response = staff_api.post("/api/v1/flows", {"slug": "demo", "name": "Demo", "definition": GOOD}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["version"] == 1 and response.json()["owner"] == "staff"
    assert Flow.objects.get(slug="demo").team.slug == "default"
    for member in (api, viewer_api):
        assert member.get("/api/v1/flows/demo").json()["definition"] == GOOD
        assert [f["slug"] for f in member.get("/api/v1/flows").json()["results"]] == ["demo"]
    assert error_shape(client_for(outsider).get("/api/v1/flows/demo"), 404)["code"] == "not_found"


def test_runners_and_viewers_cannot_change_flows__403_naming_the_role(api, viewer_api):
    flow(slug="demo")
    for client in (api, viewer_api):
        body = error_shape(
            client.post("/api/v1/flows", {"slug": "x", "name": "x", "definition": GOOD}, format="json"), 403
        )
        assert "editor" in body["detail"]
        error_shape(client.patch("/api/v1/flows/demo", {"enabled": False}, format="json"), 403)
        error_shape(client.put("/api/v1/flows/demo", {"name": "x", "definition": GOOD}, format="json"), 403)
        error_shape(client.delete("/api/v1/flows/demo"), 403)
    assert Flow.objects.get(slug="demo").enabled and Flow.objects.count() == 1


def test_a_viewer_reads_and_validates_but_starts_no_run(viewer_api):
    flow(slug="demo", definition=GOOD)
    assert viewer_api.post("/api/v1/flows/validate", {"definition": GOOD}, format="json").json()["valid"] is True
    body = error_shape(viewer_api.post("/api/v1/flows/demo/runs", {"input": {"x": 1}}, format="json"), 403)
    assert "runner" in body["detail"]
    error_shape(viewer_api.post("/api/v1/flow/execute", {"flow": GOOD, "input": {"x": 1}}, format="json"), 403)
    assert not Run.objects.exists()


# --- teams ---------------------------------------------------------------------------------------------------


def test_the_same_slug_in_two_teams__each_team_sees_and_runs_its_own(api, outsider):
    ours = flow(slug="demo", definition=GOOD)
    theirs = flow(slug="demo", definition=chain(("a", "pass", {})), team=team_named("other"))
    other_api = client_for(outsider)

    assert api.get("/api/v1/flows/demo").json()["id"] == ours.pk
    assert other_api.get("/api/v1/flows/demo").json()["id"] == theirs.pk
    assert [f["id"] for f in other_api.get("/api/v1/flows").json()["results"]] == [theirs.pk]
    run_id = other_api.post("/api/v1/flows/demo/runs", {}, format="json").json()["id"]
    run = Run.objects.get(pk=run_id)
    assert run.flow_version.flow_id == theirs.pk and run.team.slug == "other"
    error_shape(api.get(f"/api/v1/runs/{run_id}"), 404)


def test_an_editor_may_create_a_slug_another_team_uses__a_slug_taken_in_the_team_is_400_on_slug(staff_api):
    flow(slug="theirs", team=team_named("other"))
    payload = {"slug": "theirs", "name": "Ours", "definition": GOOD}
    assert staff_api.post("/api/v1/flows", payload, format="json").status_code == 201

    body = error_shape(staff_api.post("/api/v1/flows", payload, format="json"), 400)

    assert list(body["errors"]) == ["slug"], body
    assert body["errors"]["slug"] == ["The team already has a flow with the slug 'theirs'."]
    assert "other" not in body["detail"]
    assert Flow.objects.filter(slug="theirs").count() == 2


def test_another_teams_flow_is_404_on_every_url_and_absent_from_the_list(staff_api, api):
    theirs = flow(slug="theirs", definition=GOOD, team=team_named("other"))
    flow(slug="ours", definition=GOOD)

    assert [f["slug"] for f in api.get("/api/v1/flows").json()["results"]] == ["ours"]
    for response in (
        api.get("/api/v1/flows/theirs"),
        api.get("/api/v1/flows/theirs/versions"),
        api.post("/api/v1/flows/theirs/runs", {"input": {"x": 1}}, format="json"),
        api.post("/api/v1/runs", {"flow": "theirs", "input": {"x": 1}}, format="json"),
        staff_api.put("/api/v1/flows/theirs", {"name": "Mine", "definition": GOOD}, format="json"),
        staff_api.patch("/api/v1/flows/theirs", {"enabled": False}, format="json"),
        staff_api.delete("/api/v1/flows/theirs"),
    ):
        assert error_shape(response, 404)["code"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.enabled and theirs.name == "theirs" and theirs.versions.count() == 1
    assert not Run.objects.exists()


def test_x_team_picks_the_team_of_a_member_of_two(staff_user, staff_api):
    other = team_named("other")
    join(staff_user, Role.RUNNER, other)
    flow(slug="ours")
    flow(slug="theirs", team=other)

    assert error_shape(staff_api.get("/api/v1/flows"), 400)["code"] == "team_required"
    staff_api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=staff_user).key}", HTTP_X_TEAM="other")
    assert [f["slug"] for f in staff_api.get("/api/v1/flows").json()["results"]] == ["theirs"]
    error_shape(staff_api.get("/api/v1/flows/ours"), 404)
    # A runner there: starts runs of its flows, changes none.
    assert staff_api.post("/api/v1/flows/theirs/runs", {}, format="json").status_code == 202
    error_shape(staff_api.patch("/api/v1/flows/theirs", {"enabled": False}, format="json"), 403)


def test_flow_execute__the_run_belongs_to_the_acting_team(outsider):
    response = client_for(outsider).post("/api/v1/flow/execute", {"flow": GOOD, "input": {"x": 1}}, format="json")
    assert response.status_code == 202, response.content
    assert Run.objects.get(pk=response.json()["run_id"]).team.slug == "other"


def test_flow_execute__an_identical_inline_definition_shares_a_version_within_a_team_only(api, outsider):
    payload = {"flow": GOOD, "input": {"x": 1}}
    ours = [api.post("/api/v1/flow/execute", payload, format="json").json()["run_id"] for _ in range(2)]
    theirs = client_for(outsider).post("/api/v1/flow/execute", payload, format="json").json()["run_id"]

    versions = [Run.objects.get(pk=run_id).flow_version_id for run_id in (*ours, theirs)]

    # Sharing the other team's version would tell it that someone ran the same definition.
    assert versions[0] == versions[1] and versions[2] != versions[0]


def test_an_idempotency_key_reused_for_another_flow_or_input_is_409(api):
    flow(slug="demo", definition=GOOD)
    flow(slug="second", definition=GOOD)
    first = api.post("/api/v1/flows/demo/runs", {"input": {"x": 1}, "idempotency_key": "k"}, format="json")
    assert first.status_code == 202
    again = api.post("/api/v1/flows/second/runs", {"input": {"x": 1}, "idempotency_key": "k"}, format="json")
    assert error_shape(again, 409)["code"] == "idempotency_conflict"
    other_input = api.post("/api/v1/flows/demo/runs", {"input": {"x": 2}, "idempotency_key": "k"}, format="json")
    assert error_shape(other_input, 409)["code"] == "idempotency_conflict"
    assert Run.objects.count() == 1


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


def test_validate_reports_errors_and_warnings_without_saving(viewer_api):
    api = viewer_api
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


def test_resume_endpoint(api, outsider):
    flow(slug="demo", definition=GOOD)
    run_id = api.post("/api/v1/flows/demo/runs", {"input": {"x": 1}}, format="json").json()["id"]
    assert error_shape(api.post(f"/api/v1/runs/{run_id}/retry"), 409)["code"] == "not_resumable"
    Step.objects.filter(run_id=run_id).update(status="FAILED", error="boom")
    Run.objects.filter(pk=run_id).update(status=RunStatus.FAILED, error="boom")
    response = api.post(f"/api/v1/runs/{run_id}/retry")
    assert response.status_code == 202 and response.json()["status"] == RunStatus.RUNNING
    assert Step.objects.filter(run_id=run_id).count() == 2
    error_shape(client_for(outsider).post(f"/api/v1/runs/{run_id}/retry"), 404)
    error_shape(api.post(f"/api/v1/runs/{uuid.uuid4()}/retry"), 404)


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


def test_flow_execute__a_runner_asking_for_more_steps_than_allowed_is_400_and_nothing_stored(api):
    body = error_shape(api.post("/api/v1/flow/execute", {"flow": looping(max_steps=101)}, format="json"), 400)
    assert body["code"] == "invalid_definition"
    assert "from 1 to 100" in body["errors"]["max_steps"][0] and "editor" in body["errors"]["max_steps"][0]
    assert not Run.objects.exists() and not FlowVersion.objects.exists()
    assert api.post("/api/v1/flow/execute", {"flow": looping(max_steps=100)}, format="json").status_code == 202
    assert api.post("/api/v1/flow/execute", {"flow": looping()}, format="json").status_code == 202


def test_flow_execute__editors_keep_the_format_limit(staff_api):
    assert staff_api.post("/api/v1/flow/execute", {"flow": looping(max_steps=10_000)}, format="json").status_code == 202
    error_shape(staff_api.post("/api/v1/flow/execute", {"flow": looping(max_steps=10_001)}, format="json"), 400)


def test_flow_execute__the_limit_below_editor_is_a_setting(api, settings):
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


def test_max_steps__the_format_limit_is_for_editors_of_the_acting_team(staff_user, owner, outsider, superuser):
    default, other = team_default(), team_named("other")
    assert max_steps_allowed(user=staff_user, team=default) == MAX_MAX_STEPS
    assert max_steps_allowed(user=staff_user, team=other) == 100  # an editor elsewhere is not one here
    assert max_steps_allowed(user=owner, team=default) == 100
    assert max_steps_allowed(user=superuser, team=other) == MAX_MAX_STEPS
    # Without a team (an admin page before a team is chosen): an editor of any of one's teams.
    assert max_steps_allowed(user=staff_user) == MAX_MAX_STEPS
    assert max_steps_allowed(user=outsider) == 100
