import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django_q.models import Schedule as QSchedule

from agentrunner.db import save_unique_name
from agentrunner.teams.services import team_default
from runs.models import Run, RunStatus
from schedules import services
from schedules.exceptions import ScheduleInvalid
from schedules.models import FireStatus, Schedule, ScheduleFire
from tests.conftest import team_named, wait_for
from tests.flows.factories import flow
from tests.schedules.factories import schedule

pytestmark = pytest.mark.django_db

SLOT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
LOCK_WAIT_SECONDS = 10


def fire(s, *, late=1.0, intended=SLOT):
    return services.schedule_fire(schedule_id=s.pk, intended_at=intended, now=SLOT + timedelta(seconds=late))


def test_schedule_create__keeps_a_django_q_row_that_fires_our_task():
    s = schedule(cron="0 9 * * *", timezone="Europe/Paris")
    row = QSchedule.objects.get(pk=s.q_schedule_id)
    assert row.func == "schedules.tasks.schedule_fire"
    assert row.args == repr(s.pk)
    assert row.intended_date_kwarg == "intended_at"
    assert row.schedule_type == QSchedule.CRON and row.cron == "0 9 * * *"
    # Our computation, in Paris time, not django-q2's (server zone) one.
    assert row.next_run.astimezone(UTC).minute == 0
    assert row.next_run.astimezone(UTC).hour in (7, 8)


def test_schedule_update__pause_removes_the_row_and_resume_recreates_it():
    s = schedule()
    services.schedule_update(schedule=s, enabled=False)
    assert not QSchedule.objects.exists() and s.q_schedule_id is None
    services.schedule_update(schedule=s, enabled=True)
    assert QSchedule.objects.get().next_run > datetime.now(UTC)


def test_schedule_delete__removes_the_django_q_row():
    s = schedule()
    services.schedule_delete(schedule=s)
    assert not QSchedule.objects.exists()


def test_schedule_create__reports_every_problem():
    with pytest.raises(ScheduleInvalid) as caught:
        services.schedule_create(name="bad", agent_type="no-such-agent", kind="cron", cron="61 * * * *")
    assert set(caught.value.errors) == {"agent_type", "cron"}
    with pytest.raises(ScheduleInvalid) as caught:
        services.schedule_create(name="bad", agent_type="wait", input={"seconds": "x"}, interval_seconds=5)
    assert "input.seconds" in caught.value.errors
    with pytest.raises(ScheduleInvalid) as caught:
        services.schedule_create(name="bad", agent_type="pass", kind="cron", cron="* * * * *", timezone="Nowhere/X")
    assert "timezone" in caught.value.errors


def test_schedule_update__a_taken_name_is_invalid_on_name():
    schedule(name="Nightly")
    other = schedule(name="Hourly")

    with pytest.raises(ScheduleInvalid) as raised:
        services.schedule_update(schedule=other, name="Nightly")

    assert raised.value.errors == {"name": ["A schedule named 'Nightly' already exists in this team."]}
    other.refresh_from_db()
    assert other.name == "Hourly"


# --- teams ------------------------------------------------------------------------


def test_schedule_create__a_name_is_unique_in_its_team_only():
    ours = schedule(name="Nightly")
    theirs = schedule(name="Nightly", team=team_named("other"))

    assert (ours.team.slug, theirs.team.slug) == ("default", "other")
    with pytest.raises(ScheduleInvalid) as raised:
        schedule(name="Nightly", team=team_named("other"))
    assert raised.value.errors == {"name": ["A schedule named 'Nightly' already exists in this team."]}
    renamed = schedule(name="Hourly", team=team_named("other"))
    services.schedule_update(schedule=renamed, name="Nightly" + "!")  # free in its team
    with pytest.raises(ScheduleInvalid):
        services.schedule_update(schedule=renamed, name="Nightly")


def test_schedule_create_and_update__another_teams_flow_is_invalid_as_one_that_does_not_exist():
    theirs = flow(slug="theirs", team=team_named("other"))

    with pytest.raises(ScheduleInvalid) as raised:
        schedule(name="Uses theirs", flow=theirs, input={})
    assert raised.value.errors == {"flow": ["No flow 'theirs'."]}
    ours = schedule(name="Agent schedule")
    with pytest.raises(ScheduleInvalid) as raised:
        services.schedule_update(schedule=ours, flow=theirs)
    assert raised.value.errors == {"flow": ["No flow 'theirs'."]}
    ours.refresh_from_db()
    assert ours.flow_id is None and ours.agent_type == "pass"
    # In its own team the flow is fine.
    assert schedule(name="Theirs too", flow=theirs, input={}, team=theirs.team).flow_id == theirs.pk


