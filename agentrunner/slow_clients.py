"""A deadline for request bodies: a client that stops sending does not hold a web thread.

A client may announce `Content-Length: 1000`, send part of it and stall. The thread reading the
body then waits in `recv` for as long as the client likes: a few such clients take every thread,
and `/api/v1/health` stops answering. Here each request with a body gets REQUEST_BODY_SECONDS to
deliver it, counted from when its headers reached the application; one watchdog thread per
process shuts down the socket of a request past its deadline, which ends the blocked read at once
(the request fails; its client is gone). A client trickling a byte at a time is stopped the same way.

It needs the server's socket in the WSGI environ (gunicorn gives `gunicorn.socket`); elsewhere
(the test client, other servers) it does nothing. A buffering proxy in front (nginx's default)
takes this work off the application entirely; this is the guard when there is none.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time

import structlog

log = structlog.get_logger("agentrunner.web")


class _Watchdog:
    """One thread per process: shuts down the sockets of requests whose body deadline has passed."""

    def __init__(self):
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, seconds: float) -> int:
        with self._lock:
            ident = next(self._ids)
            heapq.heappush(self._heap, (time.monotonic() + seconds, ident, sock))
            self._live.add(ident)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="body-deadline", daemon=True)
                self._thread.start()
            self._lock.notify()
            return ident

    def done(self, ident: int) -> None:
        with self._lock:
            self._live.discard(ident)

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._lock.wait()
                    continue
                deadline, ident, sock = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(ident)
            log.warning("request_body_timeout")
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


class _DeadlineInput:
    """The request's wsgi.input, reporting when the body has been read in full."""

    def __init__(self, stream, length: int, on_done):
        self._stream, self._left, self._on_done = stream, length, on_done

    def _took(self, data):
        self._left -= len(data)
        if self._left <= 0 or not data:
            self._on_done()
        return data

    def read(self, *args):
        return self._took(self._stream.read(*args))

    def readline(self, *args):
        return self._took(self._stream.readline(*args))

    def readlines(self, *args):
        lines = self._stream.readlines(*args)
        self._took(b"".join(lines))
        return lines

    def __iter__(self):
        return iter(self.readline, b"")

    def drain(self) -> None:
        """Read and drop what the application left unread (before the response, within the deadline)."""
        with contextlib.suppress(OSError, ValueError):
            while self._left > 0 and self.read(min(self._left, 65536)):
                pass


def body_deadline(app, seconds: float):
    """Wrap a WSGI app: each request with a body must deliver it within `seconds`."""

    def wrapped(environ, start_response):
        sock = environ.get("gunicorn.socket")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if sock is None or seconds <= 0 or length <= 0:
            return app(environ, start_response)
        ident = _watchdog.watch(sock, seconds)
        body = environ["wsgi.input"] = _DeadlineInput(environ["wsgi.input"], length, lambda: _watchdog.done(ident))
        try:
            return app(environ, start_response)
        finally:
            # An answer given without reading the body (a 400, a 401): the server would read the rest
            # before answering anyway, with no deadline; read it here, with one.
            body.drain()
            _watchdog.done(ident)

    return wrapped
