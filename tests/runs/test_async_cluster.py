"""Async steps in real qcluster processes: many in flight per worker, leases, crashes, cancel, drain, backpressure.

On both databases (SQLite serialises the writers; the connection count is PostgreSQL's)."""

import os
import signal
import time
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from runs import services
from runs.models import Run, RunStatus, Step, StepAttempt, StepStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.cluster


def start_many(n, agent_type="test-async-recorder", **input):
    return [services.run_create(agent_type=agent_type, input=input)[0] for _ in range(n)]


def count_status(runs, status) -> int:
    return Run.objects.filter(pk__in=[r.pk for r in runs], status=status).count()


def evidence(path) -> tuple[Counter, Counter]:
    """(starts, completions) per run id, from the recorder's file."""
    starts, done = Counter(), Counter()
    for line in path.read_text().splitlines():
        kind, run_id, *_ = line.split()
        (starts if kind == "start" else done)[run_id] += 1
    return starts, done


def max_overlap(attempts) -> int:
    edges = sorted([(a.started_at, 1) for a in attempts] + [(a.finished_at, -1) for a in attempts])
    level = peak = 0
    for _, delta in edges:
        level += delta
        peak = max(peak, level)
    return peak


def test_one_worker_carries_50_async_steps_at_once(clusters, tmp_path):
    clusters(1, workers=1)
    runs = start_many(50, path=str(tmp_path / "e.txt"), seconds=1.5)
    wait_for(lambda: count_status(runs, RunStatus.COMPLETED) == 50, timeout=40, message="50 runs complete")
    attempts = list(StepAttempt.objects.filter(step__run__in=runs))
    assert len(attempts) == 50
    assert len({a.worker_id for a in attempts}) == 1  # one worker process
    assert max_overlap(attempts) >= 40, "the steps did not wait concurrently"


def test_a_full_event_loop_applies_backpressure_and_refuses_nothing(clusters, tmp_path):
    clusters(1, workers=1, ASYNC_STEPS_PER_WORKER=4)
    runs = start_many(12, path=str(tmp_path / "e.txt"), seconds=0.5)
    wait_for(lambda: count_status(runs, RunStatus.COMPLETED) == 12, timeout=40, message="12 runs complete")
    attempts = list(StepAttempt.objects.filter(step__run__in=runs))
    assert len(attempts) == 12
    assert max_overlap(attempts) <= 4


def test_leases_of_in_flight_async_steps_are_heartbeated(clusters, tmp_path):
    clusters(1, workers=1)
    lease = settings.RUN_LEASE_SECONDS
    runs = start_many(10, path=str(tmp_path / "e.txt"), seconds=lease * 2)
    wait_for(lambda: count_status(runs, RunStatus.RUNNING) == 10, timeout=20, message="10 running")
    first = dict(Step.objects.filter(run__in=runs).values_list("pk", "lease_expires_at"))
    time.sleep(lease * 0.8)
    later = dict(Step.objects.filter(run__in=runs).values_list("pk", "lease_expires_at"))
    assert all(later[pk] > first[pk] for pk in first), "a lease was not extended"
    wait_for(lambda: count_status(runs, RunStatus.COMPLETED) == 10, timeout=30, message="10 runs complete")
    assert StepAttempt.objects.filter(step__run__in=runs).count() == 10  # none was reaped


def test_sigkill_with_50_async_steps_in_flight__all_recovered_none_lost_none_twice(clusters, tmp_path):
    """A second cluster runs the recovered steps: django-q2 (issue #23) stalls a cluster whose worker is
    killed while its main thread waits for a message, which is where a worker carrying async steps waits;
    its pusher still takes messages, which the tick sends again after STEP_REDISPATCH_SECONDS."""
    path = tmp_path / "e.txt"
    clusters(1, workers=1, STEP_REDISPATCH_SECONDS=4)
    runs = start_many(50, path=str(path), seconds=4)
    wait_for(lambda: count_status(runs, RunStatus.RUNNING) == 50, timeout=30, message="50 in flight")
    pid = int(Step.objects.filter(run__in=runs).first().worker_id.split(":")[1])
    clusters(1, workers=1, STEP_REDISPATCH_SECONDS=4)

    os.kill(pid, signal.SIGKILL)
    killed_at = timezone.now()

    wait_for(lambda: count_status(runs, RunStatus.COMPLETED) == 50, timeout=60, message="50 runs recovered")
    lost = list(StepAttempt.objects.filter(step__run__in=runs, number=1))
    assert {a.error_code for a in lost} == {"worker_lost"}
    slack = 3  # scheduling on a busy 2-core machine
    for attempt in lost:
        recovered_after = (attempt.finished_at - killed_at).total_seconds()
        assert recovered_after < settings.RUN_LEASE_SECONDS + settings.ENGINE_TICK_SECONDS + slack
    assert StepAttempt.objects.filter(step__run__in=runs, number=2, status="SUCCESS").count() == 50
    starts, done = evidence(path)
    assert all(done[str(r.pk)] == 1 for r in runs), "a step completed twice (or never)"
    assert all(starts[str(r.pk)] == 2 for r in runs)