def test_schedule_fire__the_run_belongs_to_the_schedules_team():
    other = team_named("other")
    agent = schedule(name="Agent", team=other)
    flow_schedule = schedule(name="Flow", flow=flow(slug="scored", team=other), input={"score": 4}, team=other)

    runs = [fire(agent).run, fire(flow_schedule).run]

    assert [run.team_id for run in runs] == [other.pk, other.pk]
    assert not Run.objects.filter(team=team_default()).exists()


def nightly() -> Schedule:
    return Schedule(name="Nightly", team=team_default(), agent_type="pass", kind="interval", interval_seconds=600)


@pytest.mark.django_db(transaction=True)
def test_save_unique_name__a_name_a_concurrent_request_takes_after_the_check_is_invalid_on_name():
    if connection.vendor != "postgresql":
        pytest.skip("two connections that wait for each other: PostgreSQL")
    taken, release, outcome = threading.Event(), threading.Event(), {}

    def rival():  # another request: saves the name, commits once ours waits for it
        try:
            with transaction.atomic():
                nightly().save()
                taken.set()
                release.wait(timeout=LOCK_WAIT_SECONDS)
        finally:
            connections.close_all()

    def ours():  # checks the name (free: the rival's row is not committed), then waits on the unique index
        try:
            save_unique_name(nightly(), invalid=ScheduleInvalid, within="team")
        except ScheduleInvalid as exc:
            outcome["errors"] = exc.errors
        finally:
            connections.close_all()

    threads = [threading.Thread(target=rival), threading.Thread(target=ours)]
    threads[0].start()
    assert taken.wait(timeout=LOCK_WAIT_SECONDS)
    threads[1].start()
    wait_for(waiting_on_a_lock, timeout=LOCK_WAIT_SECONDS, message="our insert to wait for the rival's row")
    release.set()
    for thread in threads:
        thread.join(timeout=LOCK_WAIT_SECONDS)

    assert outcome["errors"] == {"name": ["A schedule named 'Nightly' already exists in this team."]}
    assert Schedule.objects.filter(name="Nightly").count() == 1


def waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def test_save_unique_name__a_refusal_not_about_the_name_stays_an_integrity_error():
    no_target = Schedule(
        name="Nothing to start", team=team_default(), agent_type="", kind="interval", interval_seconds=600
    )

    with pytest.raises(IntegrityError):
        save_unique_name(no_target, invalid=ScheduleInvalid, within="team")


def test_schedule_fire__starts_one_run_for_its_slot():
    s = schedule()
    f = fire(s)
    assert f.status == FireStatus.STARTED
    run = Run.objects.get()
    assert (run.schedule_id, run.scheduled_for, run.input) == (s.pk, SLOT, {"score": 1})
    assert f.run_id == run.pk


def test_schedule_fire__the_same_slot_twice_starts_nothing_more():
    s = schedule(overlap="allow")
    fire(s)
    assert fire(s, late=2.0) is None
    assert fire(s, late=3.0, intended=SLOT - timedelta(minutes=10)) is None
    assert Run.objects.count() == 1 and ScheduleFire.objects.count() == 1


def test_run_schedule_slot__is_unique_in_the_database():
    s = schedule(overlap="allow")
    fire(s)
    with pytest.raises(IntegrityError):
        Run.objects.create(agent_type="pass", schedule=s, scheduled_for=SLOT, team=s.team)


def test_schedule_fire__moves_django_q_next_run_to_our_next_slot():
    s = schedule()
    fire(s)
    assert QSchedule.objects.get().next_run == SLOT + timedelta(minutes=10)


def test_overlap_skip__skips_while_the_previous_run_is_active():
    s = schedule(overlap="skip")
    fire(s)
    later = fire(s, intended=SLOT + timedelta(minutes=10), late=601)
    assert later.status == FireStatus.SKIPPED_OVERLAP and "still" in later.detail
    Run.objects.update(status=RunStatus.COMPLETED)
    third = fire(s, intended=SLOT + timedelta(minutes=20), late=1201)
    assert third.status == FireStatus.STARTED


