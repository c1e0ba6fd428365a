"""Concurrency slots: lease rows counted and taken under a lock on their key row.

Every function here expects to run inside `transaction.atomic()`. The key row is
locked with SELECT ... FOR UPDATE on PostgreSQL; on SQLite the transaction is
IMMEDIATE (settings), which serialises writers the same way.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from runs.models import ConcurrencyKey, Slot, Step, StepStatus


def agent_key(agent_type: str) -> str:
    return f"agent:{agent_type}"


def key_lock(*, key: str, limit: int | None = None) -> ConcurrencyKey:
    """Lock the key row (creating it) and, if given, record the current limit."""
    ConcurrencyKey.objects.bulk_create([ConcurrencyKey(key=key, limit=limit or 1)], ignore_conflicts=True)
    # Why: every count-then-take of this key's slots must see the others' commits.
    row = ConcurrencyKey.objects.select_for_update().get(key=key)
    if limit is not None and row.limit != limit:
        row.limit = limit
        row.save(update_fields=["limit"])
    return row


def slot_try_take(*, key: ConcurrencyKey, step: Step, expires_at: datetime, holder: str = "") -> Slot | None:
    """With `key` locked, take its lowest free slot for `step`, or return None when all are taken."""
    used = set(Slot.objects.filter(key=key).values_list("number", flat=True))
    if len(used) >= key.limit:
        return None
    number = min(set(range(len(used) + 1)) - used)
    return Slot.objects.create(
        key=key, number=number, run_id=step.run_id, step=step, holder=holder, expires_at=expires_at
    )


def has_waiters(*, key: ConcurrencyKey) -> bool:
    return Step.objects.filter(concurrency_key=key.key, status=StepStatus.WAITING).exists()


def slot_acquire_or_wait(*, key: ConcurrencyKey, step: Step, expires_at: datetime) -> bool:
    """With `key` locked, give `step` a slot (True) or put it at the back of the queue (False).

    A step never takes a free slot ahead of steps already waiting: FIFO.
    """
    if not has_waiters(key=key) and slot_try_take(key=key, step=step, expires_at=expires_at):
        return True
    step.status = StepStatus.WAITING
    step.queued_at = timezone.now()
    return False


def slots_pump(*, key: ConcurrencyKey, expires_at: datetime) -> list[int]:
    """With `key` locked, hand free slots to the oldest WAITING steps; return their ids, now QUEUED."""
    free = key.limit - Slot.objects.filter(key=key).count()
    if free <= 0:
        return []
    waiters = list(
        Step.objects.filter(concurrency_key=key.key, status=StepStatus.WAITING).order_by("queued_at", "id")[:free]
    )
    now = timezone.now()
    for step in waiters:
        slot_try_take(key=key, step=step, expires_at=expires_at)
        Step.objects.filter(pk=step.pk, status=StepStatus.WAITING).update(status=StepStatus.QUEUED, dispatched_at=now)
    return [s.id for s in waiters]


def slots_release(*, step_id: int, expires_at: datetime) -> list[int]:
    """Free the step's slots and pump each key; return the ids of steps that got a slot."""
    woken: list[int] = []
    for key_name in list(Slot.objects.filter(step_id=step_id).values_list("key_id", flat=True)):
        key = key_lock(key=key_name)
        Slot.objects.filter(key=key, step_id=step_id).delete()
        woken += slots_pump(key=key, expires_at=expires_at)
    return woken