def test_cancelling_one_in_flight_async_step_stops_it_and_leaves_the_others(clusters, tmp_path):
    clusters(1, workers=1)
    runs = start_many(20, path=str(tmp_path / "e.txt"), seconds=6)
    wait_for(lambda: count_status(runs, RunStatus.RUNNING) == 20, timeout=30, message="20 in flight")
    victim, others = runs[7], [r for r in runs if r != runs[7]]

    cancelled_at = time.monotonic()
    services.run_cancel(run_id=victim.pk)
    wait_for(lambda: Run.objects.get(pk=victim.pk).is_finished, timeout=5, interval=0.02, message="cancel")
    assert time.monotonic() - cancelled_at < 2
    assert Run.objects.get(pk=victim.pk).status == RunStatus.CANCELLED
    assert count_status(others, RunStatus.RUNNING) == 19
    wait_for(lambda: count_status(others, RunStatus.COMPLETED) == 19, timeout=30, message="the others complete")


def test_a_blocking_sync_agent_does_not_stall_the_async_steps_of_its_worker(clusters, tmp_path):
    clusters(1, workers=1)
    runs = start_many(20, path=str(tmp_path / "e.txt"), seconds=1)
    wait_for(lambda: count_status(runs, RunStatus.RUNNING) == 20, timeout=30, message="20 in flight")
    blocker, _ = services.run_create(agent_type="test-block", input={"seconds": 8})
    wait_for(lambda: Run.objects.get(pk=blocker.pk).status == RunStatus.RUNNING, timeout=10, message="blocker runs")

    wait_for(lambda: count_status(runs, RunStatus.COMPLETED) == 20, timeout=6, message="async steps beside it")
    assert Run.objects.get(pk=blocker.pk).status == RunStatus.RUNNING  # still blocking its thread
    wait_for(lambda: Run.objects.get(pk=blocker.pk).is_finished, timeout=20, message="blocker done")


def test_async_retries_with_backoff(clusters):
    clusters(1, workers=1)
    run, _ = services.run_create(agent_type="test-async-flaky", input={"succeed_on": 3})
    done = wait_for(lambda: Run.objects.get(pk=run.pk).is_finished and Run.objects.get(pk=run.pk), timeout=30)
    assert done.status == RunStatus.COMPLETED and done.result == {"attempt": 3}
    first, second, third = StepAttempt.objects.filter(step__run=run).order_by("number")
    assert 0.9 <= (second.started_at - first.finished_at).total_seconds() < 3  # 1 s
    assert 1.9 <= (third.started_at - second.finished_at).total_seconds() < 4  # 2 s


def test_recycle_drains_the_in_flight_async_steps_first(clusters, tmp_path):
    """django-q2 replaces a worker after `recycle` tasks: its async steps finish before it goes."""
    path = tmp_path / "e.txt"
    clusters(1, workers=1, Q_RECYCLE=3)
    runs = start_many(9, path=str(path), seconds=1.5)
    wait_for(lambda: count_status(runs, RunStatus.COMPLETED) == 9, timeout=60, message="9 runs complete")
    attempts = list(StepAttempt.objects.filter(step__run__in=runs))
    assert len(attempts) == 9 and {a.status for a in attempts} == {"SUCCESS"}
    assert len({a.worker_id for a in attempts}) == 3  # three worker processes took three each
    starts, done = evidence(path)
    assert set(done.values()) == {1} and len(done) == 9


