"""The API request that starts a run travels with it: Run.request_id, and the worker's log lines for its steps."""

import json

import pytest
import structlog
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from runs import engine, services
from runs.models import Run, RunStatus, Step, StepStatus
from tests.conftest import wait_for
from tests.flows.factories import chain, flow
from tests.runs.factories import make_run

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["fastpath", "orm"])
def engine_variant(request, settings):
    """The fast path's claim selects the run's columns itself: both ways on PostgreSQL."""
    if request.param == "fastpath" and connection.vendor != "postgresql":
        pytest.skip("the fast path is PostgreSQL's")
    settings.ENGINE_FASTPATH = request.param == "fastpath"


def events(caplog, name) -> list[dict]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


def started(response) -> Run:
    body = response.json()
    return Run.objects.get(pk=body.get("run_id") or body["id"])  # /runs answers the run, the others its id


def request_id_of_last_request(caplog) -> str:
    (finished,) = events(caplog, "request_finished")
    return finished["request_id"]


START = {
    "POST /agents/run": (
        "/api/v1/agents/run",
        {"agent_type": "pass", "user_id": "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"},
    ),
    "POST /runs (agent)": ("/api/v1/runs", {"agent_type": "pass", "input": {}}),
    "POST /runs (flow)": ("/api/v1/runs", {"flow": "test-flow", "input": {}}),
    "POST /flows/{slug}/runs": ("/api/v1/flows/test-flow/runs", {"input": {}}),
    "POST /flow/execute": ("/api/v1/flow/execute", {"flow": chain(("a", "pass", {})), "input": {}, "wait": 0}),
}


@pytest.mark.parametrize("operation", START)
def test_every_api_start_stores_its_requests_id(api, caplog, operation):
    flow()
    path, body = START[operation]
    caplog.set_level("INFO")
    response = api.post(path, body, format="json")
    assert response.status_code in (201, 202), response.json()
    run = started(response)
    assert run.request_id and run.request_id == request_id_of_last_request(caplog)


def test_a_clients_request_id_is_kept__cut_to_the_column(api, settings):
    settings.DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = True
    response = api.post("/api/v1/runs", {"agent_type": "pass"}, format="json", HTTP_X_REQUEST_ID="r" * 100)
    assert started(response).request_id == "r" * 64


def test_a_run_started_outside_a_request_has_none(caplog, engine_variant):
    run, _ = services.run_create(agent_type="pass", input={})
    assert run.request_id == ""
    caplog.set_level("INFO")
    engine.step_execute(step_id=run.steps.get().pk)
    start, complete = events(caplog, "agent_start"), events(caplog, "agent_complete")
    assert start and complete and all("request_id" not in e for e in start + complete)


@pytest.mark.parametrize("agent_type", ["test-flaky", "test-async-flaky"])
def test_the_workers_lines_for_an_api_started_run_carry_its_request_id(api, caplog, engine_variant, agent_type):
    """agent_start, agent_error, step_retry_scheduled, agent_complete: every attempt, sync or async agent."""
    caplog.set_level("INFO")
    response = api.post("/api/v1/runs", {"agent_type": agent_type, "input": {"succeed_on": 2}}, format="json")
    request_id = request_id_of_last_request(caplog)
    run = started(response)
    step = run.steps.get()
    structlog.contextvars.clear_contextvars()  # a worker knows only what the run carries
    caplog.clear()

    engine.step_execute(step_id=step.pk)
    assert Step.objects.get(pk=step.pk).status == StepStatus.RETRYING
    Step.objects.filter(pk=step.pk).update(next_attempt_at=timezone.now())
    engine.steps_retry_due()
    engine.step_execute(step_id=step.pk)
    assert Run.objects.get(pk=run.pk).result == {"attempt": 2}

    lines = {name: events(caplog, name) for name in ("agent_start", "agent_error", "step_retry_scheduled")}
    lines["agent_complete"] = events(caplog, "agent_complete")
    assert [len(lines[name]) for name in lines] == [2, 1, 1, 1]
    assert all(e["request_id"] == request_id for found in lines.values() for e in found)
    assert [e["attempt"] for e in lines["agent_start"]] == [1, 2]
    assert structlog.contextvars.get_contextvars() == {}  # unbound once the step is recorded


@pytest.mark.cluster
def test_a_real_workers_json_lines_carry_the_api_requests_id(clusters, api, settings):
    settings.DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = True
    (cluster,) = clusters(1, LOG_FORMAT="json")
    response = api.post(
        "/api/v1/runs",
        {"agent_type": "test-flaky", "input": {"succeed_on": 2}},
        format="json",
        HTTP_X_REQUEST_ID="req-14",
    )
    run_id = str(started(response).pk)
    wait_for(lambda: Run.objects.get(pk=run_id).is_finished, timeout=30, message="run done")
    lines = [json.loads(line) for line in cluster.output().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "req-14"]
    names = [line["event"] for line in mine]
    assert names.count("agent_start") == 2 and "agent_error" in names and "step_retry_scheduled" in names
    assert "agent_complete" in names
    assert {line["run_id"] for line in mine if "run_id" in line} == {run_id}


# --- starts from the admin, and retries -----------------------------------------------------------------


def admin_started(admin_client, caplog, post) -> Run:
    """Run `post` (one admin request that starts a run) and return the run it started."""
    before = set(Run.objects.values_list("pk", flat=True))
    caplog.set_level("INFO")
    response = post()
    assert response.status_code == 302, response.content
    (run,) = Run.objects.exclude(pk__in=before)
    assert run.request_id and run.request_id == request_id_of_last_request(caplog)
    return run


def test_admin_starts_store_their_requests_id(admin_client, caplog):
    version = flow().current_version
    start = reverse("admin:runs_run_start")
    admin_started(admin_client, caplog, lambda: admin_client.post(start, {"agent_type": "pass", "input": "{}"}))
    caplog.clear()
    run_now = reverse("admin:flows_flow_run", args=[version.flow.pk])
    admin_started(admin_client, caplog, lambda: admin_client.post(run_now, {"input": "{}"}))
    caplog.clear()
    old = make_run(RunStatus.FAILED, agent_type="pass", input={})
    for action in ("rerun_runs", "retry_failed_runs"):  # a re-run, and a retry from the failed-run queue
        caplog.clear()
        data = {"action": action, "_selected_action": [old.pk]}
        admin_started(
            admin_client, caplog, lambda data=data: admin_client.post(reverse("admin:runs_run_changelist"), data)
        )
        Run.objects.exclude(pk=old.pk).delete()


def test_an_api_retry_stores_its_requests_id(api, caplog):
    failed = make_run(RunStatus.FAILED, agent_type="pass", input={})
    caplog.set_level("INFO")
    response = api.post(f"/api/v1/runs/{failed.pk}/retry")
    assert response.status_code == 202, response.content
    new = Run.objects.get(rerun_of=failed)
    assert new.request_id and new.request_id == request_id_of_last_request(caplog)
