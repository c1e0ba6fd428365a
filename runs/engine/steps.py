"""Step rows: the lock that serialises a run's changes, and the one way a step changes state.

Every state change is `step_move`: an UPDATE guarded by the state the caller saw (and, for a running
step, by its attempt and worker), whose row count is checked. A caller holding the step's row lock
expects it to succeed (`TransitionLost` otherwise: a bug); a caller without the lock (the pump) treats 0
rows as "someone else moved it first".
"""

from __future__ import annotations

from runs.models import Step


class TransitionLost(RuntimeError):
    """A guarded step update touched no row although the caller held the step's lock."""


def step_lock(step_id: int) -> Step | None:
    """Inside a transaction: lock one step row (not its run) and return it with its run.

    Lock order, everywhere: step row(s), then concurrency key rows. A run has one active step at a
    time, so the lock on that step row also serialises every change to its run.
    """
    return Step.objects.select_related("run").select_for_update(of=("self",)).filter(pk=step_id).first()


def step_move(step: Step, *, from_status: str, guard: dict | None = None, required: bool = True, **fields) -> bool:
    """Move `step` from `from_status` to the given fields in one guarded UPDATE; mirror them on `step`."""
    moved = Step.objects.filter(pk=step.pk, status=from_status, **(guard or {})).update(**fields)
    if moved != 1:
        if required:
            raise TransitionLost(f"step {step.pk} was not {from_status} {guard or ''} although it was locked")
        return False
    for name, value in fields.items():
        setattr(step, name, value)
    return True
