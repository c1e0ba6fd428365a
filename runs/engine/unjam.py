"""A cluster whose idle worker was killed takes no task again (django-q2 issue #23): notice it and recover.

An idle django-q2 worker waits in `task_queue.get()`, which holds the queue's read lock (one
multiprocessing Lock for all the cluster's workers) while it reads the pipe. Killed there (the OOM
killer, SIGKILL), it never releases it: the sentinel starts a replacement and the pusher goes on
filling the queue, but every worker waits for the lock for ever, and the cluster looks alive.

So each worker's runtime asks, every CANCEL_POLL_SECONDS: is my main thread waiting for that lock
(in the lock's `__enter__` called from `Queue.get`: waiting to acquire, not reading), while the queue
holds messages? If that lasts QUEUE_STALL_SECONDS, nobody is reading although there is something to read:
the lock's holder is dead. One worker of the cluster (an exclusive lock on a file named after the
sentinel) then releases the lock — a multiprocessing Lock may be released by any process — and the
workers go on. It is logged (`task_queue_unjammed`) and /api/v1/health reports the last one.

A holder killed in the middle of reading a message would leave a torn message in the pipe; messages
are a few hundred bytes read in two system calls, so this is unlikely but not impossible (that worker
then fails to read and django-q2 replaces it).
"""

from __future__ import annotations

import fcntl
import inspect
import multiprocessing.queues
import multiprocessing.synchronize
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import structlog
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from agentrunner.cachekeys import TASK_QUEUE_UNJAMMED

log = structlog.get_logger("agentrunner.engine")

_GET = multiprocessing.queues.Queue.get.__code__
_ENTER = multiprocessing.synchronize.SemLock.__enter__.__code__


def find_task_queue() -> multiprocessing.queues.Queue | None:
    """From inside django-q2's worker function (post_spawn runs there): the queue it reads its tasks from."""
    frame = inspect.currentframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "worker" and code.co_filename.endswith(os.path.join("django_q", "worker.py")):
            queue = frame.f_locals.get("task_queue")
            return queue if isinstance(queue, multiprocessing.queues.Queue) else None
        frame = frame.f_back
    return None


class QueueDoctor:
    """In one worker process: notices the cluster's task queue stuck behind a dead reader, and frees it."""

    def __init__(self, task_queue: multiprocessing.queues.Queue):
        self.queue = task_queue
        self.stalled_since: float | None = None
        self.marker = Path(tempfile.gettempdir()) / f"agentrunner-task-queue-{socket.gethostname()}-{os.getppid()}"

    def waiting_for_the_lock(self) -> bool:
        """The main thread is blocked acquiring the queue's read lock (in the lock's `__enter__`, called
        by `Queue.get`), not reading the pipe (deeper frames, with the lock held)."""
        frame = sys._current_frames().get(threading.main_thread().ident)
        return frame is not None and frame.f_code is _ENTER and frame.f_back is not None and frame.f_back.f_code is _GET

    def stuck(self) -> bool:
        try:
            return self.queue.qsize() > 0 and self.waiting_for_the_lock()
        except (NotImplementedError, OSError, ValueError):  # qsize is not available everywhere
            return False

    def check(self) -> bool:
        """Called every watch period; True if it freed the queue."""
        now = time.monotonic()
        if not self.stuck():
            self.stalled_since = None
            return False
        if self.stalled_since is None:
            self.stalled_since = now
        if now - self.stalled_since < settings.QUEUE_STALL_SECONDS:
            return False
        self.stalled_since = None
        return self.unjam()

    def unjam(self) -> bool:
        """Release the dead reader's lock, once per stall for the whole cluster."""
        with open(self.marker, "a+") as marker:
            try:
                fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # another worker of this cluster is doing it
            marker.seek(0)
            last = float(marker.read().strip() or 0)
            if time.time() - last < settings.QUEUE_STALL_SECONDS or not self.stuck():
                return False  # freed a moment ago by another worker, or no longer stuck
            try:
                self.queue._rlock.release()
            except ValueError:  # not held after all
                return False
            marker.seek(0)
            marker.truncate()
            marker.write(str(time.time()))
        queued = self.queue.qsize()
        log.warning("task_queue_unjammed", cluster_pid=os.getppid(), queued=queued)
        try:
            cache.set(
                TASK_QUEUE_UNJAMMED,
                {"at": timezone.now().isoformat(), "host": socket.gethostname(), "queued": queued},
                86400,
            )
        except Exception:  # the recovery happened; the report is a nicety
            log.exception("task_queue_unjammed_not_recorded")
        return True
