"""`manage.py worker` and `manage.py serve` stop cleanly on SIGTERM to their whole process group, and
`serve --prepare` (make run's server) is healthy once it says "Ready" and takes 100 concurrent POSTs with
no error, on PostgreSQL too."""

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from tests.conftest import BASE_DIR, free_port, join, test_database_url, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def environment(**overrides) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": test_database_url(),
        "PYTHONPATH": str(BASE_DIR),
        "Q_WORKERS": "2",
        **overrides,
    }


def sessions_of(pid: int) -> set[int]:
    """Session ids of `pid`'s children and grandchildren (each child of ours leads its own session)."""
    found, frontier = set(), {pid}
    while frontier:
        children = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) in frontier:  # ppid
                    children.add(int(entry.name))
                    found.add(int(fields[3]))  # session
        frontier = children
    return found


def alive_in(sessions: set[int]) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) in sessions and fields[0] != "Z":
                alive.append(int(entry.name))
    return alive


@pytest.fixture
def start(tmp_path):
    """Start `manage.py <args>` as a supervisor would (leader of its own process group); killed if left."""
    started = []

    def run(args, name: str, **env) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), *args],
            cwd=BASE_DIR,
            env=environment(**env),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(process)
        return process, log

    yield run
    for process in started:
        for session in {process.pid, *sessions_of(process.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(session, signal.SIGKILL)
        process.wait()


def stop_group(process: subprocess.Popen) -> float:
    """SIGTERM to the whole process group (what deadlocked a bare qcluster); the seconds the stop took."""
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return time.monotonic() - started


def test_worker_stops_cleanly_when_sigterm_reaches_its_whole_process_group(start):
    worker, log = start(["worker"], "worker")
    wait_for(lambda: "running." in log.read_text(), timeout=40, message="the cluster to run")
    sessions = sessions_of(worker.pid)
    assert sessions and worker.pid not in sessions  # the cluster has a session of its own
    seconds = stop_group(worker)
    assert worker.returncode == 0, log.read_text()[-2000:]
    assert seconds < 20, log.read_text()[-2000:]
    assert "stopped." in log.read_text()  # django-q2's own clean stop, not a kill
    assert not alive_in(sessions)


def test_serve_takes_100_concurrent_posts_then_stops_on_a_group_sigterm(start, django_user_model):
    client = django_user_model.objects.create_user("client")
    join(client)
    token = Token.objects.create(user=client).key
    port = free_port()
    # As make run does; the 100 starts are one user's, over the run-start limit's default (its own tests)
    args = ["serve", "--prepare", f"127.0.0.1:{port}"]
    serve, log = start(args, "serve", DEBUG="1", RUN_STARTS_PER_USER_PER_MINUTE="0", RUN_STARTS_PER_TEAM_PER_MINUTE="0")
    wait_for(lambda: "Ready: " in log.read_text(), timeout=90, message="make run's server to say it is ready")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as health:
        assert health.status == 200  # never a 503 once "Ready" is printed
    assert "Created the demo flow claim-intake." in log.read_text()

    def post(i: int) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/runs",
            data=json.dumps({"agent_type": "pass", "input": {"i": i}}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(post, range(100)))
    assert statuses.count(202) == 100, sorted(set(statuses))  # accepted, none refused
    sessions = sessions_of(serve.pid)
    seconds = stop_group(serve)
    assert serve.returncode == 0, log.read_text()[-3000:]
    assert seconds < 30
    assert not alive_in(sessions)
