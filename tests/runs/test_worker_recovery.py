"""django-q2 issue #23 in a real cluster: the idle worker that holds the task queue's read lock is killed.

Before, the cluster then ran no task again (its replacement and the other worker wait for the lock for
ever). Now a worker notices the queue stuck for QUEUE_STALL_SECONDS, frees it, and new runs complete.
"""

import os
import signal
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from agentrunner.cachekeys import TASK_QUEUE_UNJAMMED
from runs import services
from runs.models import Run, RunStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.cluster

STALL_SECONDS = 2
# Documented bound: the stall is noticed QUEUE_STALL_SECONDS after a message arrives, plus one watch
# period; then the runs complete as usual. The rest is slack for a busy 2-core machine.
BOUND_SECONDS = STALL_SECONDS + 1 + 12


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def reading_worker(cluster_pid: int) -> int | None:
    """The worker blocked reading the task queue's pipe: the one holding the queue's read lock.

    The sentinel's children are the workers (several threads: ours), the monitor and the pusher."""
    for sentinel in children(cluster_pid):
        workers = [p for p in children(sentinel) if threads(p) >= 3]
        readers = [p for p in workers if "pipe_read" in Path(f"/proc/{p}/wchan").read_text()]
        if len(workers) == 2 and len(readers) == 1:
            return readers[0]
    return None


def test_an_idle_worker_killed_while_holding_the_queue__the_cluster_recovers_and_runs_complete(clusters):
    cache.delete(TASK_QUEUE_UNJAMMED)
    (cluster,) = clusters(1, workers=2, QUEUE_STALL_SECONDS=STALL_SECONDS)
    holder = wait_for(lambda: reading_worker(cluster.process.pid), timeout=30, message="an idle worker reading")
    os.kill(holder, signal.SIGKILL)
    time.sleep(1)  # the sentinel replaces it; the replacement waits for the lock too

    started = time.monotonic()
    runs = [services.run_create(agent_type="pass", input={"i": i})[0] for i in range(4)]
    wait_for(
        lambda: Run.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.COMPLETED).count() == 4,
        timeout=BOUND_SECONDS,
        message="the runs to complete after the worker was killed",
    )
    assert time.monotonic() - started < BOUND_SECONDS
    assert "task_queue_unjammed" in cluster.output()

    def workers_check() -> dict | None:
        check = APIClient().get("/api/v1/health").json()["checks"]["workers"]
        return check if check["ok"] else None

    # django-q2 keeps a cluster's status for 3 s, renewed by its sentinel, which was busy replacing the killed
    # worker: on a loaded machine the status may have lapsed for a moment. Health must see the cluster again.
    check = wait_for(workers_check, timeout=15, interval=0.2, message="the health report to see the cluster again")
    assert "stuck behind a killed worker" in check["detail"]
