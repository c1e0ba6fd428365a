"""The execution engine, one module per part:

- `claim`: a worker takes a QUEUED step for one attempt (guarded), and heartbeats its lease;
- `execute`: the django-q2 task's body: claim, run the agent outside any transaction, record;
- `runtime`: a worker process's event loop for async agents and the watch of all its steps
  (heartbeats, cancel requests, timeouts, draining on exit);
- `finish`: an attempt ends (retry, or the step ends), flow routing to the next step, the end of a run;
- `queue`: slots a step needs, waiting for them FIFO, waking waiters, the broker message;
- `slots`: concurrency slot rows counted and taken under their key row's lock;
- `steps`: the step row lock and `step_move`, the one guarded way a step changes state;
- `recovery`: the elected periodic tick: reaper, due retries, lost messages, orphan slots, pump;
- `fastpath`: one-statement PostgreSQL variants of claim and finish, behind `step_claim`/`step_finish`.

Lock order, everywhere: step row(s), then concurrency key rows (a flow's before an agent's). A run
has one active step at a time, so the lock on that step row serialises every change to its run; runs
are updated with guarded UPDATEs. No lock is held while an agent runs.
"""

from runs.engine.claim import step_claim, step_heartbeat, worker_identity
from runs.engine.execute import step_execute
from runs.engine.finish import Claim, attempt_outcome, definition_of, step_end, step_finish, step_release
from runs.engine.recovery import EngineTicker, engine_tick, slots_free_orphans, steps_reap, steps_retry_due, tick_work

__all__ = [
    "Claim",
    "EngineTicker",
    "attempt_outcome",
    "definition_of",
    "engine_tick",
    "slots_free_orphans",
    "step_claim",
    "step_end",
    "step_execute",
    "step_finish",
    "step_heartbeat",
    "step_release",
    "steps_reap",
    "steps_retry_due",
    "tick_work",
    "worker_identity",
]
