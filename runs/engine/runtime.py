"""The step runtime of a worker process: one event loop carrying its async steps, one watch for all its steps.

django-q2 runs one task at a time per worker process and has no async tasks. So each worker process
(started by django-q2's `post_spawn`) also runs an event loop in a thread of its own:

- `step_execute` (the django-q2 task) first reserves a place on the loop (ASYNC_STEPS_PER_WORKER), waiting
  while it is full — backpressure: the worker takes no further message, so the broker keeps them for
  other workers; nothing is refused or lost. It then claims the step in its own thread; an async step is
  handed to the loop and the task returns at once, so the worker takes the next message while the
  step waits on HTTP or an LLM. A sync step gives the place back and runs in the worker's main thread,
  as before; it cannot stall the loop, which runs in another thread.
- The watch (one coroutine on the loop) extends the lease of every running step of the process, sync and
  async, every lease/3 (a guarded update each); asks the database once per CANCEL_POLL_SECONDS, in one
  query, which of their runs have a cancel request; and enforces each step's `timeout_seconds`. A step told to stop
  has its context's cancel flag set and, if async, its task cancelled: the await in progress raises.
- Database work of async steps (claim excepted) goes through asgiref's `sync_to_async`, which in a
  worker runs it on one shared thread: 100 steps in flight use one connection, not 100.
- When the worker process ends (django-q2 `recycle`, a cluster stop) Python waits for the loop's thread
  (not a daemon, and held by a threading exit hook so that thread pools still work). It sees the main
  thread gone, lets its steps finish for ASYNC_DRAIN_SECONDS, hands the rest back to the queue
  (`step_release`), then ends. A process killed outright (SIGKILL, OOM, django-q2's hard kill after its
  `timeout`) stops heart-beating; the reaper recovers its steps within lease + tick.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection

from runs.engine import execute as ex
from runs.engine import unjam
from runs.engine.claim import step_heartbeat
from runs.models import Run

log = structlog.get_logger("agentrunner.engine")

_current: StepRuntime | None = None
INTERRUPTED_TEXT = {
    "message": "Interrupted: the worker stopped the attempt (django-q2's timeout, STEP_MAX_SECONDS, or a signal)."
}


def current() -> StepRuntime | None:
    """This worker process's runtime; None outside worker processes (steps then run inline)."""
    return _current


def start() -> StepRuntime:
    """Start the runtime of this worker process (once; from django-q2's post_spawn, in its worker function)."""
    global _current
    if _current is None:
        task_queue = unjam.find_task_queue()
        if task_queue is None:
            log.warning("task_queue_not_found", detail="a stuck task queue will not be noticed (django-q2 changed?)")
        _current = StepRuntime(
            capacity=settings.ASYNC_STEPS_PER_WORKER, doctor=unjam.QueueDoctor(task_queue) if task_queue else None
        )
        _current.start()
    return _current


