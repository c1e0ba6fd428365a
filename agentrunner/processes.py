"""Child processes that stop cleanly: each in a session of its own, stopped by its leader alone.

A signal sent to a whole process group (Ctrl-C in a terminal sends SIGINT, `kill -TERM -PGID` and
supervisors send SIGTERM) would otherwise reach every process of a child at once. django-q2's cluster
does not survive that: its workers and sentinel die at once and its main process then waits forever
for the dead sentinel (../shared/notes/django-q2-internals.md, "Shutdown"). Here only our process
gets such a signal; it sends SIGTERM to each child's leader, the stop the child handles, and kills
the child's whole session if it has not ended `grace` seconds later, so a stop always ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time


def start(args: list[str], **popen) -> subprocess.Popen:
    """Start a child in its own session (and so its own process group)."""
    return subprocess.Popen(args, start_new_session=True, **popen)


def stop(children: list[subprocess.Popen], *, grace: float) -> None:
    """SIGTERM each child's leader, wait up to `grace` seconds in all, then kill what is left of each session."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
    for child in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # no orphan outlives the stop
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def stop_requested() -> threading.Event:
    """An event set on SIGTERM or SIGINT (call from the main thread)."""
    event = threading.Event()

    def handler(signum, frame):
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return event


def wait_until(event: threading.Event, children: list[subprocess.Popen]) -> subprocess.Popen | None:
    """Block until `event` is set (None) or a child exits (that child)."""
    while not event.wait(0.2):
        for child in children:
            if child.poll() is not None:
                return child
    return None
