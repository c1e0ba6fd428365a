"""Concurrency slots: lease rows counted and taken under a lock on their key row.

Taking a slot happens inside `transaction.atomic()` with the key row locked
(SELECT ... FOR UPDATE on PostgreSQL; on SQLite the transaction is IMMEDIATE,
which serialises writers the same way). Freeing a slot is a plain DELETE of the
holder's own rows: a count can only go down, so it needs no lock; handing the
freed slots to waiting steps ("pump") runs after commit in a transaction of its
own. A transaction therefore holds key locks only in one order — the flow's key,
then an agent's key — and cannot deadlock another.

Two kinds of key: `agent:<type>` slots belong to one step; `flow:<...>` slots
belong to a run for its whole life (their `step` is empty).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from runs.models import WAITING_QUEUE, ConcurrencyKey, Slot, Step, StepStatus

FLOW_PREFIX = "flow:"


def agent_key(agent_type: str) -> str:
    return f"agent:{agent_type}"


def is_flow_key(key: str) -> bool:
    return key.startswith(FLOW_PREFIX)


def key_lock(*, key: str, limit: int | None = None) -> ConcurrencyKey:
    """Lock the key row (creating it) and, if given, record the current limit."""
    ConcurrencyKey.objects.bulk_create([ConcurrencyKey(key=key, limit=limit or 1)], ignore_conflicts=True)
    # Why: every count-then-take of this key's slots must see the others' commits.
    row = ConcurrencyKey.objects.select_for_update().get(key=key)
    if limit is not None and row.limit != limit:
        row.limit = limit
        row.save(update_fields=["limit"])
    return row


def slot_try_take(*, key: ConcurrencyKey, step: Step, expires_at: datetime | None, holder: str = "") -> Slot | None:
    """With `key` locked, take its lowest free slot for `step` (for its run, on a flow key); None when all are taken."""
    used = set(Slot.objects.filter(key=key).values_list("number", flat=True))
    if len(used) >= key.limit:
        return None
    number = min(set(range(len(used) + 1)) - used)
    for_run = is_flow_key(key.key)
    return Slot.objects.create(
        key=key,
        number=number,
        run_id=step.run_id,
        step=None if for_run else step,
        holder=holder,
        expires_at=None if for_run else expires_at,
    )


def run_holds_flow_slot(*, key: str, run_id) -> bool:
    return Slot.objects.filter(key_id=key, run_id=run_id, step__isnull=True).exists()


def step_holds_slot(*, key: str, step_id: int) -> bool:
    return Slot.objects.filter(key_id=key, step_id=step_id).exists()


def steps_waiting(*, key: str) -> QuerySet[Step]:
    """The queue of a key: its WAITING steps, read through their partial index, oldest first."""
    return Step.objects.filter(WAITING_QUEUE, concurrency_key=key).order_by("queued_at", "id")


def has_waiters(*, key: ConcurrencyKey) -> bool:
    return steps_waiting(key=key.key).exists()


def slot_acquire_or_wait(*, key: ConcurrencyKey, step: Step, expires_at: datetime | None) -> bool:
    """With `key` locked, give `step` a slot (True) or put it at the back of the queue (False).

    A step never takes a free slot ahead of steps already waiting: FIFO.
    """
    if not has_waiters(key=key) and slot_try_take(key=key, step=step, expires_at=expires_at):
        return True
    step.status = StepStatus.WAITING
    step.concurrency_key = key.key
    step.queued_at = timezone.now()
    return False


def waiters_to_wake(*, key: ConcurrencyKey) -> list[Step]:
    """With `key` locked: the oldest WAITING steps that fit in its free slots."""
    free = key.limit - Slot.objects.filter(key=key).count()
    if free <= 0:
        return []
    return list(steps_waiting(key=key.key).select_related("run")[:free])


def slots_free_step(*, step_id: int) -> list[str]:
    """Free the slots a step holds; return their keys (to pump after commit)."""
    return _free(Slot.objects.filter(step_id=step_id))


def slots_free_run(*, run_id) -> list[str]:
    """Free every slot a run holds (its flow slot and any step's); return their keys."""
    return _free(Slot.objects.filter(run_id=run_id))


def _free(queryset) -> list[str]:
    keys = sorted(set(queryset.values_list("key_id", flat=True)))
    if keys:
        queryset.delete()
    return keys