class Watch:
    """The running steps of one process: heartbeat, cancel requests, timeouts — sync and async alike."""

    def __init__(self):
        self.executions: dict[int, ex.Execution] = {}
        self.lock = threading.Lock()

    def add(self, execution: ex.Execution) -> None:
        with self.lock:
            self.executions[execution.claim.step.pk] = execution

    def remove(self, execution: ex.Execution) -> None:
        with self.lock:
            if self.executions.get(execution.claim.step.pk) is execution:
                del self.executions[execution.claim.step.pk]

    def running(self) -> list[ex.Execution]:
        with self.lock:
            return list(self.executions.values())

    def check(self) -> list[tuple[ex.Execution, str]]:
        """Database side (sync): find the steps to stop and extend the leases that are due."""
        executions = [e for e in self.running() if e.stop_reason is None]
        if not executions:
            return []
        now = time.monotonic()
        stop = [(e, ex.TIMEOUT) for e in executions if e.deadline is not None and now >= e.deadline]
        # One query for every run this process works on, however many.
        cancelled = set(
            Run.objects.filter(pk__in={e.run_id for e in executions}, cancel_requested_at__isnull=False).values_list(
                "pk", flat=True
            )
        )
        stop += [(e, ex.CANCELLED) for e in executions if e.run_id in cancelled]
        beat_every = settings.RUN_LEASE_SECONDS / 3
        for execution in executions:
            if now - execution.last_beat >= beat_every:
                execution.last_beat = now
                if not step_heartbeat(claim=execution.claim):
                    execution.log.warning("lease_lost", step_id=execution.claim.step.pk)
                    stop.append((execution, ex.LEASE_LOST))
        return stop

    def apply(self, stop: list[tuple[ex.Execution, str]]) -> None:
        """Tell the agents to stop (on the loop's thread for async agents)."""
        for execution, reason in stop:
            if execution.stop(reason):
                execution.log.info("agent_stop_requested", reason=reason)
        now = time.monotonic()
        for execution in self.running():
            if execution.outstayed_grace(now) and execution.abandoned and not execution.abandoned.done():
                execution.abandoned.set_result(None)


async def watch_loop(
    watch: Watch, *, db: Callable, until: Callable[[], bool], doctor: unjam.QueueDoctor | None = None
) -> None:
    """Drive a watch (and the worker's queue doctor) from an event loop every CANCEL_POLL_SECONDS until `until()`."""
    while not until():
        await asyncio.sleep(settings.CANCEL_POLL_SECONDS)
        try:
            watch.apply(await db(watch.check))
        except Exception:  # a database blip must not stop the watch for good
            log.exception("watch_failed")
        if doctor is not None:
            try:
                await db(doctor.check)  # off the loop: it writes to the cache (maybe the database) when it acts
            except Exception:
                log.exception("queue_check_failed")


def run_sync(execution: ex.Execution, worker: StepRuntime | None) -> None:
    """Run a sync step in this thread, watched by the worker's runtime (or by a thread of its own)."""
    if worker is not None:
        worker.watch.add(execution)
        try:
            output, error = ex.run_agent_sync(execution)
        except BaseException as exc:  # django-q2's timeout (a SystemExit) or an interrupt: record, then go
            ex.record(execution, None, ex.error_info(exc, code=ex.INTERRUPTED, retryable=True) | INTERRUPTED_TEXT)
            raise
        finally:
            worker.watch.remove(execution)
        ex.record(execution, output, error)
        return
    watch, done = Watch(), threading.Event()
    watch.add(execution)
    thread = threading.Thread(target=_watch_thread, args=(watch, done), name="step-watch", daemon=True)
    thread.start()
    try:
        output, error = ex.run_agent_sync(execution)
    finally:
        done.set()
        thread.join()
    ex.record(execution, output, error)


def _watch_thread(watch: Watch, done: threading.Event) -> None:
    try:
        while not done.wait(settings.CANCEL_POLL_SECONDS):
            try:
                watch.apply(watch.check())
            except Exception:  # a database blip must not stop the heartbeat for good
                log.exception("watch_failed")
                connection.close()
    finally:
        connection.close()


async def run_inline(execution: ex.Execution) -> None:
    """Outside a worker (tests, commands): run an async step to its end, its watch beside it on this loop."""
    watch = Watch()
    watch.add(execution)
    db = sync_to_async  # under async_to_sync: on the caller's thread and connection
    watcher = asyncio.ensure_future(watch_loop(watch, db=lambda fn: db(fn)(), until=lambda: False))
    try:
        output, error = await ex.run_agent_async(execution)
    finally:
        watcher.cancel()
    await db(ex.record)(execution, output, error)


def _close_connection() -> None:
    connection.close()  # looked up here: the connection of the thread this runs in


def _fresh(fn: Callable) -> Callable:
    """In a worker's long-lived threads: drop a stale or broken connection before database work."""

    def call(*args, **kwargs):
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        except Exception:
            connection.close()  # reconnect next time rather than reuse a broken connection
            raise

    return call


