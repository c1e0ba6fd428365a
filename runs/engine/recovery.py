"""Recovery: the periodic engine tick, elected per period among every worker process of every cluster.

- reaper: RUNNING steps whose lease expired (worker lost) fail their attempt and are retried if the
  step allows, else end; slots past their start deadline are reclaimed; slots whose step or run has
  finished are freed (whatever left them behind) and their keys pumped;
- due retries: RETRYING steps whose time has come re-enter the queue;
- lost messages: QUEUED steps whose message is old are sent again (duplicates are harmless);
- pump: waiting steps get slots that appeared (e.g. a raised limit);
- other apps' periodic work (`tick_work` receivers: schedules, digests).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q, QuerySet
from django.dispatch import Signal
from django.utils import timezone

from runs.engine.claim import worker_identity
from runs.engine.finish import attempt_outcome, step_end
from runs.engine.queue import slots_pump, slots_pump_on_commit, step_enqueue, steps_dispatch
from runs.engine.steps import step_lock, step_move
from runs.models import RUN_FINISHED, STEP_FINISHED, WAITING_QUEUE, EngineTick, Slot, Step, StepStatus

log = structlog.get_logger("agentrunner.engine")

WORKER_LOST = "worker_lost"
START_DEADLINE = "start_deadline"
BATCH = 100  # rows per kind per tick: a backlog is worked off over several ticks


# The work lists, each read through its partial index (runs.models.Step.Meta.indexes).


def steps_lease_expired(*, now) -> QuerySet[Step]:
    return Step.objects.filter(status=StepStatus.RUNNING, lease_expires_at__lt=now)


def steps_due_for_retry(*, now) -> QuerySet[Step]:
    return Step.objects.filter(status=StepStatus.RETRYING, next_attempt_at__lte=now)


def steps_dispatched_before(*, cutoff) -> QuerySet[Step]:
    return Step.objects.filter(status=StepStatus.QUEUED, dispatched_at__lt=cutoff)


def steps_reap(*, now=None) -> int:
    """Recover RUNNING steps whose lease expired (worker lost), slots never started in time, and orphan slots."""
    now = now or timezone.now()
    recovered = 0
    for step_id in steps_lease_expired(now=now).values_list("id", flat=True)[:BATCH]:
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
            attempt_outcome(step=step, run=run, output=None, error=error, now=timezone.now())
            recovered += 1
    # Slots taken for a step that never reached a worker before its start deadline.
    for slot_id in Slot.objects.filter(expires_at__lt=now, holder="").values_list("id", flat=True)[:BATCH]:
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
            log.warning("step_start_deadline", run_id=str(run.id), step=step.name)
            step_end(
                step=step,
                run=run,
                status=StepStatus.FAILED,
                now=timezone.now(),
                error=f"Not started: no worker picked the step up within {settings.SLOT_START_DEADLINE_SECONDS:g} s "
                "of it getting its concurrency slot. Are workers running?",
                code=START_DEADLINE,
            )
            recovered += 1
    return recovered + slots_free_orphans()


# A slot is an orphan once its step (agent slot) or its run (any slot) has finished: nothing will free it.
ORPHAN = Q(step__status__in=STEP_FINISHED) | Q(run__status__in=RUN_FINISHED)


def slots_free_orphans() -> int:
    """Free slots whose step or run has finished, then wake their keys' waiters."""
    with transaction.atomic():
        orphans = list(Slot.objects.filter(ORPHAN).values_list("id", "key_id")[:BATCH])
        if not orphans:
            return 0
        # The condition is checked again by the DELETE itself: a finished step or run never restarts a slot.
        freed = Slot.objects.filter(ORPHAN, pk__in=[pk for pk, _ in orphans]).delete()[0]
        slots_pump_on_commit(key for _, key in orphans)
    if freed:
        log.warning("slots_orphans_freed", count=freed)
    return freed


def steps_retry_due(*, now=None) -> int:
    """Send steps whose retry time has come back into the queue."""
    now = now or timezone.now()
    moved = 0
    for step_id in steps_due_for_retry(now=now).values_list("id", flat=True)[:BATCH]:
        with transaction.atomic():
            step = step_lock(step_id)
            if step is None or step.status != StepStatus.RETRYING:
                continue
            step_move(step, from_status=StepStatus.RETRYING, status=StepStatus.QUEUED, next_attempt_at=None)
            step_enqueue(step=step, run=step.run)
            moved += 1
    return moved


def steps_redispatch_stale(*, now=None) -> int:
    """Send again QUEUED steps whose broker message seems lost (duplicates are harmless)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.STEP_REDISPATCH_SECONDS)
    ids = []
    for step_id in steps_dispatched_before(cutoff=cutoff).values_list("id", flat=True)[:BATCH]:
        if Step.objects.filter(pk=step_id, status=StepStatus.QUEUED, dispatched_at__lt=cutoff).update(
            dispatched_at=now
        ):
            ids.append(step_id)
    steps_dispatch(ids)
    return len(ids)


def slots_pump_all() -> int:
    """Give free slots to waiting steps on every key that has waiters (e.g. after a limit was raised)."""
    keys = set(Step.objects.filter(WAITING_QUEUE).values_list("concurrency_key", flat=True))
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
