"""A step's way to a worker: the slots it needs, waiting for them FIFO, waking waiters, and the broker message.

Messages carry step ids only and reach workers only once the work is committed (written in the same
transaction with the ORM broker, sent after commit with Redis), so rolled-back work is never announced;
a lost or duplicated message is harmless (the claim is guarded, the tick re-sends).

Handing a freed slot to a waiter is one compare-and-set on the waiting step (`WAITING -> QUEUED`), made
with the key row locked: a waiter cancelled since the pump looked is skipped, never given a slot.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.tasks import async_task

from runs.engine import slots
from runs.models import ConcurrencyKey, Run, Step, StepStatus
from runs.selectors import agent_policy_get

STEP_TASK = "runs.tasks.step_execute"

_broker = None


def _get_broker():
    # One broker object per process: with Redis a new one per call opens a new
    # connection each time (~677 vs ~4,500 enqueues/s measured).
    global _broker
    if _broker is None:
        _broker = get_broker()
    return _broker


def steps_dispatch(step_ids) -> None:
    """Send one message per step now."""
    for step_id in step_ids:
        async_task(STEP_TASK, step_id, broker=_get_broker(), task_name=f"step-{step_id}")


def steps_dispatch_on_commit(step_ids) -> None:
    """Send the messages so that workers see them once the current transaction commits (never if rolled back).

    With the ORM broker on our own database the message row is written in the transaction itself (a
    transactional outbox: it commits or rolls back with the work, one commit instead of two); any other
    broker (Redis) is sent to after commit.
    """
    step_ids = list(step_ids)
    if not step_ids:
        return
    if transaction.get_connection().in_atomic_block and broker_in_this_database():
        steps_dispatch(step_ids)
    else:
        transaction.on_commit(lambda: steps_dispatch(step_ids))


def broker_in_this_database() -> bool:
    """The ORM broker on our own database: a message is a row, written in the work's own transaction."""
    return settings.Q_CLUSTER.get("orm") == transaction.get_connection().alias


def start_deadline():
    return timezone.now() + timedelta(seconds=settings.SLOT_START_DEADLINE_SECONDS)


def step_enqueue(*, step: Step, run: Run | None = None) -> None:
    """Inside a transaction, for a step the caller owns (new, locked, or won by compare-and-set):
    give it the slots it needs and dispatch it, or make it wait.

    First its run's flow slot (held by the run from then on), then its agent's slot
    (held by the step). A step waits at the back of the queue of the first slot it
    cannot get and holds no worker meanwhile.
    """
    run = run or step.run
    step.status = StepStatus.QUEUED
    step.concurrency_key = ""
    flow_key = run.concurrency_key if run.flow_version_id else ""
    needs_flow_slot = flow_key and not slots.run_holds_flow_slot(key=flow_key, run_id=run.pk)
    if needs_flow_slot and not slots.slot_acquire_or_wait(key=slots.key_lock(key=flow_key), step=step, expires_at=None):
        return _save(step)
    limit = agent_policy_get(agent_type=step.agent_type).limit
    if limit:
        step.concurrency_key = slots.agent_key(step.agent_type)
        if not slots.step_holds_slot(key=step.concurrency_key, step_id=step.pk):
            key = slots.key_lock(key=step.concurrency_key, limit=limit)
            slots.slot_acquire_or_wait(key=key, step=step, expires_at=start_deadline())
    _save(step)


def _save(step: Step) -> None:
    if step.status == StepStatus.QUEUED:
        step.dispatched_at = timezone.now()
    step.save(update_fields=["status", "concurrency_key", "queued_at", "dispatched_at", "next_attempt_at"])
    if step.status == StepStatus.QUEUED:
        steps_dispatch_on_commit([step.id])


def slots_pump(*, key: str) -> int:
    """Hand a key's free slots to its oldest waiting steps; return how many were woken."""
    with transaction.atomic():
        if not ConcurrencyKey.objects.filter(key=key).exists():
            return 0
        locked = slots.key_lock(key=key)
        woken = 0
        while candidates := slots.waiters_to_wake(key=locked):
            # Each candidate is read without a lock: a cancel may have ended it since.
            woken += sum(waiter_wake(key=locked, step=step) for step in candidates)
    return woken


def waiter_wake(*, key: ConcurrencyKey, step: Step) -> bool:
    """With `key` locked and a slot free: move a WAITING step on (compare-and-set); False if it is no longer waiting."""
    now = timezone.now()
    won = Step.objects.filter(pk=step.pk, status=StepStatus.WAITING, concurrency_key=key.key).update(
        status=StepStatus.QUEUED, dispatched_at=now
    )
    if won != 1:
        return False
    if slots.is_flow_key(key.key):
        taken = slots.slot_try_take(key=key, step=step, expires_at=None)
        step.status = StepStatus.QUEUED
        step_enqueue(step=step, run=step.run)  # on to its agent's slot, if it needs one
    else:
        taken = slots.slot_try_take(key=key, step=step, expires_at=start_deadline())
        steps_dispatch_on_commit([step.id])
    if taken is None:  # cannot happen: the free slots were counted with the key locked
        raise RuntimeError(f"no free slot on {key.key} for step {step.pk} although one was counted")
    return True


def slots_pump_on_commit(keys) -> None:
    """Wake waiters of freed keys once the freeing transaction has committed."""
    keys = sorted(set(keys))
    if keys:
        transaction.on_commit(lambda: [slots_pump(key=key) for key in keys])
