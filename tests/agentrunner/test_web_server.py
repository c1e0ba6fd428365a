"""The web server as the image runs it (gunicorn with the repository's gunicorn.conf.py), with slow clients."""

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import BASE_DIR, join

# Timing-sensitive (a real server under load): in the serial phase of `make test`, with the clusters.
pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def stalled_upload(port: int) -> socket.socket:
    """A client that announces 1,000 bytes of body, sends 10 and stops."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(
        b"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"agent_ty'
    )
    return s


def health_seconds(port: int) -> float:
    started = time.monotonic()
    with contextlib.suppress(urllib.error.HTTPError):  # 503 without workers is an answer
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=30).close()
    return time.monotonic() - started


def test_stalled_uploads_neither_starve_health_nor_hold_threads(web):
    port = web()
    stalled = [stalled_upload(port) for _ in range(8)]  # twice the threads
    time.sleep(0.5)
    assert health_seconds(port) < 5  # served while the uploads stall (some wait out the 2 s deadline)
    time.sleep(2.5)
    for s in stalled:  # each was cut at its deadline: the server closed the connection (a timeout here fails)
        s.settimeout(5)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
        s.close()
    assert health_seconds(port) < 1


def test_a_request_longer_than_the_worker_timeout_is_answered(web, django_user_model):
    """POST /flow/execute may wait up to 60 s: the worker must not be killed at its heartbeat timeout."""
    from rest_framework.authtoken.models import Token

    waiter = django_user_model.objects.create_user("waiter")
    join(waiter)
    token = Token.objects.create(user=waiter).key
    port = web(WEB_TIMEOUT="2")
    flow = {"name": "w", "start_task": "a", "tasks": [{"name": "a", "agent": "wait", "input": {"seconds": 30}}]}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/flow/execute",
        data=json.dumps({"flow": flow, "wait": 5}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:  # no worker runs it: answered when `wait` is up
        assert response.status == 202
    assert time.monotonic() - started >= 5


def test_the_configuration_fits_the_longest_documented_wait():
    from flows.api.execute import MAX_WAIT_SECONDS

    namespace = {}
    exec((BASE_DIR / "gunicorn.conf.py").read_text(), namespace)
    assert namespace["worker_class"] == "gthread"  # a long request does not stop the worker's heartbeat
    assert namespace["graceful_timeout"] > MAX_WAIT_SECONDS
