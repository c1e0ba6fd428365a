"""The execution engine: claim a step, run its agent outside any transaction, finish by compare-and-set.

Every state change is a guarded update on the current state, so a duplicate or
late broker message, or a worker that lost its lease, cannot move a step that
someone else already moved.

Lock order, everywhere: step row(s), then concurrency key rows. A run has one
active step at a time, so the lock on that step row also serialises every change
to its run (claim, finish, reap, cancel); runs are updated with guarded UPDATEs.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from agentrunner.agents import AgentContext, AgentError, get_agent
from agentrunner.agents.registry import UnknownAgentType
from runs import dispatch, fastpath, progress, slots
from runs.models import (
    AttemptStatus,
    EngineTick,
    Run,
    RunStatus,
    Slot,
    Step,
    StepAttempt,
    StepStatus,
)
from runs.queueing import slots_pump, slots_pump_on_commit, step_enqueue

log = structlog.get_logger("agentrunner.engine")

WORKER_LOST = "worker_lost"
START_DEADLINE = "start_deadline"
TIMEOUT = "timeout"


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


# --- claim --------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    step: Step
    run: Run
    attempt: int
    worker_id: str


def step_lock(step_id: int) -> Step | None:
    """Inside a transaction: lock one step row (not its run) and return it with its run."""
    return Step.objects.select_related("run").select_for_update(of=("self",)).filter(pk=step_id).first()


def step_claim(*, step_id: int, worker_id: str) -> Claim | None:
    """Mark a QUEUED step RUNNING for this worker; None if it is not QUEUED (duplicate or late message)."""
    if fastpath.available():
        claimed = fastpath.claim(step_id=step_id, worker_id=worker_id, now=timezone.now())
        if claimed:
            step, run = claimed
            return Claim(step=step, run=run, attempt=step.attempts, worker_id=worker_id)
    with transaction.atomic():
        # Why lock: two deliveries of the same message must not both see QUEUED,
        # and a cancel must not slip between our check and our update.
        step = step_lock(step_id)
        if step is None or step.status != StepStatus.QUEUED:
            return None
        run = step.run
        now = timezone.now()
        if run.cancel_requested_at or run.is_finished:
            step_end(step=step, run=run, status=StepStatus.CANCELLED, now=now)
            return None
        if step.concurrency_key and not Slot.objects.filter(step=step).exists():
            # A slot that expired before a worker arrived (start deadline) was reaped;
            # join the queue again rather than run without one.
            step_enqueue(step=step, run=run)
            return None
        step.attempts += 1
        step.status = StepStatus.RUNNING
        step.worker_id = worker_id
        step.lease_expires_at = now + timedelta(seconds=settings.RUN_LEASE_SECONDS)
        step.started_at = step.started_at or now
        step.save(update_fields=["status", "attempts", "worker_id", "lease_expires_at", "started_at"])
        if step.concurrency_key:
            Slot.objects.filter(step=step).update(holder=worker_id, expires_at=step.lease_expires_at, heartbeat_at=now)
        StepAttempt.objects.create(step=step, number=step.attempts, worker_id=worker_id, started_at=now)
        if run.status == RunStatus.PENDING:
            Run.objects.filter(pk=run.pk, status=RunStatus.PENDING).update(status=RunStatus.RUNNING, started_at=now)
    return Claim(step=step, run=run, attempt=step.attempts, worker_id=worker_id)


# --- heartbeat ----------------------------------------------------------------


class Heartbeat(threading.Thread):
    """While an agent runs: extend the lease, and set the cancel event on cancel or a lost lease."""

    def __init__(self, claim: Claim, cancel_event: threading.Event):
        super().__init__(name=f"heartbeat-{claim.step.id}", daemon=True)
        self.claim = claim
        self.cancel_event = cancel_event
        self.stopped = threading.Event()
        self.timed_out = False

    def run(self):
        poll = settings.CANCEL_POLL_SECONDS
        beat_every = settings.RUN_LEASE_SECONDS / 3
        last_beat = time.monotonic()
        timeout = self.claim.step.timeout_seconds
        deadline = last_beat + timeout if timeout else None
        try:
            while not self.stopped.wait(min(poll, max(deadline - time.monotonic(), 0.01)) if deadline else poll):
                if deadline and time.monotonic() >= deadline and not self.timed_out:
                    self.timed_out = True
                    self.cancel_event.set()  # the agent stops as on cancel; the attempt fails with a timeout
                try:
                    if Run.objects.filter(pk=self.claim.run.pk, cancel_requested_at__isnull=False).exists():
                        self.cancel_event.set()
                    if time.monotonic() - last_beat >= beat_every:
                        last_beat = time.monotonic()
                        if not step_heartbeat(claim=self.claim):
                            self.cancel_event.set()
                            log.warning("lease_lost", step_id=self.claim.step.id)
                            return
                except Exception:  # a database blip must not stop the heartbeat for good
                    log.exception("heartbeat_failed", step_id=self.claim.step.id)
                    connection.close()
        finally:
            connection.close()

    def stop(self):
        self.stopped.set()
        self.join()


def step_heartbeat(*, claim: Claim) -> bool:
    """Extend the lease of a running step and its slots; False if this worker no longer holds it."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.RUN_LEASE_SECONDS)
    with transaction.atomic():
        ok = Step.objects.filter(
            pk=claim.step.pk, status=StepStatus.RUNNING, attempts=claim.attempt, worker_id=claim.worker_id
        ).update(lease_expires_at=lease)
        if ok:
            Slot.objects.filter(step_id=claim.step.pk, holder=claim.worker_id).update(
                expires_at=lease, heartbeat_at=now
            )
    return ok == 1


