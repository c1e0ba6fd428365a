"""Every list of schedules and slots, in the API and the admin: as many queries with three times the rows, and
no write on a GET."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from runs.models import Run, RunStatus
from schedules.models import FireStatus, Schedule, ScheduleFire
from tests.flows.factories import flow
from tests.schedules.factories import schedule as schedule_factory

pytestmark = pytest.mark.django_db

ROWS = 3  # the small page has ROWS rows, the large one 3 * ROWS
WRITES = ("INSERT", "UPDATE", "DELETE")
SCHEDULE_LIST = reverse("admin:schedules_schedule_changelist")
FIRE_LIST = reverse("admin:schedules_schedulefire_changelist")
# What a slot can become, and the run it started (None: no run).
SLOT_KINDS = [
    (FireStatus.STARTED, RunStatus.COMPLETED),
    (FireStatus.STARTED, RunStatus.FAILED),
    (FireStatus.STARTED, RunStatus.RUNNING),
    (FireStatus.SKIPPED_OVERLAP, None),
    (FireStatus.QUEUED, None),
    (FireStatus.FAILED, None),
]


def statements_of(client, url) -> list[str]:
    """The statements a GET of `url` sends (the page or answer must be a 200)."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return [q["sql"] for q in queries.captured_queries]


def assert_flat(client, url, *, grow, label: str) -> tuple[int, int]:
    """The GET sends as many queries after `grow()` tripled its rows as before, and writes nothing."""
    client.get(url)  # warm the per-process caches (content types, sites) before counting
    small = statements_of(client, url)
    grow()
    large = statements_of(client, url)
    print(f"{label}: {len(small)} queries small, {len(large)} large")  # noqa: T201 (shown with -s)
    assert len(large) == len(small), "\n".join(large)
    assert not [sql for sql in small + large if sql.lstrip().upper().startswith(WRITES)]
    return len(small), len(large)


def add_slots(schedule: Schedule, count: int) -> None:
    """`count` slots of every kind, older than the schedule's existing ones, half of the runs of a flow."""
    oldest = schedule.fires.order_by("intended_at").values_list("intended_at", flat=True).first() or timezone.now()
    for i in range(count):
        status, run_status = SLOT_KINDS[i % len(SLOT_KINDS)]
        at = oldest - timedelta(minutes=10 * (i + 1))
        run = None
        if run_status is not None:
            run = Run.objects.create(
                agent_type="pass",
                status=run_status,
                schedule=schedule,
                team=schedule.team,
                scheduled_for=at,
                finished_at=None if run_status == RunStatus.RUNNING else at + timedelta(seconds=3),
            )
        ScheduleFire.objects.create(schedule=schedule, intended_at=at, status=status, run=run, detail=f"slot {i}")


def add_schedules(count: int, *, prefix: str) -> None:
    """`count` schedules: flows and agents, intervals and crons, paused ones, each with two slots and a run."""
    for i in range(count):
        fields = {"kind": "cron", "cron": "0 7 * * 1-5", "timezone": "Europe/Paris"} if i % 2 else {}
        if i % 3 == 0:
            fields["flow"] = flow(slug=f"{prefix}-flow-{i}")
        schedule = schedule_factory(name=f"{prefix} schedule {i}", enabled=i % 4 != 3, **fields)
        add_slots(schedule, 2)


# --- the API ---------------------------------------------------------------------------------------


def test_api_schedule_list__queries_do_not_grow_with_schedules(staff_api):
    add_schedules(ROWS, prefix="small")

    assert_flat(staff_api, "/api/v1/schedules", grow=lambda: add_schedules(2 * ROWS, prefix="large"), label="api list")

    assert staff_api.get("/api/v1/schedules").json()["count"] == 3 * ROWS


def test_api_fires__queries_do_not_grow_with_slots(staff_api):
    schedule = schedule_factory()
    add_slots(schedule, ROWS)
    url = f"/api/v1/schedules/{schedule.pk}/fires"

    assert_flat(staff_api, url, grow=lambda: add_slots(schedule, 2 * ROWS), label="api fires")

    assert staff_api.get(url).json()["count"] == 3 * ROWS


def test_api_reads__write_nothing(staff_api):
    add_schedules(2, prefix="s")
    schedule = Schedule.objects.first()

    for url in (f"/api/v1/schedules/{schedule.pk}", f"/api/v1/schedules/{schedule.pk}/fires?limit=1"):
        statements = statements_of(staff_api, url)
        assert not [sql for sql in statements if sql.lstrip().upper().startswith(WRITES)], url


# --- the admin -------------------------------------------------------------------------------------


def test_admin_schedule_list__queries_do_not_grow_with_schedules(admin_client):
    add_schedules(ROWS, prefix="small")

    assert_flat(admin_client, SCHEDULE_LIST, grow=lambda: add_schedules(2 * ROWS, prefix="large"), label="schedules")


def test_admin_slot_list__queries_do_not_grow_with_slots(admin_client):
    add_schedules(ROWS, prefix="small")

    assert_flat(admin_client, FIRE_LIST, grow=lambda: add_schedules(2 * ROWS, prefix="large"), label="slots")

    response = admin_client.get(FIRE_LIST)
    assert response.context["cl"].result_count == ScheduleFire.objects.count() == 3 * ROWS * 2


def test_admin_schedule_page__queries_do_not_grow_with_recent_slots(admin_client):
    schedule = schedule_factory(flow=flow(slug="claims"))
    add_slots(schedule, ROWS)
    url = reverse("admin:schedules_schedule_change", args=[schedule.pk])

    assert_flat(admin_client, url, grow=lambda: add_slots(schedule, 2 * ROWS), label="schedule page")

    assert admin_client.get(url).content.decode().count("slot ") >= 3 * ROWS


def test_admin_slot_page__writes_nothing(admin_client):
    schedule = schedule_factory()
    add_slots(schedule, 1)
    url = reverse("admin:schedules_schedulefire_change", args=[ScheduleFire.objects.get().pk])

    statements = statements_of(admin_client, url)

    assert not [sql for sql in statements if sql.lstrip().upper().startswith(WRITES)]