def test_overlap_queue__starts_queued_slots_in_order_once_the_previous_run_ends():
    s = schedule(overlap="queue")
    fire(s)
    second = fire(s, intended=SLOT + timedelta(minutes=10), late=601)
    third = fire(s, intended=SLOT + timedelta(minutes=20), late=1201)
    assert [second.status, third.status] == [FireStatus.QUEUED, FireStatus.QUEUED]
    assert services.schedule_queue_advance() == 0  # the first run is still active
    Run.objects.update(status=RunStatus.COMPLETED)
    assert services.schedule_queue_advance() == 1
    second.refresh_from_db()
    third.refresh_from_db()
    assert second.status == FireStatus.STARTED and third.status == FireStatus.QUEUED
    assert second.run.scheduled_for == SLOT + timedelta(minutes=10)


def test_overlap_allow__starts_even_while_a_run_is_active():
    s = schedule(overlap="allow")
    fire(s)
    assert fire(s, intended=SLOT + timedelta(minutes=10), late=601).status == FireStatus.STARTED
    assert Run.objects.filter(schedule=s).count() == 2


def test_pause__drops_queued_slots():
    s = schedule(overlap="queue")
    fire(s)
    queued = fire(s, intended=SLOT + timedelta(minutes=10), late=601)
    services.schedule_update(schedule=s, enabled=False)
    queued.refresh_from_db()
    assert queued.status == FireStatus.SKIPPED_OVERLAP and "paused" in queued.detail


def test_catch_up_skip_missed__skips_a_slot_reached_too_late(settings):
    settings.SCHEDULE_MISFIRE_GRACE_SECONDS = 60
    s = schedule(catch_up="skip_missed")
    # Workers were down from 07:00; at 10:05 django-q2 fires the row once, intended 07:00.
    f = fire(s, intended=SLOT - timedelta(hours=3), late=300)
    assert f.status == FireStatus.SKIPPED_MISSED and f.intended_at == SLOT
    assert not Run.objects.exists()
    assert QSchedule.objects.get().next_run == SLOT + timedelta(minutes=10)


def test_catch_up_skip_missed__still_runs_a_slot_within_the_grace(settings):
    settings.SCHEDULE_MISFIRE_GRACE_SECONDS = 60
    s = schedule(catch_up="skip_missed")
    f = fire(s, intended=SLOT - timedelta(hours=3), late=30)
    assert f.status == FireStatus.STARTED and Run.objects.count() == 1


def test_catch_up_run_once__one_run_for_all_missed_slots():
    s = schedule(catch_up="run_once")
    f = fire(s, intended=SLOT - timedelta(hours=3), late=300)
    assert f.status == FireStatus.STARTED
    assert "19 slots" in f.detail  # 07:00 … 10:00 every 10 minutes
    assert Run.objects.get().scheduled_for == SLOT


def test_schedule_fire__a_refused_start_is_recorded_on_the_slot():
    f = flow(slug="off")
    s = schedule(name="flow-schedule", flow=f, input={})
    f.enabled = False
    f.save()
    result = fire(s)
    assert result.status == FireStatus.FAILED and "disabled" in result.detail
    assert not Run.objects.exists()


def test_schedule_fire__a_flow_schedule_starts_the_newest_version():
    f = flow(slug="scored")
    s = schedule(name="flow-schedule", flow=f, input={"score": 4})
    result = fire(s)
    run = result.run
    assert run.flow_version.flow_id == f.pk and run.schedule_id == s.pk


def test_schedule_fire__paused_or_deleted_schedules_start_nothing():
    s = schedule()
    services.schedule_update(schedule=s, enabled=False)
    assert fire(s) is None
    assert services.schedule_fire(schedule_id=999999, intended_at=SLOT) is None
    assert not Run.objects.exists()


def test_schedules_repair__recreates_a_row_deleted_by_hand():
    s = schedule()
    QSchedule.objects.all().delete()
    assert services.schedules_repair() == 1
    s.refresh_from_db()
    assert QSchedule.objects.get(pk=s.q_schedule_id).func == "schedules.tasks.schedule_fire"
    assert services.schedules_repair() == 0