# --- execute ------------------------------------------------------------------


def step_execute(*, step_id: int) -> None:
    """Claim the step, run its agent outside any transaction, record the outcome."""
    claim = step_claim(step_id=step_id, worker_id=worker_identity())
    if claim is None:
        log.info("step_claim_skipped", step_id=step_id)
        return
    run, step = claim.run, claim.step
    bound = log.bind(
        run_id=str(run.id),
        agent_type=step.agent_type,
        user_id=str(run.user_id) if run.user_id else None,
        step=step.name,
        attempt=claim.attempt,
    )
    cancel_event = threading.Event()
    context = AgentContext(
        run_id=run.id,
        step_name=step.name,
        attempt=claim.attempt,
        input=step.input,
        user_id=run.user_id,
        cancel_event=cancel_event,
        log=bound,
        step_id=step.pk,
        owner_id=run.created_by_id,
        token_budget=run.token_budget,
    )
    heartbeat = Heartbeat(claim, cancel_event)
    heartbeat.start()
    bound.info("agent_start")
    started = time.monotonic()
    output, error = None, None
    try:
        output = get_agent(step.agent_type).run(context)
    except UnknownAgentType as exc:
        error = _error_info(exc, code="unknown_agent", retryable=False)
    except AgentError as exc:
        error = _error_info(exc, code=exc.code, retryable=exc.retryable)
        if getattr(exc, "retry_after", None):  # e.g. an HTTP 429/503 Retry-After
            error["retry_after"] = float(exc.retry_after)
    except Exception as exc:  # an agent's bug must fail its step, not the worker
        error = _error_info(exc, code="agent_crashed", retryable=False)
    else:
        try:  # stored as JSON: refuse what cannot be (PostgreSQL also refuses NaN and NUL characters)
            if "\\u0000" in json.dumps(output, allow_nan=False):
                raise ValueError("the output contains a NUL character (\\u0000), which cannot be stored")
        except (TypeError, ValueError) as exc:
            output, error = None, _error_info(exc, code="output_not_json", retryable=False)
    finally:
        heartbeat.stop()
    if heartbeat.timed_out:  # whatever the agent returned or raised once told to stop
        output = None
        error = {
            "message": f"Timed out: the attempt ran longer than its timeout of {step.timeout_seconds:g} s.",
            "code": TIMEOUT,
            "retryable": True,
        }
    elapsed_ms = round((time.monotonic() - started) * 1000)
    if error:
        bound.warning("agent_error", error=error["message"], code=error["code"], duration_ms=elapsed_ms)
    else:
        bound.info("agent_complete", duration_ms=elapsed_ms)
    step_finish(claim=claim, output=output, error=error)


def _error_info(exc: Exception, *, code: str, retryable: bool) -> dict:
    message = str(exc) or exc.__class__.__name__
    if code == "agent_crashed":
        message = f"{exc.__class__.__name__}: {message}"
    return {"message": message[:4000], "code": code, "retryable": retryable}


# --- finish -------------------------------------------------------------------


