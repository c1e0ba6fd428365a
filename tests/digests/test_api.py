"""The digests API: define digests (editors), bad input by field, deliveries, preview, send now, decisions; roles
and team isolation.

`owner` is a runner of the default team (reads digests), `staff_user` an editor of it, `outsider` a runner of
team "other".
"""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from django_q.models import Schedule as QSchedule
from rest_framework.test import APIClient

from agentrunner.models import Role
from digests import services
from digests.models import DeliveryStatus, DigestDelivery, DigestSubscription
from runs.models import Run, RunStatus
from schedules.services import schedule_create
from tests.conftest import client_for, join, team_named
from tests.digests.factories import digest as digest_factory
from tests.digests.factories import finished_run as run_factory
from tests.flows.factories import flow

pytestmark = pytest.mark.django_db

DAILY = {
    "name": "Claim intake — top claims",
    "recipients": ["claims-team@example.com", "lead@example.com"],
    "flow": "claim-intake",
    "period": "daily",
    "send_at": "08:00",
    "timezone": "Europe/Paris",
    "rank_by": "score",
    "limit": 2,
}


def error_shape(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"detail", "code", "errors"}
    return body


@pytest.fixture
def claim_flow():
    return flow(slug="claim-intake")


@pytest.fixture
def other_editor_api(django_user_model):
    """An editor of team "other": may change its digests, sees none of the default team's."""
    user = django_user_model.objects.create_user(username="other-editor", password="pw")
    join(user, Role.EDITOR, team_named("other"))
    return client_for(user)


def make_digest(name="Digest", **fields) -> DigestSubscription:
    return digest_factory(name, **{"rank_by": "", **fields})


def period_start(digest) -> timezone.datetime:
    return services.digest_timing(digest).latest_at_or_before(timezone.now())


def finished_run(source, *, score=None, status=RunStatus.COMPLETED, at=None, claim="") -> Run:
    """A finished run of a flow (its current version) or of an agent, finished `at` (default: just now)."""
    completed = status == RunStatus.COMPLETED
    return run_factory(
        result={"output": {"score": score, "claim": claim}} if completed else None,
        error="" if completed else "policy-checker: timeout",
        status=status,
        at=at or timezone.now() - timedelta(microseconds=1),
        **(
            {"agent": "", "flow_version": source.current_version}
            if hasattr(source, "current_version")
            else {"agent": source}
        ),
    )


def runs_in_current_period(digest, source, scores):
    """Runs spread inside the current period so far (so they are in the preview whatever the clock says)."""
    start, now = period_start(digest), timezone.now()
    step = (now - start) / (len(scores) + 1)
    return [
        finished_run(source, score=score, claim=f"C-{i}", at=start + step * (i + 1)) for i, score in enumerate(scores)
    ]


# --- permissions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/digests"),
        ("post", "/api/v1/digests"),
        ("get", "/api/v1/digests/1"),
        ("patch", "/api/v1/digests/1"),
        ("delete", "/api/v1/digests/1"),
        ("get", "/api/v1/digests/1/deliveries"),
        ("post", "/api/v1/digests/1/send"),
        ("get", "/api/v1/digests/1/preview"),
        ("post", "/api/v1/digests/deliveries/1/resend"),
        ("post", "/api/v1/digests/deliveries/1/mark-sent"),
    ],
)
def test_every_digest_endpoint_requires_authentication(method, path):
    body = error_shape(getattr(APIClient(), method)(path), 401)
    assert body["code"] == "not_authenticated"


