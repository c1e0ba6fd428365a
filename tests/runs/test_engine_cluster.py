"""The engine's guarantees, proven with real qcluster processes, real HTTP and real signals."""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from runs import services
from runs.engine import queue as dispatch
from runs.models import Run, RunStatus, Slot, Step, StepAttempt, StepStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.cluster

USER_ID = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"


def finished(run_id):
    run = Run.objects.get(pk=run_id)
    return run if run.is_finished else None


def post_json(url: str, token: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_concurrent_posts_to_a_limit_1_reject_agent__exactly_one_accepted(live_server, owner):
    token = Token.objects.create(user=owner).key
    url = f"{live_server.url}/api/v1/agents/run"
    body = {"agent_type": "document-extractor", "user_id": USER_ID, "input": {"text": "Policy Number: P-1"}}
    barrier = threading.Barrier(20)

    def one(_):
        barrier.wait()
        return post_json(url, token, body)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))

    codes = sorted(code for code, _ in results)
    assert codes == [202] + [409] * 19, results
    busy = next(body for code, body in results if code == 409)
    assert "already running" in busy["detail"]
    assert busy["code"] == "agent_busy"
    assert Run.objects.count() == 1
    assert Slot.objects.count() == 1


def test_limit_1_queue_agent_across_3_clusters__no_overlap_and_fifo(clusters):
    services.agent_policy_update(agent_type="wait", limit=1, on_busy="queue")
    clusters(3, workers=2)
    runs = [services.run_create(agent_type="wait", input={"seconds": 0.2})[0] for _ in range(30)]

    wait_for(
        lambda: Run.objects.filter(status=RunStatus.COMPLETED).count() == 30,
        timeout=60,
        message="30 queued runs to complete",
    )
    attempts = list(StepAttempt.objects.filter(step__run__in=runs).select_related("step").order_by("started_at"))
    assert len(attempts) == 30
    for earlier, later in zip(attempts, attempts[1:], strict=False):
        assert earlier.finished_at <= later.started_at, "two runs of a limit-1 agent overlapped"
    started_order = [a.step.run_id for a in attempts]
    assert started_order == [r.id for r in runs], "queued runs did not start in FIFO order"
    assert Slot.objects.count() == 0
    # The work was really spread over several worker processes.
    assert len({a.worker_id.rsplit(":", 1)[0] for a in attempts}) > 1


def test_sigkill_of_the_worker_running_a_step__run_recovered_slot_freed_next_proceeds(clusters):
    services.agent_policy_update(agent_type="wait", limit=1, on_busy="queue")
    clusters(1, workers=2)
    victim, _ = services.run_create(agent_type="wait", input={"seconds": 30})
    Step.objects.filter(run=victim).update(max_attempts=1)  # a lost worker's attempt fails the run, not retried
    queued, _ = services.run_create(agent_type="wait", input={"seconds": 0})
    step = wait_for(
        lambda: Step.objects.filter(run=victim, status=StepStatus.RUNNING).first(), timeout=20, message="running"
    )
    assert Step.objects.get(run=queued).status == StepStatus.WAITING
    pid = int(step.worker_id.split(":")[1])

    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    run = wait_for(lambda: finished(victim.pk), timeout=20, message="victim recovered")
    recovered_after = time.monotonic() - killed_at
    assert run.status == RunStatus.FAILED
    assert run.error_code == "worker_lost"
    assert "Worker lost" in run.error
    # Recovered within lease + reaper period (+ scheduling slack on a busy CI machine).
    assert recovered_after < settings.RUN_LEASE_SECONDS + settings.ENGINE_TICK_SECONDS + 3
    nxt = wait_for(lambda: finished(queued.pk), timeout=20, message="queued run to proceed")
    assert nxt.status == RunStatus.COMPLETED
    assert Slot.objects.count() == 0


def test_same_step_message_delivered_twice__agent_body_runs_once(clusters, tmp_path):
    evidence = tmp_path / "executions.txt"
    clusters(1, workers=2)
    run, _ = services.run_create(agent_type="test-recorder", input={"path": str(evidence), "seconds": 0.5})
    step = run.steps.get()
    dispatch.steps_dispatch([step.id, step.id])  # two more deliveries of the same message

    wait_for(lambda: finished(run.pk), timeout=20, message="run done")
    time.sleep(1)  # let the duplicate deliveries be processed too
    assert len(evidence.read_text().splitlines()) == 1
    assert Run.objects.get(pk=run.pk).status == RunStatus.COMPLETED
    assert StepAttempt.objects.filter(step=step).count() == 1


def test_cancel_running_wait__stops_within_2_seconds_and_frees_slot(clusters):
    services.agent_policy_update(agent_type="wait", limit=1, on_busy="reject")
    clusters(1)
    run, _ = services.run_create(agent_type="wait", input={"seconds": 60})
    wait_for(lambda: Step.objects.filter(run=run, status=StepStatus.RUNNING).exists(), timeout=20, message="running")

    cancelled_at = time.monotonic()
    services.run_cancel(run_id=run.pk)
    done = wait_for(lambda: finished(run.pk), timeout=5, interval=0.02, message="cancel")
    assert time.monotonic() - cancelled_at < 2
    assert done.status == RunStatus.CANCELLED
    assert Slot.objects.count() == 0
    attempt = StepAttempt.objects.get(step__run=run)
    assert attempt.status == "CANCELLED"
    # The slot is free: a new run is accepted at once.
    services.run_create(agent_type="wait", input={"seconds": 0})


def test_retryable_error_is_retried_with_backoff_and_every_attempt_recorded(clusters):
    clusters(1)
    run, _ = services.run_create(agent_type="test-flaky", input={"succeed_on": 2})
    done = wait_for(lambda: finished(run.pk), timeout=20, message="run done")
    assert done.status == RunStatus.COMPLETED
    assert done.result == {"attempt": 2}
    first, second = StepAttempt.objects.filter(step__run=run).order_by("number")
    assert (first.status, second.status) == ("FAILED", "SUCCESS")
    assert "failed on purpose" in first.error
    gap = (second.started_at - first.finished_at).total_seconds()
    assert 0.9 <= gap < 3, gap  # 1 s backoff, fired by the engine tick


def test_slot_taken_at_request_time_expires_when_no_worker_starts_it(transactional_db, settings):
    settings.SLOT_START_DEADLINE_SECONDS = 0.2
    run, _ = services.run_create(agent_type="document-extractor", input={"text": "x"}, user_id=USER_ID)
    time.sleep(0.3)
    from runs.engine import engine_tick

    engine_tick(worker_id="test", force=True)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error_code == "start_deadline"
    assert Slot.objects.count() == 0
    assert timezone.now() >= run.finished_at