class StepRuntime:
    """One per worker process: an event loop thread for async steps, and the watch of all its steps."""

    def __init__(self, *, capacity: int, doctor: unjam.QueueDoctor | None = None):
        self.capacity = capacity
        self.doctor = doctor
        self.places = threading.BoundedSemaphore(capacity)
        self.watch = Watch()
        self.loop = asyncio.new_event_loop()
        # Not a daemon: a worker process that ends waits for its steps (see the module docstring).
        self.thread = threading.Thread(target=self._run, name="agent-steps", daemon=False)
        self.in_flight = 0  # async steps on the loop (read by tests and `make bench`)
        self.draining_since: float | None = None
        self.exiting = threading.Event()

    def start(self) -> None:
        self.thread.start()
        # When the worker's main thread ends, Python runs threading's exit hooks, then joins non-daemon
        # threads. One of those hooks (concurrent.futures') shuts every thread pool, after which
        # sync_to_async and DNS lookups fail; hooks run last-registered first, so waiting for the drain
        # here keeps them working until our steps are done. (A private hook, stable since Python 3.9.)
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            register(self._drain_at_exit)

    def _drain_at_exit(self) -> None:
        self.exiting.set()  # (the main thread still counts as alive while exit hooks run)
        self.thread.join(settings.ASYNC_DRAIN_SECONDS + 30)

    async def db(self, fn: Callable, *args, **kwargs):
        """Run sync database code off the loop (one shared thread, one connection)."""
        return await sync_to_async(_fresh(fn))(*args, **kwargs)

    def reserve(self, step_id: int) -> None:
        """Wait for a place on the loop; if interrupted (django-q2's timeout), send the message again."""
        try:
            self.places.acquire()
        except BaseException:
            from runs.engine.queue import steps_dispatch

            steps_dispatch([step_id])  # not claimed: the step is still QUEUED, another worker takes it
            raise

    def unreserve(self) -> None:
        self.places.release()

    def submit(self, execution: ex.Execution) -> None:
        """Hand a claimed async step to the loop (its place was reserved); return at once."""
        self.watch.add(execution)
        asyncio.run_coroutine_threadsafe(self._execute(execution), self.loop)

    async def _execute(self, execution: ex.Execution) -> None:
        self.in_flight += 1
        try:
            drained = self.draining_since is not None and time.monotonic() - self.draining_since
            if drained and drained >= settings.ASYNC_DRAIN_SECONDS:
                execution.stop(ex.SHUTDOWN)
            output, error = await ex.run_agent_async(execution)
            await self.db(ex.record, execution, output, error)
        except Exception:  # the lease then expires and the reaper recovers the step
            execution.log.exception("step_record_failed")
        finally:
            self.in_flight -= 1
            self.watch.remove(execution)
            self.places.release()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(watch_loop(self.watch, db=self.db, until=self._finished, doctor=self.doctor))
            # Let the last finishes (and hand-backs) complete.
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            if pending:
                self.loop.run_until_complete(asyncio.wait(pending, timeout=settings.ASYNC_DRAIN_SECONDS))
        finally:
            self.loop.run_until_complete(sync_to_async(_close_connection)())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())  # closes the LLM clients of this loop
            self.loop.close()

    def _finished(self) -> bool:
        """Called by the watch each period: True once the worker is gone and its async steps are done."""
        if not self.exiting.is_set() and threading.main_thread().is_alive():
            return False
        now = time.monotonic()
        if self.draining_since is None:
            self.draining_since = now
            log.info("worker_draining", in_flight=self.in_flight, drain_seconds=settings.ASYNC_DRAIN_SECONDS)
        if now - self.draining_since >= settings.ASYNC_DRAIN_SECONDS:
            for execution in self.watch.running():
                if execution.stop(ex.SHUTDOWN):
                    execution.log.info("agent_stop_requested", reason=ex.SHUTDOWN)
        return self.in_flight == 0