def test_members_below_editor_read_digests_but_change_nothing(api, claim_flow):
    digest = make_digest(flow=claim_flow)
    delivery = DigestDelivery.objects.create(
        subscription=digest,
        period_key="k",
        period_start=timezone.now(),
        period_end=timezone.now(),
        status=DeliveryStatus.FAILED,
    )
    assert api.get("/api/v1/digests").json()["results"][0]["name"] == "Digest"
    assert api.get(f"/api/v1/digests/{digest.pk}").status_code == 200
    assert api.get(f"/api/v1/digests/{digest.pk}/deliveries").status_code == 200
    assert api.get(f"/api/v1/digests/{digest.pk}/preview").status_code == 200  # as the admin's preview
    for response in (
        api.post("/api/v1/digests", DAILY, format="json"),
        api.patch(f"/api/v1/digests/{digest.pk}", {"enabled": False}, format="json"),
        api.delete(f"/api/v1/digests/{digest.pk}"),
        api.post(f"/api/v1/digests/{digest.pk}/send"),
        api.post(f"/api/v1/digests/deliveries/{delivery.pk}/resend"),
        api.post(f"/api/v1/digests/deliveries/{delivery.pk}/mark-sent"),
    ):
        body = error_shape(response, 403)
        assert body["code"] == "permission_denied" and "editor" in body["detail"]
    digest.refresh_from_db()
    delivery.refresh_from_db()
    assert digest.enabled and delivery.status == DeliveryStatus.FAILED
    assert not DigestDelivery.objects.exclude(pk=delivery.pk).exists()


def test_unknown_digest_or_delivery__404(staff_api):
    assert error_shape(staff_api.get("/api/v1/digests/999"), 404)["code"] == "not_found"
    assert error_shape(staff_api.post("/api/v1/digests/999/send"), 404)["code"] == "not_found"
    assert error_shape(staff_api.post("/api/v1/digests/deliveries/999/resend"), 404)["code"] == "not_found"
    assert error_shape(staff_api.get("/api/v1/digests/abc"), 404)["code"] == "not_found"


def test_a_digest_hidden_from_the_user_is_the_same_404_as_a_missing_one(outsider, staff_api, claim_flow):
    digest = make_digest(flow=claim_flow)
    client = client_for(outsider)

    for suffix in ("", "/deliveries", "/preview"):
        hidden = error_shape(client.get(f"/api/v1/digests/{digest.pk}{suffix}"), 404)
        missing = error_shape(staff_api.get(f"/api/v1/digests/999{suffix}"), 404)
        assert hidden == missing


def test_another_teams_digest_and_delivery_are_404_on_every_url_and_absent_from_the_list(
    api, other_editor_api, claim_flow
):
    ours = make_digest(name="Ours", flow=claim_flow)
    theirs = make_digest(name="Theirs", team=team_named("other"))
    now = timezone.now()
    delivery = DigestDelivery.objects.create(
        subscription=ours, period_key="k", period_start=now, period_end=now, status=DeliveryStatus.FAILED
    )

    assert [d["name"] for d in api.get("/api/v1/digests").json()["results"]] == ["Ours"]
    assert [d["name"] for d in other_editor_api.get("/api/v1/digests").json()["results"]] == ["Theirs"]
    url = f"/api/v1/digests/{ours.pk}"
    for response in (
        api.get(f"/api/v1/digests/{theirs.pk}"),
        other_editor_api.get(url),
        other_editor_api.get(f"{url}/deliveries"),
        other_editor_api.get(f"{url}/preview"),
        other_editor_api.patch(url, {"enabled": False}, format="json"),
        other_editor_api.post(f"{url}/send"),
        other_editor_api.delete(url),
        other_editor_api.post(f"/api/v1/digests/deliveries/{delivery.pk}/resend"),
        other_editor_api.post(f"/api/v1/digests/deliveries/{delivery.pk}/mark-sent"),
    ):
        assert error_shape(response, 404)["code"] == "not_found"
    ours.refresh_from_db()
    delivery.refresh_from_db()
    assert ours.enabled and delivery.status == DeliveryStatus.FAILED and DigestDelivery.objects.count() == 1


def test_the_same_name_in_two_teams__a_name_taken_in_the_team_is_400_on_name(staff_api, other_editor_api):
    payload = {**DAILY, "flow": None, "agent": "pass"}
    assert other_editor_api.post("/api/v1/digests", payload, format="json").status_code == 201
    assert staff_api.post("/api/v1/digests", payload, format="json").status_code == 201

    body = error_shape(staff_api.post("/api/v1/digests", payload, format="json"), 400)

    assert body["errors"]["name"] == [f"A digest named {DAILY['name']!r} already exists in this team."]
    assert DigestSubscription.objects.filter(name=DAILY["name"]).count() == 2


