"""django-q2 entry points: small functions that take ids and call the engine."""

from runs import engine


def step_execute(step_id: int) -> None:
    """Execute one step; a duplicate or late delivery does nothing."""
    engine.step_execute(step_id=step_id)


def engine_tick() -> dict | None:
    """Run the recovery work now (reaper, due retries, lost messages, waiting queues)."""
    return engine.engine_tick(worker_id=engine.worker_identity(), force=True)
