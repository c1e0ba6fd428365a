"""Structured run events: names and context fields, from the API process and from real workers."""

import json
import logging

import pytest

from runs import services
from runs.models import Run
from tests.conftest import wait_for

USER_ID = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"


def events(caplog) -> list[dict]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict)]


@pytest.mark.django_db
def test_api_logs_busy_and_invalid_type_with_request_id(api, caplog):
    caplog.set_level("INFO")
    payload = {"agent_type": "policy-checker", "user_id": USER_ID, "input": {}}
    api.post("/api/v1/agents/run", payload, format="json")
    api.post("/api/v1/agents/run", payload, format="json")
    api.post("/api/v1/agents/run", {"agent_type": "nope", "user_id": USER_ID}, format="json")
    logged = events(caplog)
    busy = next(e for e in logged if e["event"] == "agent_busy")
    assert busy["agent_type"] == "policy-checker" and busy["user_id"] == USER_ID
    assert busy["request_id"]  # bound by django-structlog for the whole request
    invalid = next(e for e in logged if e["event"] == "invalid_agent_type")
    assert invalid["agent_type"] == "nope"


@pytest.mark.cluster
def test_worker_logs_json_events_with_run_context(clusters):
    (cluster,) = clusters(1, LOG_FORMAT="json")
    ok, _ = services.run_create(agent_type="pass", input={}, user_id=USER_ID)
    bad, _ = services.run_create(agent_type="test-flaky", input={"succeed_on": 9})
    wait_for(lambda: all(Run.objects.get(pk=r.pk).is_finished for r in (ok, bad)), timeout=30, message="runs done")

    lines = [json.loads(line) for line in cluster.output().splitlines() if line.startswith("{")]
    by_event = {}
    for line in lines:
        by_event.setdefault(line["event"], []).append(line)
    start = next(e for e in by_event["agent_start"] if e["run_id"] == str(ok.id))
    assert start["agent_type"] == "pass" and start["user_id"] == USER_ID
    assert start["step"] == "pass" and start["attempt"] == 1
    assert any(e["run_id"] == str(ok.id) for e in by_event["agent_complete"])
    errors = [e for e in by_event["agent_error"] if e["run_id"] == str(bad.id)]
    assert [e["attempt"] for e in errors] == [1, 2, 3]
    assert all("failed on purpose" in e["error"] for e in errors)


@pytest.mark.django_db(transaction=True)
def test_a_crash_is_logged_with_its_traceback(monkeypatch, caplog):
    from runs import engine

    def broken(self, ctx):
        raise KeyError("document")

    monkeypatch.setattr("agentrunner.agents.builtin.passthrough.PassAgent.run", broken)
    caplog.set_level("INFO")
    run, _ = services.run_create(agent_type="pass", input={})
    engine.step_execute(step_id=run.steps.get().pk)
    (record,) = [r for r in caplog.records if isinstance(r.msg, dict) and r.msg["event"] == "agent_error"]
    assert record.msg["code"] == "agent_crashed"
    rendered = logging.Formatter().formatException(_exc_info(record.msg["exc_info"]))
    assert "Traceback" in rendered and "broken" in rendered and "KeyError: 'document'" in rendered


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_run_logs_agent_cancelled_not_complete(monkeypatch, caplog):
    from runs import engine

    def cancelled_while_running(self, ctx):
        services.run_cancel(run_id=ctx.run_id)
        ctx.sleep(10)  # wakes as soon as the engine sees the cancel request
        return {"late": True}

    monkeypatch.setattr("agentrunner.agents.builtin.passthrough.PassAgent.run", cancelled_while_running)
    caplog.set_level("INFO")
    run, _ = services.run_create(agent_type="pass", input={})
    engine.step_execute(step_id=run.steps.get().pk)
    run.refresh_from_db()
    assert run.status == "CANCELLED"
    names = [e["event"] for e in events(caplog)]
    assert "agent_cancelled" in names
    assert "agent_complete" not in names and "agent_error" not in names


def _exc_info(value):
    return (type(value), value, value.__traceback__)


@pytest.mark.django_db
def test_a_refused_request_is_one_log_line(api, caplog):
    caplog.set_level("INFO")
    api.post("/api/v1/runs", {"agent": "nope"}, format="json")
    api.get("/api/v1/runs/00000000-0000-0000-0000-000000000000")
    lines = [(r.name, r.msg["event"] if isinstance(r.msg, dict) else r.getMessage()) for r in caplog.records]
    assert [line for line in lines if line[0].startswith(("django.request", "django_structlog"))] == [
        ("django_structlog.middlewares.request", "request_finished"),
        ("django_structlog.middlewares.request", "request_finished"),
    ], lines