def test_a_flow_or_schedule_of_another_team_is_400_as_one_that_does_not_exist(staff_api, claim_flow):
    other = team_named("other")
    flow(slug="theirs", team=other)
    their_schedule = schedule_create(name="Theirs", agent_type="pass", kind="cron", cron="0 2 * * *", team=other)

    body = error_shape(staff_api.post("/api/v1/digests", {**DAILY, "flow": "theirs"}, format="json"), 400)
    assert body["errors"] == {"flow": ["No flow with slug 'theirs'."]}
    by_schedule = {**DAILY, "flow": None, "schedule": their_schedule.pk}
    body = error_shape(staff_api.post("/api/v1/digests", by_schedule, format="json"), 400)
    assert body["errors"] == {"schedule": [f"No schedule with id {their_schedule.pk}."]}
    ours = make_digest(flow=claim_flow)
    for change in ({"flow": "theirs"}, {"schedule": their_schedule.pk}):
        error_shape(staff_api.patch(f"/api/v1/digests/{ours.pk}", change, format="json"), 400)
    ours.refresh_from_db()
    assert ours.flow_id == claim_flow.pk and ours.schedule_id is None
    assert DigestSubscription.objects.count() == 1


def test_the_preview_of_an_agent_digest_ranks_only_its_teams_runs(api, outsider):
    digest = make_digest(agent_type="pass", rank_by="output.score")
    ours = runs_in_current_period(digest, "pass", [0.5])[0]
    theirs = finished_run("pass", score=0.99, claim="C-theirs", at=ours.finished_at)
    theirs.team = team_named("other")
    theirs.save(update_fields=["team"])

    preview = api.get(f"/api/v1/digests/{digest.pk}/preview").json()

    assert preview["runs"] == 1 and str(ours.pk) in preview["text"]
    assert "C-theirs" not in preview["text"] and str(theirs.pk) not in preview["html"]


# --- create, change, delete ---------------------------------------------------------


def test_an_editor_creates_a_daily_digest__201_and_django_q_row(staff_api, claim_flow):
    response = staff_api.post("/api/v1/digests", DAILY, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["flow"] == "claim-intake" and body["agent"] is None and body["schedule"] is None
    assert body["recipients"] == DAILY["recipients"]
    assert body["send_at"] == "08:00" and body["timezone"] == "Europe/Paris" and body["limit"] == 2
    assert body["period_description"] == "daily at 08:00 Europe/Paris"
    assert body["created_by"] == "staff" and body["last_delivery"] is None
    digest = DigestSubscription.objects.get(pk=body["id"])
    assert digest.created_by.username == "staff" and digest.team.slug == "default"
    row = QSchedule.objects.get(pk=digest.q_schedule_id)
    assert row.func == services.CLOSE_TASK
    # 08:00 in Paris is 07:00 or 06:00 UTC; the next one is within a day.
    next_send = timezone.datetime.fromisoformat(body["next_send_at"].replace("Z", "+00:00"))
    assert timezone.now() < next_send <= timezone.now() + timedelta(days=1)
    assert next_send.astimezone(services.digest_timing(digest).tz).strftime("%H:%M") == "08:00"


def test_create_weekly_digest_of_an_agent_with_weekday_name(staff_api):
    payload = {"name": "Weekly", "recipients": ["a@example.com"], "agent": "pass", "period": "weekly"}
    body = staff_api.post("/api/v1/digests", {**payload, "weekday": "Friday"}, format="json").json()
    assert body["agent"] == "pass" and body["weekday"] == "friday"
    assert body["period_description"] == "weekly on Friday at 08:00 UTC"
    assert DigestSubscription.objects.get(pk=body["id"]).weekday == 5


def test_after_run_digest_of_a_schedule_has_no_django_q_row(staff_api, staff_user):
    schedule = schedule_create(name="Nightly", agent_type="pass", kind="cron", cron="0 2 * * *", created_by=staff_user)
    payload = {"name": "Per run", "recipients": ["a@example.com"], "schedule": schedule.pk, "period": "after_run"}
    body = staff_api.post("/api/v1/digests", payload, format="json").json()
    assert body["schedule"] == schedule.pk and body["next_send_at"] is None
    assert body["period_description"] == "after each run of schedule Nightly"
    assert DigestSubscription.objects.get(pk=body["id"]).q_schedule_id is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recipients": ["ok@example.com", "not-an-email"]}, "recipients.1"),
        ({"recipients": []}, "recipients"),
        ({"recipients": "a@example.com"}, "recipients"),
        ({"flow": "no-such-flow"}, "flow"),
        ({"flow": 12}, "flow"),
        ({"flow": None, "agent": "no-such-agent"}, "agent"),
        ({"flow": None}, "source"),
        ({"agent": "pass"}, "source"),
        ({"period": "after_run"}, "period"),
        ({"period": "monthly"}, "period"),
        ({"send_at": "8 o'clock"}, "send_at"),
        ({"send_at": "25:00"}, "send_at"),
        ({"weekday": 7}, "weekday"),
        ({"weekday": "someday"}, "weekday"),
        ({"weekday": True}, "weekday"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"enabled": "maybe"}, "enabled"),
        ({"rank_order": "sideways"}, "rank_order"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "Top claims\r\nBcc: spy@example.com"}, "name"),
        ({"name": "Top\nclaims"}, "name"),
        ({"name": "Top\x1bclaims"}, "name"),
        ({"recipients": ["ok@example.com\r\nBcc: spy@example.com"]}, "recipients.0"),
    ],
)
def test_create_with_bad_input__400_with_the_field(staff_api, claim_flow, change, field):
    payload = {**DAILY, **change}
    body = error_shape(staff_api.post("/api/v1/digests", payload, format="json"), 400)
    assert body["code"] == "invalid"
    assert field in body["errors"], body
    assert not DigestSubscription.objects.exists()


