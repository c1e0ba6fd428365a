"""The schedule admin (list, change page, saving through the services, pause/resume, delete), the slot list, and
django-q2's schedule rows shown read-only."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin
from django.urls import reverse
from django_q.models import Schedule as QSchedule

from runs.models import Run, RunStatus
from schedules import services
from schedules.admin.display import cron_words, every_words
from schedules.admin.django_q_admin import ManagedQScheduleAdmin
from schedules.models import FireStatus, Schedule, ScheduleFire
from tests.flows.factories import flow

pytestmark = pytest.mark.django_db

LIST = reverse("admin:schedules_schedule_changelist")
ADD = reverse("admin:schedules_schedule_add")
FIRES = reverse("admin:schedules_schedulefire_changelist")


def change_url(schedule) -> str:
    return reverse("admin:schedules_schedule_change", args=[schedule.pk])


def agent_schedule(name="Wait a second", **fields) -> Schedule:
    values = {"agent_type": "wait", "input": {"seconds": 1}, "kind": "interval", "interval_seconds": 600, **fields}
    return services.schedule_create(name=name, **values)


def form_data(**fields) -> dict:
    data = {
        "name": "Morning check",
        "flow": "",
        "agent_type": "wait",
        "input": json.dumps({"seconds": 1}),
        "kind": "cron",
        "cron": "0 7 * * 1-5",
        "interval_seconds": "",
        "timezone": "Europe/Paris",
        "enabled": "on",
        "overlap": "skip",
        "catch_up": "skip_missed",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_every_words():
    assert [every_words(s) for s in (1, 45, 60, 600, 3600, 5400, 86400, 172800, 90061)] == [
        "every second",
        "every 45 s",
        "every minute",
        "every 10 min",
        "every hour",
        "every 1 h 30 min",
        "every day",
        "every 2 days",
        "every 1 days 1 h 1 min 1 s",
    ]


def test_cron_words_for_simple_expressions_only():
    assert cron_words("0 7 * * 1-5") == "Mon–Fri at 07:00"
    assert cron_words("30 2 * * *") == "every day at 02:30"
    assert cron_words("15 * * * *") == "every hour at :15"
    assert cron_words("0 9 * * 6,0") == "Sat, Sun at 09:00"
    assert cron_words("0 18 * * 5") == "Fri at 18:00"
    for expression in ("*/5 * * * *", "0 9 1 * *", "0 9 * * 5-1", "0 9-17 * * *", "0 9 * 1 *", "0 9 * * MON"):
        assert cron_words(expression) is None, expression


# --- list and change page -------------------------------------------------------


def test_list_shows_target_timing_state_next_time_and_last_run(admin_client):
    claim = flow(slug="claim-intake")
    interval = services.schedule_create(
        name="Claim intake", flow=claim, kind="interval", interval_seconds=600, input={}, overlap="queue"
    )
    agent_schedule(
        name="Mornings", kind="cron", cron="0 7 * * 1-5", interval_seconds=None, timezone="Europe/Paris", enabled=False
    )
    run = Run.objects.create(agent_type="", schedule=interval, team=interval.team, status=RunStatus.FAILED)
    response = admin_client.get(LIST)
    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        "every 10 min",
        "cron 0 7 * * 1-5 (Europe/Paris)",
        "Mon–Fri at 07:00",
        "Active",
        "Paused",
        "queue the slot",
        "skip the slot",
        "never ran",
        reverse("admin:runs_run_change", args=[run.pk]),
        reverse("admin:flows_flow_change", args=[claim.pk]),
        "Failed",
    ):
        assert text in html, text
    paused = admin_client.get(LIST + "?state=paused").content.decode()
    assert "Mornings" in paused and "Claim intake" not in paused


def test_change_page_shows_next_fire_times_last_run_and_recent_slots(admin_client):
    schedule = agent_schedule(
        name="<b>Mornings</b>", kind="cron", cron="0 9 * * *", interval_seconds=None, timezone="Europe/Paris"
    )
    t0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    run = Run.objects.create(
        agent_type="wait", schedule=schedule, team=schedule.team, scheduled_for=t0, status=RunStatus.COMPLETED
    )
    ScheduleFire.objects.create(schedule=schedule, intended_at=t0, status=FireStatus.STARTED, run=run)
    ScheduleFire.objects.create(
        schedule=schedule,
        intended_at=t0 - timedelta(days=1),
        status=FireStatus.SKIPPED_OVERLAP,
        detail="Run <i>x</i> was still running.",
    )
    response = admin_client.get(change_url(schedule))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Next 5 fire times" in html
    # In the viewer's time zone (UTC without the browser's `tz` cookie), the schedule's own in the tooltip:
    assert html.count(" 09:00 in Europe/Paris") >= 5
    assert html.count(" 08:00</span>") + html.count(" 07:00</span>") >= 5  # 09:00 in Paris, in winter or summer
    admin_client.cookies["tz"] = "Europe/Paris"
    html = admin_client.get(change_url(schedule)).content.decode()
    assert html.count(" 09:00</span>") >= 5 and "Times in Europe/Paris" in html
    assert html.count(reverse("admin:runs_run_change", args=[run.pk])) >= 2  # last run and the slot's run
    assert "Run started" in html and "Skipped: previous run still active" in html
    assert "Run &lt;i&gt;x&lt;/i&gt; was still running." in html
    assert "&lt;b&gt;Mornings&lt;/b&gt;" in html and "<b>Mornings</b>" not in html


def test_change_page_of_a_paused_schedule_says_so(admin_client):
    schedule = agent_schedule(enabled=False)
    html = admin_client.get(change_url(schedule)).content.decode()
    assert "Paused: nothing fires until it is resumed" in html
    assert "It has not started a run yet." in html


# --- saving goes through the services -------------------------------------------


def test_add_through_the_admin_creates_the_django_q_row(admin_client, admin_user):
    response = admin_client.post(ADD, form_data(cron="0  7 * * 1-5"))
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    schedule = Schedule.objects.get()
    assert (schedule.name, schedule.kind, schedule.cron, schedule.interval_seconds) == (
        "Morning check",
        "cron",
        "0 7 * * 1-5",
        None,
    )
    assert schedule.created_by == admin_user
    row = QSchedule.objects.get(pk=schedule.q_schedule_id)
    assert (row.func, row.schedule_type, row.cron) == ("schedules.tasks.schedule_fire", QSchedule.CRON, "0 7 * * 1-5")
    assert row.next_run > datetime.now(UTC)


def test_add_a_flow_schedule_with_an_interval(admin_client):
    claim = flow(slug="claim-intake")
    response = admin_client.post(
        ADD, form_data(flow=str(claim.pk), agent_type="", input="", kind="interval", interval_seconds="600")
    )
    assert response.status_code == 302
    schedule = Schedule.objects.get()
    assert (schedule.flow_id, schedule.agent_type, schedule.input, schedule.cron) == (claim.pk, "", {}, "")
    assert QSchedule.objects.get().minutes == 10


@pytest.mark.parametrize(
    "fields,field,message",
    [
        ({"cron": "0 25 * * *"}, "cron", "not a valid cron expression"),
        ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
        ({"kind": "interval", "interval_seconds": ""}, "interval_seconds", "Give either"),
        ({"input": json.dumps({"seconds": "x"})}, "input", "seconds:"),
        ({"input": "[1, 2]"}, "input", "JSON object"),
        ({"input": "{oops"}, "input", "not valid JSON"),
        ({"agent_type": ""}, "flow", "Give either a flow or an agent"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Select a valid choice"),
        # Beyond what timedelta holds: was a 500 (OverflowError) before the form's own bound was checked.
        ({"kind": "interval", "cron": "", "interval_seconds": "99999999999999999999"}, "interval_seconds", "at most"),
    ],
)
def test_add__problems_are_form_errors_and_nothing_is_saved(admin_client, fields, field, message):
    response = admin_client.post(ADD, form_data(**fields))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors and message in " ".join(errors[field]), errors
    assert not Schedule.objects.exists() and not QSchedule.objects.exists()


def test_add__flow_and_agent_together_is_an_error(admin_client):
    claim = flow(slug="claim-intake")
    response = admin_client.post(ADD, form_data(flow=str(claim.pk)))
    assert "not both" in " ".join(response.context["adminform"].form.errors["flow"])
    assert not Schedule.objects.exists()


def test_change_through_the_admin_updates_and_pausing_removes_the_django_q_row(admin_client):
    schedule = agent_schedule(name="Morning check")
    response = admin_client.post(change_url(schedule), form_data(cron="30 6 * * *"))
    assert response.status_code == 302
    row = QSchedule.objects.get()
    assert (row.schedule_type, row.cron) == (QSchedule.CRON, "30 6 * * *")
    schedule.refresh_from_db()
    assert (schedule.kind, schedule.interval_seconds, schedule.timezone) == ("cron", None, "Europe/Paris")

    response = admin_client.post(change_url(schedule), form_data(cron="30 6 * * *", enabled=None))
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.enabled is False and schedule.q_schedule_id is None and not QSchedule.objects.exists()


def test_a_name_taken_meanwhile_is_a_message_and_nothing_is_saved(admin_client, monkeypatch):
    schedule = agent_schedule(name="Morning check")

    def taken(**kwargs):  # another request took the name between the form's check and the save
        raise services.ScheduleInvalid({"name": ["A schedule named 'Morning check' already exists."]})

    monkeypatch.setattr(services, "schedule_update", taken)
    response = admin_client.post(change_url(schedule), form_data(cron="30 6 * * *"), follow=True)

    assert response.status_code == 200
    assert any("Nothing was saved" in m for m in messages_of(response))
    schedule.refresh_from_db()
    assert schedule.kind == "interval"


def test_delete_through_the_admin_removes_the_django_q_row(admin_client):
    schedule = agent_schedule()
    response = admin_client.post(reverse("admin:schedules_schedule_delete", args=[schedule.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Schedule.objects.exists() and not QSchedule.objects.exists()


def test_bulk_delete_goes_through_the_service(admin_client):
    ids = [agent_schedule(name=f"s{i}").pk for i in range(3)]
    response = admin_client.post(
        LIST, {"action": "delete_selected", "_selected_action": ids[:2], "post": "yes"}, follow=True
    )
    assert response.status_code == 200
    assert list(Schedule.objects.values_list("pk", flat=True)) == ids[2:]
    assert QSchedule.objects.count() == 1 and QSchedule.objects.get().pk == Schedule.objects.get().q_schedule_id


def test_pause_and_resume_actions(admin_client):
    first, second = agent_schedule(name="a"), agent_schedule(name="b")
    response = admin_client.post(
        LIST, {"action": "pause_schedules", "_selected_action": [first.pk, second.pk]}, follow=True
    )
    assert "Paused 2 schedule(s): a, b." in messages_of(response)
    assert not QSchedule.objects.exists()
    assert not Schedule.objects.filter(enabled=True).exists()

    response = admin_client.post(LIST, {"action": "resume_schedules", "_selected_action": [first.pk]}, follow=True)
    assert "Resumed 1 schedule(s): a." in messages_of(response)
    first.refresh_from_db()
    assert first.enabled and QSchedule.objects.get().pk == first.q_schedule_id


# --- slots ----------------------------------------------------------------------


def test_slot_list_is_read_only(admin_client):
    schedule = agent_schedule()
    fire = ScheduleFire.objects.create(
        schedule=schedule,
        intended_at=datetime(2026, 11, 21, 12, tzinfo=UTC),
        status=FireStatus.FAILED,
        detail="agent gone",
    )
    html = admin_client.get(FIRES).content.decode()
    assert "Could not start" in html and "agent gone" in html
    assert admin_client.get(FIRES + "?status__exact=failed").status_code == 200
    assert admin_client.get(FIRES + f"?schedule__id__exact={schedule.pk}").status_code == 200
    assert admin_client.get(reverse("admin:schedules_schedulefire_add")).status_code == 403
    page = admin_client.get(reverse("admin:schedules_schedulefire_change", args=[fire.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.get(reverse("admin:schedules_schedulefire_delete", args=[fire.pk])).status_code == 403


# --- django-q2's rows -----------------------------------------------------------


def test_django_q_schedule_admin_is_read_only(admin_client, rf, admin_user):
    schedule = agent_schedule()
    row = QSchedule.objects.get()
    model_admin = admin.site._registry[QSchedule]
    assert isinstance(model_admin, ManagedQScheduleAdmin)
    request = rf.get("/")
    request.user = admin_user
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, row)
    assert not model_admin.has_delete_permission(request, row)

    html = admin_client.get(reverse("admin:django_q_schedule_changelist")).content.decode()
    assert "managed by Agent Runner" in html and f"schedule: {schedule.name}" in html
    assert "schedules.tasks.schedule_fire" in html
    assert admin_client.get(reverse("admin:django_q_schedule_add")).status_code == 403
    change = reverse("admin:django_q_schedule_change", args=[row.pk])
    assert admin_client.get(change).status_code == 200
    admin_client.post(change, {"name": "hacked", "func": "os.system"})
    row.refresh_from_db()
    assert (row.name, row.func) == ("schedule: Wait a second", "schedules.tasks.schedule_fire")
    assert admin_client.get(reverse("admin:django_q_schedule_delete", args=[row.pk])).status_code == 403


def test_a_scheduled_runs_page_links_its_schedule_and_fire_time(admin_client):
    schedule = agent_schedule()
    fire = services.schedule_fire(
        schedule_id=schedule.pk,
        intended_at=datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
        now=datetime(2026, 11, 21, 10, 0, 1, tzinfo=UTC),
    )
    page = admin_client.get(reverse("admin:runs_run_change", args=[fire.run_id])).content.decode()
    assert "started by schedule" in page.lower()
    assert change_url(schedule) in page and "2026-11-21 10:00:00 UTC fire time" in page
    listed = admin_client.get(reverse("admin:runs_run_changelist") + f"?schedule__id__exact={schedule.pk}")
    assert str(fire.run_id)[:8] in listed.content.decode()
