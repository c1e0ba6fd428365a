"""Putting steps in the queue: the slots they need, waiting for them FIFO, and waking waiters."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs import dispatch, slots
from runs.models import ConcurrencyKey, Run, Slot, Step, StepStatus
from runs.selectors import agent_policy_get


def start_deadline():
    return timezone.now() + timedelta(seconds=settings.SLOT_START_DEADLINE_SECONDS)


def step_enqueue(*, step: Step, run: Run | None = None) -> None:
    """Inside a transaction: give a saved step the slots it needs and dispatch it, or make it wait.

    First its run's flow slot (held by the run from then on), then its agent's slot
    (held by the step). A step waits at the back of the queue of the first slot it
    cannot get and holds no worker meanwhile.
    """
    run = run or step.run
    step.status = StepStatus.QUEUED
    step.concurrency_key = ""
    flow_key = run.concurrency_key if run.flow_version_id else ""
    needs_flow_slot = flow_key and not Slot.objects.filter(key_id=flow_key, run_id=run.pk, step__isnull=True).exists()
    if needs_flow_slot and not slots.slot_acquire_or_wait(key=slots.key_lock(key=flow_key), step=step, expires_at=None):
        return _save(step)
    limit = agent_policy_get(agent_type=step.agent_type).limit
    if limit:
        step.concurrency_key = slots.agent_key(step.agent_type)
        if not Slot.objects.filter(step=step, key_id=step.concurrency_key).exists():
            key = slots.key_lock(key=step.concurrency_key, limit=limit)
            slots.slot_acquire_or_wait(key=key, step=step, expires_at=start_deadline())
    _save(step)


def _save(step: Step) -> None:
    if step.status == StepStatus.QUEUED:
        step.dispatched_at = timezone.now()
    step.save(update_fields=["status", "concurrency_key", "queued_at", "dispatched_at", "next_attempt_at"])
    if step.status == StepStatus.QUEUED:
        dispatch.steps_dispatch_on_commit([step.id])


def slots_pump(*, key: str) -> int:
    """Hand a key's free slots to its oldest waiting steps; return how many were woken."""
    with transaction.atomic():
        if not ConcurrencyKey.objects.filter(key=key).exists():
            return 0
        locked = slots.key_lock(key=key)
        woken = slots.waiters_to_wake(key=locked)
        for step in woken:
            if slots.is_flow_key(key):
                slots.slot_try_take(key=locked, step=step, expires_at=None)
                step_enqueue(step=step, run=step.run)  # on to its agent's slot
            else:
                slots.slot_try_take(key=locked, step=step, expires_at=start_deadline())
                Step.objects.filter(pk=step.pk, status=StepStatus.WAITING).update(
                    status=StepStatus.QUEUED, dispatched_at=timezone.now()
                )
                dispatch.steps_dispatch_on_commit([step.id])
    return len(woken)


def slots_pump_on_commit(keys) -> None:
    """Wake waiters of freed keys once the freeing transaction has committed."""
    keys = sorted(set(keys))
    if keys:
        transaction.on_commit(lambda: [slots_pump(key=key) for key in keys])