def test_create__the_services_problems_use_the_apis_field_names(staff_api):
    payload = {**DAILY, "flow": None, "agent": "no-such-agent"}

    body = error_shape(staff_api.post("/api/v1/digests", payload, format="json"), 400)

    assert body["code"] == "invalid" and set(body["errors"]) == {"agent"}
    assert body["detail"].startswith("Invalid digest: agent: ")


def test_create_with_malformed_json_or_not_an_object__400(staff_api):
    body = error_shape(staff_api.post("/api/v1/digests", "{not json", content_type="application/json"), 400)
    assert body["code"] == "parse_error"
    body = error_shape(staff_api.post("/api/v1/digests", ["a"], format="json"), 400)
    assert body["errors"]
    body = error_shape(staff_api.post("/api/v1/digests", {}, format="json"), 400)
    assert {"name", "recipients"} <= set(body["errors"])


def test_create_with_a_taken_name__400_on_name(staff_api, claim_flow):
    make_digest(name=DAILY["name"])
    body = error_shape(staff_api.post("/api/v1/digests", DAILY, format="json"), 400)
    assert "already exists" in body["errors"]["name"][0]


def test_patch_changes_fields_and_a_new_source_replaces_the_old(staff_api, claim_flow, staff_user):
    digest = make_digest(flow=claim_flow)
    response = staff_api.patch(
        f"/api/v1/digests/{digest.pk}", {"agent": "pass", "period": "weekly", "weekday": 1}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["agent"] == "pass" and body["flow"] is None and body["weekday"] == "monday"
    digest.refresh_from_db()
    assert digest.flow_id is None and digest.agent_type == "pass" and digest.period == "weekly"
    schedule = schedule_create(name="Hourly", agent_type="pass", kind="cron", cron="0 * * * *", created_by=staff_user)
    body = staff_api.patch(
        f"/api/v1/digests/{digest.pk}", {"schedule": schedule.pk, "period": "after_run"}, format="json"
    ).json()
    assert body["schedule"] == schedule.pk and body["agent"] is None and body["next_send_at"] is None


def test_patch_with_an_invalid_change__400_and_nothing_saved(staff_api, claim_flow):
    digest = make_digest(flow=claim_flow)
    body = error_shape(staff_api.patch(f"/api/v1/digests/{digest.pk}", {"period": "after_run"}, format="json"), 400)
    assert "schedule" in body["errors"]["period"][0]
    error_shape(staff_api.patch(f"/api/v1/digests/{digest.pk}", {"flow": "x", "agent": "pass"}, format="json"), 400)
    digest.refresh_from_db()
    assert digest.period == "daily" and digest.flow_id == claim_flow.pk


def test_patch_with_a_line_break_in_the_name__400_naming_the_problem_and_nothing_saved(staff_api, claim_flow):
    digest = make_digest(flow=claim_flow)
    body = error_shape(
        staff_api.patch(f"/api/v1/digests/{digest.pk}", {"name": "Top\r\nBcc: spy@example.com"}, format="json"), 400
    )
    assert "control characters" in body["errors"]["name"][0] and "email header" in body["errors"]["name"][0]
    digest.refresh_from_db()
    assert digest.name == "Digest"


def test_pausing_removes_the_django_q_row_and_resuming_brings_it_back(staff_api):
    digest = make_digest()
    assert QSchedule.objects.filter(pk=digest.q_schedule_id).exists()
    body = staff_api.patch(f"/api/v1/digests/{digest.pk}", {"enabled": False}, format="json").json()
    assert body["enabled"] is False and body["next_send_at"] is None
    digest.refresh_from_db()
    assert digest.q_schedule_id is None and not QSchedule.objects.exists()
    staff_api.patch(f"/api/v1/digests/{digest.pk}", {"enabled": True}, format="json")
    digest.refresh_from_db()
    assert QSchedule.objects.filter(pk=digest.q_schedule_id, func=services.CLOSE_TASK).exists()


def test_delete_removes_the_digest_its_deliveries_and_the_django_q_row(staff_api):
    digest = make_digest()
    DigestDelivery.objects.create(
        subscription=digest, period_key="k", period_start=timezone.now(), period_end=timezone.now()
    )
    assert staff_api.delete(f"/api/v1/digests/{digest.pk}").status_code == 204
    assert not DigestSubscription.objects.exists() and not DigestDelivery.objects.exists()
    assert not QSchedule.objects.exists()


# --- deliveries, preview, send now ---------------------------------------------------


def test_deliveries_are_paginated_newest_first_and_the_list_shows_the_last_one(api):
    digest = make_digest()
    now = timezone.now()
    made = [
        DigestDelivery.objects.create(
            subscription=digest,
            period_key=f"k{i}",
            period_start=now - timedelta(hours=i + 1),
            period_end=now - timedelta(hours=i),
            run_ids=["6f1c2b7e-3f0a-4d1e-9d2a-0c5e8b7a1f42"] * i,
            status=DeliveryStatus.SENT,
        )
        for i in range(3)
    ]
    page = api.get(f"/api/v1/digests/{digest.pk}/deliveries?limit=2").json()
    assert page["count"] == 3 and page["next"]
    assert [d["id"] for d in page["results"]] == [made[2].pk, made[1].pk]
    rest = api.get(f"/api/v1/digests/{digest.pk}/deliveries?limit=2&offset=2").json()
    assert [d["id"] for d in rest["results"]] == [made[0].pk]
    last = api.get("/api/v1/digests").json()["results"][0]["last_delivery"]
    assert last["id"] == made[2].pk and last["status"] == "sent" and last["runs"] == 2


def test_digest_list_is_paginated_by_name(api):
    for name in ("Charlie", "Alpha", "Bravo"):
        make_digest(name)

    page = api.get("/api/v1/digests?limit=2").json()
    rest = api.get("/api/v1/digests?limit=2&offset=2").json()

    assert page["count"] == 3 and page["next"] and page["previous"] is None
    assert [d["name"] for d in page["results"] + rest["results"]] == ["Alpha", "Bravo", "Charlie"]
    assert rest["next"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "offset=-1"])