def step_finish(*, claim: Claim, output=None, error: dict | None = None) -> bool:
    """Record the outcome of an attempt; False if the step was already moved (lease lost, reaped)."""
    # Every step ends its run today (single-agent runs); steps that lead to another
    # step must take the ORM path once flows exist.
    if (
        error is None
        and not claim.step.concurrency_key
        and fastpath.available()
        and fastpath.finish_success(
            step_id=claim.step.pk, attempt=claim.attempt, worker_id=claim.worker_id, output=output, now=timezone.now()
        )
    ):
        return True
    with transaction.atomic():
        step = step_lock(claim.step.pk)
        if (
            step is None
            or step.status != StepStatus.RUNNING
            or step.attempts != claim.attempt
            or step.worker_id != claim.worker_id
        ):
            log.warning("step_finish_discarded", step_id=claim.step.pk, attempt=claim.attempt)
            return False
        _attempt_outcome(step=step, run=step.run, output=output, error=error, now=timezone.now())
    return True


def _attempt_outcome(*, step: Step, run: Run, output, error: dict | None, now) -> None:
    """With step and run locked: close the attempt and move step and run on (retry, finish)."""
    cancelled = run.cancel_requested_at is not None
    attempt_status = AttemptStatus.CANCELLED if cancelled else AttemptStatus.FAILED if error else AttemptStatus.SUCCESS
    StepAttempt.objects.filter(step=step, number=step.attempts).update(
        status=attempt_status,
        finished_at=now,
        error=(error or {}).get("message", ""),
        error_code=(error or {}).get("code", ""),
    )
    if cancelled:
        step_end(step=step, run=run, status=StepStatus.CANCELLED, now=now)
    elif error is None:
        step.output = output
        step_end(step=step, run=run, status=StepStatus.SUCCESS, now=now)
    elif error["retryable"] and step.attempts < step.max_attempts:
        _step_retry_later(step=step, error=error, now=now)
    else:
        step.error, step.error_code = error["message"], error["code"]
        step_end(step=step, run=run, status=StepStatus.FAILED, now=now)


def _step_retry_later(*, step: Step, error: dict, now) -> None:
    delay = min(step.backoff_seconds * 2 ** (step.attempts - 1), step.max_backoff_seconds)
    # A server that says when to come back is believed, within the step's longest backoff.
    delay = max(delay, min(error.get("retry_after") or 0, step.max_backoff_seconds))
    step.status = StepStatus.RETRYING
    step.error, step.error_code = error["message"], error["code"]
    step.next_attempt_at = now + timedelta(seconds=delay)
    step.worker_id, step.lease_expires_at = "", None
    step.save(update_fields=["status", "error", "error_code", "next_attempt_at", "worker_id", "lease_expires_at"])
    # An agent slot is not held while waiting to retry: the retry queues for it again.
    # (A flow slot belongs to the run and stays with it.)
    slots_pump_on_commit(slots.slots_free_step(step_id=step.pk))
    log.info("step_retry_scheduled", step_id=step.pk, delay_seconds=delay, error=error["message"])


def step_end(*, step: Step, run: Run, status: str, now) -> None:
    """Finish a step, free its slot, and start the run's next step or end the run; wake waiters after commit."""
    step.status = status
    step.finished_at = now
    step.lease_expires_at = None
    step.save(update_fields=["status", "output", "error", "error_code", "finished_at", "lease_expires_at"])
    freed = slots.slots_free_step(step_id=step.pk)
    freed += progress.after_step(step=step, run=run, now=now)
    slots_pump_on_commit(freed)


# --- recovery: reaper and the periodic tick ------------------------------------


def steps_reap(*, now=None) -> int:
    """Recover RUNNING steps whose lease expired (worker lost) and slots never started in time."""
    now = now or timezone.now()
    recovered = 0
    for step_id in Step.objects.filter(status=StepStatus.RUNNING, lease_expires_at__lt=now).values_list(
        "id", flat=True
    )[:100]:
        with transaction.atomic():
            step = step_lock(step_id)
            if step is None or step.status != StepStatus.RUNNING or step.lease_expires_at >= now:
                continue  # finished, or heartbeat arrived, since we looked
            run = step.run
            error = {
                "message": f"Worker lost: {step.worker_id or 'unknown worker'} stopped heart-beating "
                f"(lease expired at {step.lease_expires_at.isoformat()}).",
                "code": WORKER_LOST,
                "retryable": True,
            }
            log.warning("step_worker_lost", run_id=str(run.id), step=step.name, worker=step.worker_id)
            _attempt_outcome(step=step, run=run, output=None, error=error, now=timezone.now())
            recovered += 1
    # Slots taken for a step that never reached a worker before its start deadline.
    for slot_id in Slot.objects.filter(expires_at__lt=now, holder="").values_list("id", flat=True)[:100]:
        with transaction.atomic():
            step_id = Slot.objects.filter(pk=slot_id).values_list("step_id", flat=True).first()
            step = step_lock(step_id) if step_id else None
            if (
                step is None
                or step.status != StepStatus.QUEUED
                or not Slot.objects.filter(pk=slot_id, holder="", expires_at__lt=now).exists()
            ):
                continue  # claimed or finished since we looked
            run = step.run
            step.error = (
                f"Not started: no worker picked the step up within {settings.SLOT_START_DEADLINE_SECONDS:g} s "
                "of it getting its concurrency slot. Are workers running?"
            )
            step.error_code = START_DEADLINE
            log.warning("step_start_deadline", run_id=str(run.id), step=step.name)
            step_end(step=step, run=run, status=StepStatus.FAILED, now=timezone.now())
            recovered += 1
    return recovered


