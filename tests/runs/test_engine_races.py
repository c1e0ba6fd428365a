"""Lock hand-offs raced deterministically on two PostgreSQL connections, and the reaper's orphan slots."""

import threading

import pytest
from django.db import connection
from django.test import TestCase

from runs import engine, services
from runs.engine import queue, slots
from runs.models import Run, RunStatus, Slot, Step, StepStatus

postgres_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="two connections with row locks: PostgreSQL (SQLite serialises all)"
)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_pump_against_cancel__a_waiter_cancelled_after_the_pump_looked_gets_no_slot(monkeypatch):
    """The pump reads a WAITING step; a cancel of it commits; the pump goes on. Nothing may hold a slot for it."""
    services.agent_policy_update(agent_type="test-flaky", limit=1, on_busy="queue")
    holder, _ = services.run_create(agent_type="test-flaky", input={})
    waiter, _ = services.run_create(agent_type="test-flaky", input={})
    holder_step, waiter_step = holder.steps.get(), waiter.steps.get()
    assert waiter_step.status == StepStatus.WAITING
    Slot.objects.filter(step=holder_step).delete()  # the holder's slot frees (as at its end): one free slot

    looked, cancelled = threading.Event(), threading.Event()
    real_waiters = slots.waiters_to_wake

    def waiters_then_pause(*, key):
        found = real_waiters(key=key)
        if found and not looked.is_set():
            looked.set()
            assert cancelled.wait(10), "the cancel did not commit"
        return found

    monkeypatch.setattr(slots, "waiters_to_wake", waiters_then_pause)
    errors = []

    def pump():
        try:
            queue.slots_pump(key=slots.agent_key("test-flaky"))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connection.close()

    def cancel():
        try:
            assert looked.wait(10), "the pump never looked"
            services.run_cancel(run_id=waiter.pk)  # commits on its own connection
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            cancelled.set()
            connection.close()

    threads = [threading.Thread(target=pump), threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert Run.objects.get(pk=waiter.pk).status == RunStatus.CANCELLED
    assert Step.objects.get(pk=waiter_step.pk).status == StepStatus.CANCELLED
    assert not Slot.objects.filter(step=waiter_step).exists(), "the pump gave a cancelled step a slot"
    # The queue is not blocked: the next run gets the free slot.
    nxt, _ = services.run_create(agent_type="test-flaky", input={})
    assert Slot.objects.filter(step=nxt.steps.get()).exists()


@pytest.mark.django_db
def test_reaper_frees_slots_whose_step_or_run_has_finished():
    services.agent_policy_update(agent_type="test-flaky", limit=1, on_busy="queue")
    done, _ = services.run_create(agent_type="test-flaky", input={})
    waiting, _ = services.run_create(agent_type="test-flaky", input={})
    # Whatever left it behind: a slot whose step has finished (here written straight to the rows).
    Step.objects.filter(run=done).update(status=StepStatus.CANCELLED)
    Run.objects.filter(pk=done.pk).update(status=RunStatus.CANCELLED)
    assert Slot.objects.filter(run=done).exists()

    with TestCase.captureOnCommitCallbacks(execute=True):
        assert engine.slots_free_orphans() == 1

    assert not Slot.objects.filter(run=done).exists()
    # Its key was pumped: the waiting run has the slot now.
    assert Slot.objects.filter(run=waiting).exists()
    assert Step.objects.get(run=waiting).status == StepStatus.QUEUED