def test_digest_list_with_a_bad_limit_or_offset__400_naming_it(api, query):
    body = error_shape(api.get(f"/api/v1/digests?{query}"), 400)
    assert set(body["errors"]) == {query.split("=")[0]}


def test_preview_shows_the_ranked_runs_of_the_period_so_far_and_records_nothing(staff_api, claim_flow):
    digest = make_digest(flow=claim_flow, rank_by="score", limit=2)
    runs_in_current_period(digest, claim_flow, [0.41, 0.93, 0.77])
    finished_run(claim_flow, score=0.99, claim="C-old", at=period_start(digest) - timedelta(minutes=1))
    finished_run("pass", score=0.98, claim="C-other")  # another source
    response = staff_api.get(f"/api/v1/digests/{digest.pk}/preview")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["runs"] == 3 and body["empty"] is False
    assert body["subject"].startswith("Digest")
    for part in (body["text"], body["html"]):
        assert part.index("0.93") < part.index("0.77")  # ranked, highest first
        assert "0.41" not in part and "C-old" not in part and "C-other" not in part  # top 2, this period only
    assert not DigestDelivery.objects.exists()


def test_send_now__202_one_delivery_then_the_task_mails_both_parts_once(staff_api, claim_flow, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    digest = make_digest(flow=claim_flow, rank_by="score", recipients="a@example.com, b@example.com")
    runs = runs_in_current_period(digest, claim_flow, [0.5, 0.8])
    response = staff_api.post(f"/api/v1/digests/{digest.pk}/send")
    assert response.status_code == 202, response.content
    body = response.json()
    delivery = DigestDelivery.objects.get()
    assert body["id"] == delivery.pk and body["status"] == "pending" and body["manual"] is True
    assert sorted(body["run_ids"]) == sorted(str(r.pk) for r in runs)
    assert services.delivery_send(delivery_id=delivery.pk) == DeliveryStatus.SENT
    assert services.delivery_send(delivery_id=delivery.pk) is None  # a duplicate task sends nothing
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["a@example.com", "b@example.com"]
    assert message.subject == delivery.subject
    assert message.message()["Message-ID"] == delivery.message_id
    assert "0.8" in message.body and message.body.index("0.8") < message.body.index("0.5")
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html" and "0.8" in html
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 1
    last = staff_api.get(f"/api/v1/digests/{digest.pk}").json()["last_delivery"]
    assert last["status"] == "sent" and last["runs"] == 2


def test_send_now_queues_the_send_task_after_commit(staff_api, django_capture_on_commit_callbacks):
    digest = make_digest()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert staff_api.post(f"/api/v1/digests/{digest.pk}/send").status_code == 202
    assert len(callbacks) == 1 and DigestDelivery.objects.count() == 1


# --- resend and mark sent -------------------------------------------------------------


def delivery_in(status, **fields) -> DigestDelivery:
    digest = DigestSubscription.objects.first() or make_digest()
    now = timezone.now()
    return DigestDelivery.objects.create(
        subscription=digest,
        period_key=f"k-{status}-{DigestDelivery.objects.count()}",
        period_start=now - timedelta(hours=1),
        period_end=now,
        status=status,
        message_id="<digest-1-abc@example.com>",
        **fields,
    )


@pytest.mark.parametrize(
    ("status", "resend", "mark_sent"),
    [
        (DeliveryStatus.FAILED, 200, 200),
        (DeliveryStatus.SENDING, 200, 200),  # stuck: its worker stopped long ago
        (DeliveryStatus.SENT, 200, 409),
        (DeliveryStatus.PENDING, 409, 409),
        (DeliveryStatus.RETRYING, 409, 409),
        (DeliveryStatus.EMPTY, 409, 409),
    ],
)
def test_resend_and_mark_sent_follow_the_state_rules(staff_api, status, resend, mark_sent):
    for action, expected, after in (("resend", resend, "pending"), ("mark-sent", mark_sent, "sent")):
        delivery = delivery_in(status, sending_started_at=timezone.now() - timedelta(hours=1))
        response = staff_api.post(f"/api/v1/digests/deliveries/{delivery.pk}/{action}")
        delivery.refresh_from_db()
        if expected == 200:
            assert response.status_code == 200, response.content
            assert response.json()["status"] == after == delivery.status
            assert delivery.history[-1]["by"] == "staff"
        else:
            assert error_shape(response, 409)["code"] == "delivery_state"
            assert delivery.status == status and delivery.history == []


def test_a_stuck_sending_delivery_needs_a_decision(staff_api, settings):
    stuck = delivery_in(
        DeliveryStatus.SENDING, sending_started_at=timezone.now() - timedelta(seconds=settings.EMAIL_TIMEOUT * 3 + 60)
    )
    fresh = delivery_in(DeliveryStatus.SENDING, sending_started_at=timezone.now())
    assert error_shape(staff_api.post(f"/api/v1/digests/deliveries/{fresh.pk}/resend"), 409)["code"] == (
        "delivery_state"
    )
    results = staff_api.get(f"/api/v1/digests/{stuck.subscription_id}/deliveries").json()["results"]
    assert {d["id"]: d["needs_decision"] for d in results} == {stuck.pk: True, fresh.pk: False}
