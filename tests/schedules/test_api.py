"""The schedules API: roles and team isolation, create/change/delete, validation by field, fire times in the zone,
pause/resume, slot history.

`owner` is a runner of the default team (reads schedules), `staff_user` an editor of it, `outsider` a runner of
team "other".
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django_q.models import Schedule as QSchedule
from rest_framework.test import APIClient

from agentrunner.models import Role
from agentrunner.teams.services import team_default
from runs.models import Run, RunStatus
from schedules import selectors, services
from schedules.models import FireStatus, Schedule, ScheduleFire
from tests.conftest import client_for, join, team_named
from tests.flows.factories import flow

pytestmark = pytest.mark.django_db

PARIS = ZoneInfo("Europe/Paris")
CLAIM_EVERY_10_MIN = {
    "name": "Claim intake every 10 minutes",
    "flow": "claim-intake",
    "input": {"document": "Policy Number: PL-1"},
    "every_seconds": 600,
    "timezone": "Europe/Paris",
}


def error_shape(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"detail", "code", "errors"}
    return body


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def agent_schedule(name="Wait a second", **fields) -> Schedule:
    values = {"agent_type": "wait", "input": {"seconds": 1}, "kind": "interval", "interval_seconds": 600, **fields}
    return services.schedule_create(name=name, **values)


def run_of(schedule: Schedule | None = None, **fields) -> Run:
    """A run row of the default team (the schedule's, if given)."""
    team = schedule.team if schedule is not None else team_default()
    return Run.objects.create(schedule=schedule, team=team, **{"agent_type": "wait", **fields})


@pytest.fixture
def claim_intake():
    return flow(slug="claim-intake")


@pytest.fixture
def other_editor_api(django_user_model):
    """An editor of team "other": may change its schedules, sees none of the default team's."""
    user = django_user_model.objects.create_user(username="other-editor", password="pw")
    join(user, Role.EDITOR, team_named("other"))
    return client_for(user)


# --- roles and teams ------------------------------------------------------------


def test_an_editor_creates_a_flow_schedule__members_of_the_team_read_it(staff_api, api, outsider, claim_intake):
    response = staff_api.post("/api/v1/schedules", CLAIM_EVERY_10_MIN, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["flow"] == "claim-intake" and body["agent"] is None
    assert body["every_seconds"] == 600 and body["cron"] is None
    assert body["timezone"] == "Europe/Paris" and body["enabled"] is True
    assert (body["overlap"], body["catch_up"]) == ("skip", "skip_missed")
    assert body["input"] == {"document": "Policy Number: PL-1"}
    assert body["last_run"] is None
    schedule = Schedule.objects.get(pk=body["id"])
    assert schedule.created_by.username == "staff" and schedule.team.slug == "default"
    row = QSchedule.objects.get(pk=schedule.q_schedule_id)
    assert (row.func, row.args, row.schedule_type, row.minutes) == (
        "schedules.tasks.schedule_fire",
        repr(schedule.pk),
        QSchedule.MINUTES,
        10,
    )

    listed = api.get("/api/v1/schedules").json()
    assert listed["count"] == 1 and listed["results"][0]["name"] == "Claim intake every 10 minutes"
    assert api.get(f"/api/v1/schedules/{schedule.pk}").json()["id"] == schedule.pk
    assert error_shape(client_for(outsider).get(f"/api/v1/schedules/{schedule.pk}"), 404)["code"] == "not_found"


def test_runners_cannot_create_change_pause_or_delete__403_before_any_lookup(api, outsider, claim_intake):
    schedule = agent_schedule()
    for client in (api, client_for(outsider)):
        assert error_shape(client.post("/api/v1/schedules", CLAIM_EVERY_10_MIN, format="json"), 403)["code"] == (
            "permission_denied"
        )
        error_shape(client.patch(f"/api/v1/schedules/{schedule.pk}", {"enabled": False}, format="json"), 403)
        error_shape(client.post(f"/api/v1/schedules/{schedule.pk}/pause"), 403)
        error_shape(client.post(f"/api/v1/schedules/{schedule.pk}/resume"), 403)
        error_shape(client.delete(f"/api/v1/schedules/{schedule.pk}"), 403)
    schedule.refresh_from_db()
    assert schedule.enabled and Schedule.objects.count() == 1 and QSchedule.objects.count() == 1


def test_the_same_name_in_two_teams__a_name_taken_in_the_team_is_400_on_name(staff_api, other_editor_api):
    agent_schedule(name="ok", team=team_named("other"))
    assert staff_api.post("/api/v1/schedules", GOOD, format="json").status_code == 201

    body = error_shape(other_editor_api.post("/api/v1/schedules", GOOD, format="json"), 400)

    assert body["errors"]["name"] == ["A schedule named 'ok' already exists in this team."]
    assert Schedule.objects.filter(name="ok").count() == 2


def test_another_teams_schedule_is_404_on_every_url_and_absent_from_the_list(api, other_editor_api):
    ours = agent_schedule(name="Ours")
    theirs = agent_schedule(name="Theirs", team=team_named("other"))

    assert [s["name"] for s in api.get("/api/v1/schedules").json()["results"]] == ["Ours"]
    assert [s["name"] for s in other_editor_api.get("/api/v1/schedules").json()["results"]] == ["Theirs"]
    theirs_url, ours_url = f"/api/v1/schedules/{theirs.pk}", f"/api/v1/schedules/{ours.pk}"
    for response in (
        api.get(theirs_url),
        api.get(f"{theirs_url}/fires"),
        other_editor_api.get(ours_url),
        other_editor_api.get(f"{ours_url}/fires"),
        other_editor_api.patch(ours_url, {"name": "Mine"}, format="json"),
        other_editor_api.post(f"{ours_url}/pause"),
        other_editor_api.post(f"{ours_url}/resume"),
        other_editor_api.delete(ours_url),
    ):
        assert error_shape(response, 404)["code"] == "not_found"
    ours.refresh_from_db()
    assert ours.name == "Ours" and ours.enabled and Schedule.objects.count() == 2


def test_a_flow_of_another_team_is_400_as_a_flow_that_does_not_exist(staff_api, claim_intake):
    flow(slug="theirs", team=team_named("other"))
    payload = {**CLAIM_EVERY_10_MIN, "flow": "theirs"}

    body = error_shape(staff_api.post("/api/v1/schedules", payload, format="json"), 400)
    ghost = error_shape(staff_api.post("/api/v1/schedules", {**payload, "flow": "ghost"}, format="json"), 400)

    assert body["errors"] == {"flow": ["No flow 'theirs'."]} and ghost["errors"] == {"flow": ["No flow 'ghost'."]}
    schedule = agent_schedule()
    patched = staff_api.patch(f"/api/v1/schedules/{schedule.pk}", {"flow": "theirs"}, format="json")
    assert error_shape(patched, 400)["errors"] == {"flow": ["No flow 'theirs'."]}
    schedule.refresh_from_db()
    assert schedule.flow_id is None and schedule.agent_type == "wait"
    assert Schedule.objects.count() == 1


def test_anonymous_gets_401():
    client = APIClient()
    assert error_shape(client.get("/api/v1/schedules"), 401)["code"] == "not_authenticated"
    error_shape(client.post("/api/v1/schedules", CLAIM_EVERY_10_MIN, format="json"), 401)


def test_unknown_schedule_is_404(api, staff_api):
    for path in ("/api/v1/schedules/999", "/api/v1/schedules/999/fires", "/api/v1/schedules/99999999999999999999"):
        assert error_shape(api.get(path), 404)["code"] == "not_found"
    error_shape(staff_api.patch("/api/v1/schedules/999", {"enabled": False}, format="json"), 404)
    error_shape(staff_api.post("/api/v1/schedules/999/pause"), 404)
    error_shape(staff_api.delete("/api/v1/schedules/999"), 404)


def test_a_method_a_url_does_not_answer__405_naming_those_it_does(staff_api):
    schedule = agent_schedule()

    for response, allowed in (
        (staff_api.put(f"/api/v1/schedules/{schedule.pk}", GOOD, format="json"), "DELETE, GET, PATCH"),
        (staff_api.delete("/api/v1/schedules"), "GET, POST"),
    ):
        assert error_shape(response, 405)["code"] == "method_not_allowed"
        assert response["Allow"] == allowed


# --- fire times -----------------------------------------------------------------


def test_interval_fire_times_are_clock_aligned_and_in_utc(staff_api, claim_intake):
    before = datetime.now(UTC)
    body = staff_api.post("/api/v1/schedules", CLAIM_EVERY_10_MIN, format="json").json()
    times = body["next_fire_times"]
    assert len(times) == 5 and all(t.endswith("Z") for t in times)
    moments = [parse(t) for t in times]
    assert before < moments[0] <= before + timedelta(seconds=600)
    assert all(m.minute % 10 == 0 and m.second == 0 for m in moments)
    assert [b - a for a, b in zip(moments, moments[1:], strict=False)] == [timedelta(seconds=600)] * 4


def test_cron_fire_times_are_read_in_the_schedule_zone():
    schedule = agent_schedule(kind="cron", cron="0 9 * * *", interval_seconds=None, timezone="Europe/Paris")
    winter = selectors.schedule_next_fire_times(schedule, 3, now=datetime(2026, 1, 10, 12, tzinfo=UTC))
    assert winter == [datetime(2026, 1, day, 8, 0, tzinfo=UTC) for day in (11, 12, 13)]
    summer = selectors.schedule_next_fire_times(schedule, 1, now=datetime(2026, 7, 1, 0, tzinfo=UTC))
    assert summer == [datetime(2026, 7, 1, 7, 0, tzinfo=UTC)]


def test_cron_schedule_over_the_api__every_time_is_9_in_paris(staff_api):
    body = staff_api.post(
        "/api/v1/schedules",
        {
            "name": "Mornings",
            "agent": "wait",
            "input": {"seconds": 1},
            "cron": "0  9 * * *",
            "timezone": "Europe/Paris",
        },
        format="json",
    ).json()
    assert body["cron"] == "0 9 * * *" and body["every_seconds"] is None  # normalised
    moments = [parse(t) for t in body["next_fire_times"]]
    assert len(moments) == 5
    for moment in moments:
        local = moment.astimezone(PARIS)
        assert (local.hour, local.minute) == (9, 0)
        assert moment.hour == (8 if local.utcoffset() == timedelta(hours=1) else 7)
    assert QSchedule.objects.get().cron == "0 9 * * *"


# --- validation -----------------------------------------------------------------

GOOD = {"name": "ok", "agent": "wait", "input": {"seconds": 1}, "every_seconds": 60}


def without(key):
    return {k: v for k, v in GOOD.items() if k != key}


@pytest.mark.parametrize(
    "payload,field",
    [
        ({**without("agent"), "flow": "ghost"}, "flow"),
        ({**GOOD, "flow": "claim-intake"}, "flow"),
        (without("agent"), "flow"),
        ({**without("agent"), "flow": {"slug": "claim-intake"}}, "flow"),
        ({**GOOD, "agent": "no-such-agent"}, "agent"),
        ({**GOOD, "agent": ""}, "agent"),
        ({**GOOD, "input": {"seconds": "long"}}, "input.seconds"),
        ({**GOOD, "input": {"seconds": 1, "extra": 1}}, "input"),
        ({**GOOD, "input": [1, 2]}, "input"),
        ({**GOOD, "input": "text"}, "input"),
        ({**GOOD, "input": {"seconds": 1, "note": "a\x00b"}}, "input"),
        ({**without("every_seconds"), "cron": "0 25 * * *"}, "cron"),
        ({**without("every_seconds"), "cron": "0 9 * * * *"}, "cron"),
        ({**without("every_seconds"), "cron": "@daily"}, "cron"),
        ({**without("every_seconds"), "cron": "0 0 30 2 *"}, "cron"),
        ({**without("every_seconds"), "cron": "x" * 101}, "cron"),
        ({**without("every_seconds"), "cron": 5}, "cron"),
        ({**GOOD, "cron": "0 9 * * *"}, "cron"),
        (without("every_seconds"), "cron"),
        ({**GOOD, "every_seconds": 0}, "every_seconds"),
        ({**GOOD, "every_seconds": -60}, "every_seconds"),
        ({**GOOD, "every_seconds": 10**30}, "every_seconds"),
        ({**GOOD, "every_seconds": "ten"}, "every_seconds"),
        ({**GOOD, "every_seconds": 1.5}, "every_seconds"),
        ({**GOOD, "timezone": "Mars/Olympus"}, "timezone"),
        ({**GOOD, "timezone": "europe/paris"}, "timezone"),
        ({**GOOD, "timezone": ["UTC"]}, "timezone"),
        (without("name"), "name"),
        ({**GOOD, "name": "n" * 201}, "name"),
        ({**GOOD, "name": {"a": 1}}, "name"),
        ({**GOOD, "name": "a\x00b"}, "name"),
        ({**GOOD, "enabled": "maybe"}, "enabled"),
        ({**GOOD, "overlap": "sometimes"}, "overlap"),
        ({**GOOD, "catch_up": None}, "catch_up"),
    ],
)
def test_create__bad_fields_are_400_by_field_and_nothing_is_saved(staff_api, claim_intake, payload, field):
    body = error_shape(staff_api.post("/api/v1/schedules", payload, format="json"), 400)
    assert body["code"] == "invalid"
    assert field in body["errors"], body
    assert not Schedule.objects.exists() and not QSchedule.objects.exists()


def test_create__every_problem_at_once(staff_api):
    payload = {**without("every_seconds"), "cron": "0 25 * * *", "timezone": "Mars/Olympus", "agent": "nope"}
    errors = error_shape(staff_api.post("/api/v1/schedules", payload, format="json"), 400)["errors"]
    assert "cron" in errors  # the serializer refuses the cron before the service sees the rest
    payload["cron"] = "0 9 * * *"
    errors = error_shape(staff_api.post("/api/v1/schedules", payload, format="json"), 400)["errors"]
    assert set(errors) == {"timezone", "agent"}
    assert "Mars/Olympus" in errors["timezone"][0]


def test_create__the_services_problems_use_the_apis_field_names(staff_api):
    body = error_shape(staff_api.post("/api/v1/schedules", {**GOOD, "agent": "no-such-agent"}, format="json"), 400)

    assert body["code"] == "invalid" and set(body["errors"]) == {"agent"}
    assert body["detail"].startswith("Invalid schedule: agent: ")


def test_create__duplicate_name_is_400_on_name(staff_api):
    agent_schedule(name="ok")
    body = error_shape(staff_api.post("/api/v1/schedules", GOOD, format="json"), 400)
    assert "already exists" in body["errors"]["name"][0]
    assert Schedule.objects.count() == 1


@pytest.mark.parametrize(
    "raw,content_type",
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[1,2,3]", "application/json"),
        (b'"a string"', "application/json"),
        (b"null", "application/json"),
        (b"42", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"name=x", "text/plain"),
        (b'{"name": "x", "input": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}", "application/json"),
    ],
)
def test_malformed_bodies_are_4xx_never_500(staff_api, raw, content_type):
    schedule = agent_schedule()
    for method, path in (("POST", "/api/v1/schedules"), ("PATCH", f"/api/v1/schedules/{schedule.pk}")):
        if method == "PATCH" and raw == b"":
            continue  # an empty PATCH changes nothing: 200
        response = staff_api.generic(method, path, raw, content_type=content_type)
        assert 400 <= response.status_code < 500, (method, response.content)
        error_shape(response, response.status_code)
    assert Schedule.objects.count() == 1


@pytest.mark.parametrize("depth", [50, 400, 900])
def test_deeply_nested_input_is_saved_or_refused_never_500(staff_api, claim_intake, depth):
    nested = {"a": 1}
    for _ in range(depth):
        nested = {"a": nested, "b": ["x\x00" if depth == 50 else "x"]}
    payload = {"name": "deep", "flow": "claim-intake", "every_seconds": 60, "input": nested}
    response = staff_api.post("/api/v1/schedules", payload, format="json")
    if depth == 50:
        assert "input" in error_shape(response, 400)["errors"]  # the NUL deep inside is found
    else:
        assert response.status_code in (201, 400), response.content[:300]


# --- change, pause, delete ------------------------------------------------------


def test_patch_changes_only_the_given_fields_and_moves_the_django_q_row(staff_api, claim_intake):
    schedule = agent_schedule(timezone="Europe/Paris", overlap="queue")
    url = f"/api/v1/schedules/{schedule.pk}"
    body = staff_api.patch(url, {"cron": "30 6 * * 1-5"}, format="json").json()
    assert (body["cron"], body["every_seconds"], body["timezone"], body["overlap"]) == (
        "30 6 * * 1-5",
        None,
        "Europe/Paris",
        "queue",
    )
    row = QSchedule.objects.get()
    assert (row.schedule_type, row.cron) == (QSchedule.CRON, "30 6 * * 1-5")
    assert row.next_run == parse(body["next_fire_times"][0])
    assert parse(body["next_fire_times"][0]).astimezone(PARIS).strftime("%H:%M %a") in {
        f"06:30 {day}" for day in ("Mon", "Tue", "Wed", "Thu", "Fri")
    }

    body = staff_api.patch(url, {"flow": "claim-intake", "input": {}}, format="json").json()
    assert (body["flow"], body["agent"]) == ("claim-intake", None)
    body = staff_api.patch(url, {"every_seconds": 3600, "name": "Hourly"}, format="json").json()
    assert (body["every_seconds"], body["cron"], body["name"], body["flow"]) == (3600, None, "Hourly", "claim-intake")
    row.refresh_from_db()
    assert (row.schedule_type, row.minutes, row.name) == (QSchedule.MINUTES, 60, "schedule: Hourly")


def test_patch__invalid_is_400_and_changes_nothing(staff_api):
    schedule = agent_schedule()
    url = f"/api/v1/schedules/{schedule.pk}"
    assert "every_seconds" in error_shape(staff_api.patch(url, {"every_seconds": 0}, format="json"), 400)["errors"]
    assert (
        "cron"
        in error_shape(staff_api.patch(url, {"cron": "* * * * *", "every_seconds": 60}, format="json"), 400)["errors"]
    )
    assert (
        "input.seconds" in error_shape(staff_api.patch(url, {"input": {"seconds": -1}}, format="json"), 400)["errors"]
    )
    assert "timezone" in error_shape(staff_api.patch(url, {"timezone": "Nowhere"}, format="json"), 400)["errors"]
    schedule.refresh_from_db()
    assert (schedule.interval_seconds, schedule.input, schedule.timezone) == (600, {"seconds": 1}, "UTC")


def test_pause_removes_the_django_q_row_and_resume_recreates_it(staff_api):
    schedule = agent_schedule()
    first_row = schedule.q_schedule_id
    body = staff_api.post(f"/api/v1/schedules/{schedule.pk}/pause").json()
    assert body["enabled"] is False and body["next_fire_times"] == []
    assert not QSchedule.objects.exists()
    schedule.refresh_from_db()
    assert schedule.q_schedule_id is None
    assert staff_api.post(f"/api/v1/schedules/{schedule.pk}/pause").json()["enabled"] is False  # idempotent

    body = staff_api.post(f"/api/v1/schedules/{schedule.pk}/resume").json()
    assert body["enabled"] is True and len(body["next_fire_times"]) == 5
    row = QSchedule.objects.get()
    assert row.pk != first_row and row.next_run == parse(body["next_fire_times"][0])
    schedule.refresh_from_db()
    assert schedule.q_schedule_id == row.pk


def test_patch_enabled_false_is_a_pause(staff_api):
    schedule = agent_schedule()
    assert staff_api.patch(f"/api/v1/schedules/{schedule.pk}", {"enabled": False}, format="json").status_code == 200
    assert not QSchedule.objects.exists()


def test_delete_removes_schedule_and_its_django_q_row__runs_stay(staff_api):
    schedule = agent_schedule()
    run = run_of(schedule, input={"seconds": 1})
    assert staff_api.delete(f"/api/v1/schedules/{schedule.pk}").status_code == 204
    assert not Schedule.objects.exists() and not QSchedule.objects.exists()
    run.refresh_from_db()
    assert run.schedule_id is None


# --- last run and slot history --------------------------------------------------


def test_last_run_is_the_newest_run_of_the_schedule(api):
    schedule = agent_schedule()
    other = agent_schedule(name="Other")
    slot = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    run_of(schedule, scheduled_for=slot - timedelta(minutes=10))
    newest = run_of(
        schedule,
        scheduled_for=slot,
        status=RunStatus.COMPLETED,
        finished_at=slot + timedelta(seconds=4),
    )
    body = api.get(f"/api/v1/schedules/{schedule.pk}").json()
    assert body["last_run"] == {
        "id": str(newest.pk),
        "status": "COMPLETED",
        "scheduled_for": "2026-11-21T12:00:00Z",
        "finished_at": "2026-11-21T12:00:04Z",
    }
    assert api.get(f"/api/v1/schedules/{other.pk}").json()["last_run"] is None


def test_list_reads_in_a_fixed_number_of_queries(api, django_assert_max_num_queries):
    for index in range(6):
        schedule = agent_schedule(name=f"s{index}")
        run_of(schedule)
    # auth token, the acting team (the user's membership), count, page of schedules (flow, django-q2 row, creator
    # joined), newest runs
    with django_assert_max_num_queries(6):
        body = api.get("/api/v1/schedules").json()
    assert body["count"] == 6 and all(s["last_run"] is not None for s in body["results"])


def test_fires_are_newest_first_and_paginated(api):
    schedule = agent_schedule()
    other = agent_schedule(name="Other")
    t0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    run = run_of(schedule, scheduled_for=t0)
    ScheduleFire.objects.create(schedule=schedule, intended_at=t0, status=FireStatus.STARTED, run=run)
    ScheduleFire.objects.create(
        schedule=schedule,
        intended_at=t0 + timedelta(minutes=10),
        status=FireStatus.SKIPPED_OVERLAP,
        detail=f"Run {run.pk} was still running.",
    )
    ScheduleFire.objects.create(schedule=other, intended_at=t0, status=FireStatus.FAILED, detail="no")

    body = api.get(f"/api/v1/schedules/{schedule.pk}/fires").json()
    assert body["count"] == 2
    first, second = body["results"]
    assert (first["intended_at"], first["status"], first["run_id"]) == ("2026-11-21T12:10:00Z", "skipped_overlap", None)
    assert first["detail"] == f"Run {run.pk} was still running." and first["fired_at"]
    assert (second["status"], second["run_id"], second["detail"]) == ("started", str(run.pk), "")

    page = api.get(f"/api/v1/schedules/{schedule.pk}/fires?limit=1&offset=1").json()
    assert page["count"] == 2 and [f["intended_at"] for f in page["results"]] == ["2026-11-21T12:00:00Z"]


# --- OpenAPI --------------------------------------------------------------------


def test_openapi_schema_has_the_schedule_operations_and_validates(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    for needle in (
        "/api/v1/schedules/{schedule_id}/fires:",
        "/api/v1/schedules/{schedule_id}/pause:",
        "/api/v1/schedules/{schedule_id}/resume:",
        "operationId: schedules_create",
        "operationId: schedules_partial_update",
        "every_seconds: 600",
        "timezone: Europe/Paris",
    ):
        assert needle in text, needle


def test_runs_api_names_the_schedule_and_slot_and_filters_by_schedule(staff_api):
    schedule = services.schedule_create(name="api-slot", agent_type="pass", kind="interval", interval_seconds=600)
    slot = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    fire = services.schedule_fire(schedule_id=schedule.pk, intended_at=slot, now=slot + timedelta(seconds=1))
    services.schedule_create(name="other", agent_type="pass", kind="interval", interval_seconds=600)
    body = staff_api.get(f"/api/v1/runs/{fire.run_id}").json()
    assert (body["schedule"], body["scheduled_for"]) == (schedule.pk, "2026-11-21T10:00:00Z")
    listed = staff_api.get(f"/api/v1/runs?schedule={schedule.pk}").json()["results"]
    assert [r["id"] for r in listed] == [str(fire.run_id)]
    assert staff_api.get("/api/v1/runs?schedule=999").json()["results"] == []
