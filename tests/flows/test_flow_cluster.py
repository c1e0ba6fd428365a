"""Flows on real worker clusters: each step its own task, retry timing, timeouts, cancel, concurrency."""

import base64
import json
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from runs import services
from runs.models import Run, RunStatus, Step, StepAttempt, StepStatus
from tests.conftest import client_for, wait_for
from tests.flows.factories import chain, flow

pytestmark = pytest.mark.cluster
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def finished(run_id):
    run = Run.objects.get(pk=run_id)
    return run if run.is_finished else None


def start(definition, input=None, slug="test-flow"):
    run, _ = services.flow_run_create(version=flow(slug=slug, definition=definition).current_version, input=input or {})
    return run


def test_each_step_runs_as_its_own_task_and_the_flow_completes(clusters):
    clusters(1, workers=2)
    definition = chain(("a", "pass", {"n": 1}), ("b", "pass", {"m": "{{ steps.a.output.n }}"}), ("c", "pass", {}))
    started = start(definition)
    run = wait_for(lambda: finished(started.pk), timeout=20, message="flow done")
    assert run.status == RunStatus.COMPLETED
    assert run.result["path"] == ["a", "b", "c"]
    assert run.result["execution_history"]["b"] == {"status": "success", "data": {"m": 1}}
    assert StepAttempt.objects.filter(step__run=run).count() == 3


def test_retries_wait_with_exponential_backoff_and_fire_within_a_second_of_due(clusters):
    clusters(1)
    definition = chain(("flaky", "test-flaky", {"succeed_on": 3}))
    definition["tasks"][0]["retry"] = {"max_attempts": 3, "backoff_seconds": 0.5}
    started = start(definition)
    run = wait_for(lambda: finished(started.pk), timeout=30, message="flow done")
    assert run.status == RunStatus.COMPLETED
    first, second, third = StepAttempt.objects.filter(step__run=run).order_by("number")
    gap1 = (second.started_at - first.finished_at).total_seconds()
    gap2 = (third.started_at - second.finished_at).total_seconds()
    # Due after 0.5 s, then 1 s (measured: within one engine tick, 0.25 s here, plus pick-up).
    assert 0.5 <= gap1 < 1.5, gap1
    assert 1.0 <= gap2 < 2.0, gap2
    assert [a.status for a in (first, second, third)] == ["FAILED", "FAILED", "SUCCESS"]


def test_a_step_over_its_timeout_fails_with_a_timeout_error(clusters):
    clusters(1)
    definition = chain(("slow", "wait", {"seconds": 30}))
    definition["tasks"][0]["timeout_seconds"] = 0.5
    definition["tasks"][0]["retry"] = {"max_attempts": 1}  # a timeout is retryable: no retry here
    started = start(definition)
    run = wait_for(lambda: finished(started.pk), timeout=10, message="timed out")
    assert (run.status, run.error_code) == (RunStatus.FAILED, "timeout")
    attempt = StepAttempt.objects.get(step__run=run)
    assert attempt.error_code == "timeout"
    assert 0.5 <= (attempt.finished_at - attempt.started_at).total_seconds() < 2


def test_cancel_mid_flow_stops_the_current_step_and_starts_no_further_one(clusters):
    clusters(1)
    run = start(chain(("a", "pass", {}), ("b", "wait", {"seconds": 30}), ("c", "pass", {})))
    wait_for(
        lambda: Step.objects.filter(run=run, name="b", status=StepStatus.RUNNING).exists(), timeout=20, message="b"
    )
    services.run_cancel(run_id=run.pk)
    done = wait_for(lambda: finished(run.pk), timeout=3, message="cancelled")
    assert done.status == RunStatus.CANCELLED
    time.sleep(0.5)
    assert list(Step.objects.filter(run=run).values_list("name", "status")) == [
        ("a", StepStatus.SUCCESS),
        ("b", StepStatus.CANCELLED),
    ]


def test_flow_concurrency_limit_1_queue_across_two_clusters__runs_never_overlap(clusters):
    clusters(2, workers=2)
    definition = chain(("a", "wait", {"seconds": 0.2}), ("b", "pass", {}), concurrency={"limit": 1, "on_busy": "queue"})
    f = flow(definition=definition)
    runs = [services.flow_run_create(version=f.current_version, input={})[0] for _ in range(6)]
    wait_for(lambda: all(finished(r.pk) for r in runs), timeout=60, message="6 flow runs")
    spans = []
    for r in runs:
        attempts = StepAttempt.objects.filter(step__run=r)
        spans.append((min(a.started_at for a in attempts), max(a.finished_at for a in attempts), r.pk))
    spans.sort()
    for (_, end, _), (start_next, _, _) in zip(spans, spans[1:], strict=False):
        assert end <= start_next, "two runs of a limit-1 flow overlapped"
    assert [s[2] for s in spans] == [r.pk for r in runs], "queued flow runs did not start in FIFO order"
    assert all(Run.objects.get(pk=r.pk).status == RunStatus.COMPLETED for r in runs)


def test_flow_execute__answers_200_with_history_when_done_within_wait_else_202(clusters, owner):
    clusters(1)
    api = client_for(owner)
    inline = chain(("a", "pass", {"x": "{{ input.x }}"}), ("b", "pass", {}))
    done = api.post("/api/v1/flow/execute", {"flow": inline, "input": {"x": 7}, "wait": 10}, format="json")
    assert done.status_code == 200, done.content
    body = done.json()
    assert body["message"] == "Flow executed successfully"
    assert body["execution_history"] == {
        "a": {"status": "success", "data": {"x": 7}},
        "b": {"status": "success", "data": {}},
    }
    assert body["flow_id"].startswith("inline-") and body["run_id"]
    slow = chain(("a", "wait", {"seconds": 2}))
    pending = api.post("/api/v1/flow/execute", {"flow": slow, "wait": 0.2}, format="json")
    assert pending.status_code == 202 and "run_id" in pending.json()
    no_wait = api.post("/api/v1/flow/execute", {"flow": inline, "input": {"x": 1}}, format="json")
    assert no_wait.status_code == 202


def test_claim_intake_demo_flow_on_the_sample_pdf(clusters, staff_user):
    from django.core.management import call_command

    call_command("ensure_demo_content")
    clusters(1)
    api = client_for(staff_user)
    document = base64.b64encode((SAMPLES / "policy.pdf").read_bytes()).decode()
    claim = json.loads((SAMPLES / "claim.json").read_text())
    response = api.post(
        "/api/v1/flows/claim-intake/runs",
        {"input": {"document": {"pdf_base64": document}, "check_date": claim["check_date"], "claim_amount": 48500}},
        format="json",
    )
    assert response.status_code == 202, response.content
    run = wait_for(lambda: finished(response.json()["id"]), timeout=30, message="claim intake")
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.result["path"] == ["extract", "check", "accepted"]
    assert run.result["output"]["route"] == "accepted"
    assert APIClient().get("/api/v1/health").status_code in (200, 503)
