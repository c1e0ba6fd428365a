"""Claim: a worker takes one QUEUED step for one attempt, in a short transaction, before running its agent.

Only a QUEUED step is claimed, by a guarded update, so a duplicate or late broker message does nothing.
The step becomes RUNNING with `attempts + 1`, this worker's id and a lease; an attempt row is written;
its agent slot (if any) records the holder. The agent then runs outside any transaction.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs.engine import fastpath
from runs.engine.finish import Claim, step_end
from runs.engine.queue import step_enqueue
from runs.engine.slots import step_holds_slot
from runs.engine.steps import step_lock, step_move
from runs.models import RUN_FINISHED, Run, RunStatus, Slot, Step, StepAttempt, StepStatus


def worker_identity() -> str:
    """host:pid:thread — the worker id a step's attempt, lease and slot are held by."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def step_claim(*, step_id: int, worker_id: str) -> Claim | None:
    """Mark a QUEUED step RUNNING for this worker; None if it is not QUEUED (duplicate or late message)."""
    if fastpath.enabled():
        # The same transition in one statement for a slot-less step (None: not that case, or not QUEUED).
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
        if step.concurrency_key and not step_holds_slot(key=step.concurrency_key, step_id=step.pk):
            # A slot that expired before a worker arrived (start deadline) was reaped;
            # join the queue again rather than run without one.
            step_enqueue(step=step, run=run)
            return None
        lease = now + timedelta(seconds=settings.RUN_LEASE_SECONDS)
        step_move(
            step,
            from_status=StepStatus.QUEUED,
            status=StepStatus.RUNNING,
            attempts=step.attempts + 1,
            worker_id=worker_id,
            lease_expires_at=lease,
            started_at=step.started_at or now,
        )
        if step.concurrency_key:
            Slot.objects.filter(step=step).update(holder=worker_id, expires_at=lease, heartbeat_at=now)
        StepAttempt.objects.create(step=step, number=step.attempts, worker_id=worker_id, started_at=now)
        if run.status == RunStatus.PENDING:
            # "Not started yet" as `started_at IS NULL`, not `status = PENDING`: then only the primary
            # key can find the row, whatever the statistics say (see runs.engine.fastpath).
            Run.objects.filter(pk=run.pk, started_at__isnull=True).exclude(status__in=RUN_FINISHED).update(
                status=RunStatus.RUNNING, started_at=now
            )
    return Claim(step=step, run=run, attempt=step.attempts, worker_id=worker_id)


def step_heartbeat(*, claim: Claim) -> bool:
    """Extend the lease of a running step and its slots; False if this worker no longer holds it."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.RUN_LEASE_SECONDS)
    with transaction.atomic():
        ok = Step.objects.filter(pk=claim.step.pk, status=StepStatus.RUNNING, **claim.guard).update(
            lease_expires_at=lease
        )
        if ok:
            Slot.objects.filter(step_id=claim.step.pk, holder=claim.worker_id).update(
                expires_at=lease, heartbeat_at=now
            )
    return ok == 1
