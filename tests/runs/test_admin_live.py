"""The run page updates itself: the fragment view its script asks every few seconds."""

import json

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agentrunner.models import Role
from runs.models import AttemptStatus, RunStatus, StepAttempt, StepStatus
from tests.conftest import join, team_named
from tests.runs.factories import add_steps, make_flow_run, make_run, make_waiting_run

pytestmark = pytest.mark.django_db

WRITES = ("INSERT", "UPDATE", "DELETE")


def live_url(run) -> str:
    return reverse("admin:runs_run_live", args=[run.pk])


def change_url(run) -> str:
    return reverse("admin:runs_run_change", args=[run.pk])


def live(client, run) -> dict:
    response = client.get(live_url(run))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    return json.loads(response.content)


def test_live__reflects_status_timeline_and_result_as_the_run_goes_on(admin_client):
    run = make_run(RunStatus.PENDING)

    pending = live(admin_client, run)
    started = timezone.now()
    run.status, run.started_at = RunStatus.RUNNING, started
    run.save()
    step = run.steps.get()
    step.status = StepStatus.RUNNING
    step.save()
    StepAttempt.objects.create(step=step, number=1, worker_id="host:1:2", started_at=started)
    running = live(admin_client, run)
    run.status, run.finished_at, run.result = RunStatus.COMPLETED, timezone.now(), {"waited_seconds": 1}
    run.save()
    StepAttempt.objects.filter(step=step).update(status=AttemptStatus.SUCCESS, finished_at=run.finished_at)
    finished = live(admin_client, run)

    assert pending["finished"] is False and ">Pending</span>" in pending["fields"]["status_badge"]
    assert "not started yet" in pending["fields"]["timeline"]
    assert running["finished"] is False and ">Running</span>" in running["fields"]["status_badge"]
    assert (
        "still running" in running["fields"]["timeline"] and "attempt 1 of at most 2" in running["fields"]["timeline"]
    )
    assert running["fields"]["result_pretty"] == "No result yet."
    assert finished["finished"] is True and ">Completed</span>" in finished["fields"]["status_badge"]
    assert (
        '<span class="jt-key">waited_seconds</span> <span class="jt-num">1</span>'
        in finished["fields"]["result_pretty"]
    )


def test_live__the_same_parts_as_the_page(admin_client):
    run = make_run(RunStatus.COMPLETED, result={"answer": 42})  # finished: its timeline no longer moves
    page = admin_client.get(change_url(run)).content.decode()

    fields = live(admin_client, run)["fields"]

    for name in ("timeline", "status_badge", "result_pretty", "duration_display", "finished"):
        assert fields[name] in page, name
    assert {"flow_graph_display", "step_values"}.isdisjoint(fields)  # not a flow run: not on its page


def test_live__a_flow_run_sends_its_graph_and_steps(admin_client):
    run = make_flow_run(slug="live", steps=2)

    fields = live(admin_client, run)["fields"]

    assert "<svg" in fields["flow_graph_display"]
    assert "step-1" in fields["step_values"]


def test_live__waiting_run_says_why(admin_client):
    holder = make_run(RunStatus.RUNNING)
    waiting = make_waiting_run(holder_run=holder)

    fields = live(admin_client, waiting)["fields"]

    assert "Place in the queue: <strong>1</strong>" in fields["why_it_waits"]
    assert ">Waiting for slot</span>" in fields["status_badge"]


def test_run_page__unfinished_run_has_the_live_script_finished_one_not(admin_client):
    running = make_run(RunStatus.RUNNING)
    done = make_run(RunStatus.COMPLETED)

    assert live_url(running) in admin_client.get(change_url(running)).content.decode()
    assert live_url(done) not in admin_client.get(change_url(done)).content.decode()


def test_live__queries_do_not_grow_with_steps_and_nothing_is_written(admin_client):
    run = make_run(RunStatus.RUNNING)
    add_steps(run, 2)
    live(admin_client, run)  # warm the per-process caches
    with CaptureQueriesContext(connection) as small:
        live(admin_client, run)
    add_steps(run, 6, first_sequence=3)

    with CaptureQueriesContext(connection) as large:
        live(admin_client, run)

    statements = [q["sql"] for q in large.captured_queries]
    assert len(statements) == len(small.captured_queries), "\n".join(statements)
    assert [sql for sql in statements if sql.lstrip().upper().startswith(WRITES)] == []


def test_live__only_for_who_may_see_the_run(client, django_user_model):
    run = make_run(RunStatus.RUNNING)
    no_team = django_user_model.objects.create_user(username="no-team", password="pw", is_staff=True)
    no_team.user_permissions.add(Permission.objects.get(codename="view_run"))  # no longer decides anything
    outsider = django_user_model.objects.create_user(username="outsider", password="pw", is_staff=True)
    join(outsider, Role.ADMIN, team_named("other"))
    viewer = django_user_model.objects.create_user(username="viewer", password="pw", is_staff=True)
    join(viewer, Role.VIEWER)

    client.force_login(no_team)
    assert client.get(live_url(run)).status_code == 403
    client.force_login(outsider)
    assert client.get(live_url(run)).status_code == 404  # another team's run does not exist for them
    client.force_login(viewer)
    assert live(client, run)["finished"] is False
    client.logout()
    assert client.get(live_url(run)).status_code == 302  # to the login page


def test_live__a_deleted_run_tells_the_script_to_stop(admin_client):
    run = make_run(RunStatus.COMPLETED)
    url = live_url(run)
    run.delete()

    response = admin_client.get(url)

    assert response.status_code == 404 and json.loads(response.content)["finished"] is True


def test_live__needs_get(admin_client):
    assert admin_client.post(live_url(make_run(RunStatus.RUNNING))).status_code == 405
