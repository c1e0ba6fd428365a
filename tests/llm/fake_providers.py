"""Real HTTP servers on 127.0.0.1 that speak the OpenAI and Anthropic wire formats, for the gateway tests.

Each server answers from a queue of behaviours (then from its default), counts and records every
request, and measures the time it spent in each handler so that the gateway's own overhead can be
told apart from the provider's latency. The SDKs talk to them over real sockets: nothing is mocked.
A thread per connection: a request that waits (`latency`) holds up no other, and `max_in_flight` says
how many were being handled at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPENAI = "openai"
ANTHROPIC = "anthropic"


@dataclass(frozen=True)
class Behaviour:
    """What the server does with one request."""

    kind: str = "ok"  # ok | status | echo | malformed | hang
    text: str = "hello"
    status: int = 200
    latency: float = 0.0  # seconds to wait before answering
    retry_after: str | None = None
    prompt_tokens: int = 10
    completion_tokens: int = 5
    headers: dict = field(default_factory=dict)


def ok(text: str = "hello", *, prompt_tokens: int = 10, completion_tokens: int = 5, latency: float = 0.0):
    return Behaviour("ok", text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency=latency)


def status(code: int = 500, *, retry_after: str | None = None, latency: float = 0.0) -> Behaviour:
    return Behaviour("status", status=code, retry_after=retry_after, latency=latency)


def rate_limited(retry_after: str | None = "1") -> Behaviour:
    return status(429, retry_after=retry_after)


def echo_credentials(code: int = 401) -> Behaviour:
    """An error whose message repeats the request's credentials and headers, as some providers and proxies do."""
    return Behaviour("echo", status=code)


def malformed() -> Behaviour:
    """A 200 whose JSON body is cut short."""
    return Behaviour("malformed")


def hang(seconds: float) -> Behaviour:
    """Answer only after `seconds` (longer than the client's timeout: the client gives up first)."""
    return Behaviour("hang", latency=seconds)


@dataclass
class Received:
    path: str
    body: dict | None
    headers: dict  # names in lower case
    at: float  # time.monotonic() when the request arrived


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections when 50 clients connect at once


class FakeProvider:
    """A provider on a random port: `push(...)` behaviours, read `requests`, `stop()` when done."""

    def __init__(self, flavour: str, *, default: Behaviour | None = None):
        self.flavour = flavour
        self.default = default or ok()
        self.queue: deque[Behaviour] = deque()
        self.requests: list[Received] = []
        self.handler_seconds: list[float] = []  # server-side time per answered request
        self.in_flight = 0  # requests received and not yet answered
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        """The URL the SDK is given (OpenAI's includes /v1, Anthropic's does not)."""
        root = f"http://127.0.0.1:{self.port}"
        return f"{root}/v1" if self.flavour == OPENAI else root

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def push(self, *behaviours: Behaviour) -> FakeProvider:
        with self.lock:
            self.queue.extend(behaviours)
        return self

    def next_behaviour(self, received: Received) -> Behaviour:
        with self.lock:
            self.requests.append(received)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.queue.popleft() if self.queue else self.default

    def answered(self) -> None:
        """The handler is done with a request (answered it, or left it unanswered on purpose)."""
        with self.lock:
            self.in_flight -= 1

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # --- wire formats ---------------------------------------------------------------------

    def success_body(self, behaviour: Behaviour, request: dict) -> dict:
        model = request.get("model", "unknown")
        if self.flavour == OPENAI:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": behaviour.text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": behaviour.prompt_tokens,
                    "completion_tokens": behaviour.completion_tokens,
                    "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens,
                },
            }
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": behaviour.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": behaviour.prompt_tokens, "output_tokens": behaviour.completion_tokens},
        }

    def error_body(self, code: int, message: str | None = None) -> dict:
        message = message or f"fake error {code}"
        if self.flavour == OPENAI:
            return {"error": {"message": message, "type": "server_error", "code": None}}
        return {"type": "error", "error": {"type": "api_error", "message": message}}


def _handler_for(provider: FakeProvider):
    expected_path = "/v1/chat/completions" if provider.flavour == OPENAI else "/v1/messages"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
        # Headers and body leave in one segment, without Nagle: otherwise delayed ACKs add ~40 ms per call.
        wbufsize = 64 * 1024
        disable_nagle_algorithm = True

        def log_message(self, format, *args):  # quiet test output
            pass

        def do_POST(self):
            started = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            received = Received(self.path, body, {k.lower(): v for k, v in self.headers.items()}, time.monotonic())
            behaviour = provider.next_behaviour(received)
            try:
                self.respond(behaviour, body, started)
            finally:
                provider.answered()

        def respond(self, behaviour: Behaviour, body: dict | None, started: float):
            if self.path != expected_path:
                self.reply(404, {"error": {"message": f"no route {self.path}"}}, started)
                return
            if behaviour.latency and provider.stopping.wait(behaviour.latency):
                return
            if behaviour.kind == "hang":
                self.close_connection = True
                return
            if behaviour.kind == "status":
                headers = {"retry-after": behaviour.retry_after} if behaviour.retry_after is not None else {}
                # The SDKs retry on x-should-retry; the gateway's own retry logic must be what acts.
                headers["x-should-retry"] = "false"
                self.reply(behaviour.status, provider.error_body(behaviour.status), started, headers)
                return
            if behaviour.kind == "echo":
                credential = self.headers.get("x-api-key") or self.headers.get("authorization", "").split(" ")[-1]
                message = f"invalid API key {credential}; the request had the headers {dict(self.headers)}"
                self.reply(behaviour.status, provider.error_body(behaviour.status, message), started)
                return
            if behaviour.kind == "malformed":
                self.reply_raw(200, b'{"id": "x", "choices": [{"index": 0, "mess', started)
                return
            self.reply(200, provider.success_body(behaviour, body or {}), started, behaviour.headers)

        def reply(self, code: int, payload: dict, started: float, headers: dict | None = None):
            self.reply_raw(code, json.dumps(payload).encode(), started, headers)

        def reply_raw(self, code: int, data: bytes, started: float, headers: dict | None = None):
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True
            finally:
                with provider.lock:
                    provider.handler_seconds.append(time.perf_counter() - started)

    return Handler