def steps_retry_due(*, now=None) -> int:
    """Send steps whose retry time has come back into the queue."""
    now = now or timezone.now()
    moved = 0
    for step_id in Step.objects.filter(status=StepStatus.RETRYING, next_attempt_at__lte=now).values_list(
        "id", flat=True
    )[:100]:
        with transaction.atomic():
            step = step_lock(step_id)
            if step is None or step.status != StepStatus.RETRYING:
                continue
            step.next_attempt_at = None
            step_enqueue(step=step, run=step.run)
            moved += 1
    return moved


def steps_redispatch_stale(*, now=None) -> int:
    """Send again QUEUED steps whose broker message seems lost (duplicates are harmless)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.STEP_REDISPATCH_SECONDS)
    ids = []
    for step_id in Step.objects.filter(status=StepStatus.QUEUED, dispatched_at__lt=cutoff).values_list("id", flat=True)[
        :100
    ]:
        if Step.objects.filter(pk=step_id, status=StepStatus.QUEUED, dispatched_at__lt=cutoff).update(
            dispatched_at=now
        ):
            ids.append(step_id)
    dispatch.steps_dispatch(ids)
    return len(ids)


def slots_pump_all() -> int:
    """Give free slots to waiting steps on every key that has waiters (e.g. after a limit was raised)."""
    keys = set(Step.objects.filter(status=StepStatus.WAITING).values_list("concurrency_key", flat=True))
    return sum(slots_pump(key=key) for key in sorted(keys))


# Other apps' periodic work (schedules, digests) runs in the elected tick; a
# receiver takes `now` and returns a dict of counts for the tick's log line.
tick_work = Signal()


def engine_tick(*, worker_id: str, force: bool = False) -> dict | None:
    """Run the periodic recovery work if this process wins this period's election."""
    now = timezone.now()
    period = timedelta(seconds=settings.ENGINE_TICK_SECONDS)
    if not force:
        EngineTick.objects.bulk_create([EngineTick(id=1, next_at=now)], ignore_conflicts=True)
        # Compare-and-set: exactly one process moves next_at forward per period.
        won = EngineTick.objects.filter(id=1, next_at__lte=now).update(
            next_at=now + period, last_by=worker_id, last_at=now
        )
        if not won:
            return None
    summary = {
        "reaped": steps_reap(now=now),
        "retried": steps_retry_due(now=now),
        "redispatched": steps_redispatch_stale(now=now),
        "pumped": slots_pump_all(),
    }
    for receiver, result in tick_work.send_robust(sender=engine_tick, now=now):
        if isinstance(result, Exception):  # one app's failure must not stop the others' work
            log.error("tick_work_failed", receiver=getattr(receiver, "__qualname__", str(receiver)), error=repr(result))
        elif result:
            summary.update(result)
    return summary


class EngineTicker(threading.Thread):
    """Runs `engine_tick` every ENGINE_TICK_SECONDS inside a worker process."""

    def __init__(self):
        super().__init__(name="engine-ticker", daemon=True)
        self.stopped = threading.Event()

    def run(self):
        worker_id = worker_identity()
        while not self.stopped.wait(settings.ENGINE_TICK_SECONDS / 2):
            try:
                close_old_connections()
                result = engine_tick(worker_id=worker_id)
                if result and any(result.values()):
                    log.info("engine_tick", **result)
            except Exception:  # keep ticking: a database blip must not stop recovery for good
                log.exception("engine_tick_failed")
                connection.close()