def test_sigterm_hands_back_what_outlasts_the_drain__another_cluster_completes_it(clusters, tmp_path):
    """Steps longer than ASYNC_DRAIN_SECONDS go back to the queue when a cluster stops, and run elsewhere."""
    path = tmp_path / "e.txt"
    (cluster,) = clusters(1, workers=1, ASYNC_DRAIN_SECONDS=0.5)
    runs = start_many(5, path=str(path), seconds=4)
    wait_for(lambda: count_status(runs, RunStatus.RUNNING) == 5, timeout=30, message="5 in flight")
    cluster.process.send_signal(signal.SIGTERM)
    cluster.process.wait(timeout=30)
    steps = Step.objects.filter(run__in=runs)
    assert {s.status for s in steps} == {StepStatus.QUEUED}, "not handed back"

    clusters(1, workers=1)
    wait_for(lambda: count_status(runs, RunStatus.COMPLETED) == 5, timeout=60, message="5 runs complete")
    for run in runs:
        first, second = StepAttempt.objects.filter(step__run=run).order_by("number")
        assert (first.status, first.error_code) == ("CANCELLED", "worker_shutdown")
        assert second.status == "SUCCESS" and first.worker_id != second.worker_id
    starts, done = evidence(path)
    assert set(done.values()) == {1} and len(done) == 5


def test_django_q2_timeout_of_a_worker__its_async_steps_are_recovered(clusters, tmp_path):
    """A sync step past STEP_MAX_SECONDS gets django-q2's timeout; the worker is killed with async steps
    in flight: they are retried elsewhere, none lost, none twice."""
    path = tmp_path / "e.txt"
    clusters(1, workers=2, STEP_MAX_SECONDS=3)
    runs = start_many(10, path=str(path), seconds=6)
    wait_for(lambda: count_status(runs, RunStatus.RUNNING) == 10, timeout=30, message="10 in flight")
    pids = {w.split(":")[1] for w in Step.objects.filter(run__in=runs).values_list("worker_id", flat=True)}
    blockers = [services.run_create(agent_type="test-block", input={"seconds": 20})[0] for _ in range(2)]

    wait_for(lambda: count_status(runs, RunStatus.COMPLETED) == 10, timeout=60, message="10 runs complete")
    for blocker in blockers:
        done = wait_for(lambda b=blocker: Run.objects.get(pk=b.pk).is_finished and Run.objects.get(pk=b.pk), timeout=30)
        assert done.status == RunStatus.FAILED
    assert pids  # the async steps ran on these workers
    recovered = StepAttempt.objects.filter(step__run__in=runs, error_code="worker_lost").count()
    assert recovered > 0, "no async step was in flight on a timed-out worker"
    starts, done = evidence(path)
    assert set(done.values()) == {1} and len(done) == 10


def test_sigterm_of_the_cluster_finishes_in_flight_async_steps(clusters, tmp_path):
    path = tmp_path / "e.txt"
    (cluster,) = clusters(1, workers=1)
    runs = start_many(10, path=str(path), seconds=2)
    wait_for(lambda: count_status(runs, RunStatus.RUNNING) == 10, timeout=30, message="10 in flight")
    cluster.process.send_signal(signal.SIGTERM)
    cluster.process.wait(timeout=30)
    assert count_status(runs, RunStatus.COMPLETED) == 10
    assert set(evidence(path)[1].values()) == {1}
    assert "Traceback" not in cluster.output()  # the drain and the loop's end are clean


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="counts PostgreSQL's connections")
def test_100_in_flight_steps_use_a_few_database_connections(clusters, tmp_path):
    clusters(1, workers=2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        before = cursor.fetchone()[0]
    runs = start_many(100, path=str(tmp_path / "e.txt"), seconds=4)
    wait_for(lambda: count_status(runs, RunStatus.RUNNING) == 100, timeout=30, message="100 in flight")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        during = cursor.fetchone()[0]
    # Per worker process: its main thread, the engine tick, the shared thread of its async steps.
    assert during <= 16, f"{during} connections for 100 steps ({before} before they started)"
    wait_for(lambda: count_status(runs, RunStatus.COMPLETED) == 100, timeout=40, message="100 runs complete")
