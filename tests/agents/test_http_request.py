"""The http-request agent against real HTTP servers on 127.0.0.1 (allowlisted), and the outbound policy."""

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agentrunner.agents import get_agent
from agentrunner.agents.base import (
    AsyncAgentContext,
    InvalidAgentInput,
    NonRetryableAgentError,
    RetryableAgentError,
)
from agentrunner.agents.builtin.http_request import (
    HttpRequestAgent,
    PinnedTransport,
    RetryableHttpError,
    parse_retry_after,
)
from agentrunner.netpolicy import Allowlist, DestinationNotAllowed, NetPolicy

SECRET = "Bearer s3cret-token-1234"
BIG_BODY_BYTES = 5000
SMALL_LIMIT_BYTES = 1000
SLOW_SECONDS = 5.0  # far beyond the 0.2 s timeouts below: only a timed-out request ends in time
WAIT_SECONDS = 0.5  # how long /wait takes to answer
CONCURRENT_REQUESTS = 20
OVERLAP_BOUND_SECONDS = 5.0  # far below CONCURRENT_REQUESTS * WAIT_SECONDS: only overlapping requests finish in time
HANG_SECONDS = 10.0  # how long /hang and /hang-body wait for the client to go away
DEADLINE_SECONDS = 5.0  # for waiting on a condition
TRANSPORT_TIMEOUT = httpx.Timeout(5.0).as_dict()


class Handler(BaseHTTPRequestHandler):
    """Routes for the test server; every request is recorded in `server.hits`."""

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _handle(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.hits.append((self.command, url.path))
        self.server.counts[url.path] += 1
        route = getattr(self, "route_" + url.path.strip("/").replace("-", "_"), None)
        if route is None:
            self._send(404, "no such page", "text/plain")
        else:
            route(url, body)

    def _send(self, status, body, content_type="application/json", headers=()):
        data = (
            body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _redirect(self, status, location):
        self._send(status, "", "text/plain", [("Location", location)])

    def route_json(self, url, body):
        self._send(200, {"hello": "world"})

    def route_text(self, url, body):
        self._send(200, "héllo wörld", "text/plain; charset=utf-8")

    def route_created(self, url, body):
        self._send(201, {"id": 7})

    def route_echo(self, url, body):
        self._send(
            200,
            {
                "method": self.command,
                "query": parse_qs(url.query),
                "content_type": self.headers.get("Content-Type"),
                "body": body.decode(),
                "host": self.headers.get("Host"),
                "header_names": sorted(name.lower() for name in self.headers),
            },
        )

    def route_echo_auth_400(self, url, body):
        self._send(400, f"invalid token: {self.headers.get('Authorization')}", "text/plain")

    def route_flaky(self, url, body):
        if self.server.counts[url.path] == 1:
            self._send(503, "try again later", "text/plain", [("Retry-After", "2")])
        else:
            self._send(200, {"ok": True})

    def route_limited(self, url, body):
        self._send(429, "slow down", "text/plain", [("Retry-After", "7")])

    def route_error(self, url, body):
        self._send(500, "boom: database on fire", "text/plain")

    def route_missing(self, url, body):
        self._send(404, "no such thing here", "text/plain")

    def route_slow(self, url, body):
        time.sleep(SLOW_SECONDS)
        self._send(200, {"late": True})

    def route_wait(self, url, body):
        time.sleep(WAIT_SECONDS)
        self._send(200, {"waited": True})

    def route_hang(self, url, body):
        self._wait_for_the_client_to_close()

    def route_hang_body(self, url, body):
        # Headers and the start of the body, then nothing: the client is left reading the body.
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(BIG_BODY_BYTES))
        self.end_headers()
        self.wfile.write(b"z" * 100)
        self._wait_for_the_client_to_close()

    def route_big(self, url, body):
        self._send(200, "x" * BIG_BODY_BYTES, "text/plain")

    def route_big_stream(self, url, body):
        # No Content-Length: the body ends when the connection closes, so only counting can stop it.
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        for _ in range(BIG_BODY_BYTES // 100):
            self.wfile.write(b"y" * 100)

    def route_redirect(self, url, body):
        self._redirect(302, parse_qs(url.query)["to"][0])

    def route_redirect_303(self, url, body):
        self._redirect(303, "/echo")

    def route_redirect_307(self, url, body):
        self._redirect(307, "/echo")

    def route_loop(self, url, body):
        self._redirect(302, "/loop")

    def _wait_for_the_client_to_close(self):
        """Record the path in `server.closed_by_client` once the client closes the connection."""
        self.close_connection = True
        self.connection.settimeout(HANG_SECONDS)
        try:
            closed = self.connection.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        if closed:
            self.server.closed_by_client.append(urlsplit(self.path).path)


class QuietServer(ThreadingHTTPServer):
    request_queue_size = 64  # the concurrency test connects CONCURRENT_REQUESTS clients at once

    def handle_error(self, request, client_address):
        pass  # a client that timed out and went away is expected here


def start_server(ssl_context=None, address=("127.0.0.1", 0)):
    httpd = QuietServer(address, Handler)
    httpd.hits, httpd.counts, httpd.closed_by_client = [], Counter(), []
    if ssl_context is not None:
        httpd.socket = ssl_context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return httpd


@pytest.fixture
def server():
    httpd = start_server()
    httpd.url = f"http://127.0.0.1:{httpd.server_port}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def outbound(settings):
    """Staging-like policy: no external requests, only the loopback test server allowlisted."""
    settings.ALLOW_EXTERNAL_REQUESTS = False
    settings.HTTP_AGENT_ALLOWLIST = ["127.0.0.1"]
    settings.HTTP_AGENT_CONNECT_TIMEOUT_SECONDS = 2.0
    settings.HTTP_AGENT_READ_TIMEOUT_SECONDS = 2.0
    settings.HTTP_AGENT_MAX_RESPONSE_BYTES = 1024 * 1024
    settings.HTTP_AGENT_MAX_REDIRECTS = 3
    return settings


class RecordingLog:
    """Stands in for the context's structlog logger; keeps the event names."""

    def __init__(self):
        self.events = []

    def info(self, event, **fields):
        self.events.append(event)

    def warning(self, event, **fields):
        self.events.append(event)


def make_context(agent: HttpRequestAgent, data: dict, **kwargs) -> AsyncAgentContext:
    return AsyncAgentContext(run_id=uuid.uuid4(), step_name="x", attempt=1, input=agent.validate_input(data), **kwargs)


def call(**data) -> dict:
    """Run the agent once on a fresh event loop, as the engine's loop would."""
    agent = HttpRequestAgent()
    output = asyncio.run(agent.run(make_context(agent, data)))
    json.dumps(output, allow_nan=False)  # the engine stores outputs as JSON
    return output


async def until(condition, what: str) -> None:
    """Wait (without blocking the loop) until `condition()` is true; fail after DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_http_request__is_registered_async_unlimited_with_three_attempts():
    agent = get_agent("http-request")

    assert isinstance(agent, HttpRequestAgent)
    assert agent.is_async()
    assert agent.concurrency.limit is None
    assert agent.max_attempts == 3


# --- requests to the allowlisted server ----------------------------------------------------------


def test_get__json_response_is_parsed(server):
    output = call(url=f"{server.url}/json")

    assert output["status"] == 200
    assert output["json"] == {"hello": "world"}
    assert "text" not in output
    assert output["headers"]["content-type"] == "application/json"
    assert all(key == key.lower() for key in output["headers"])
    assert output["url"] == f"{server.url}/json"
    assert isinstance(output["elapsed_ms"], int) and output["elapsed_ms"] >= 0


def test_get__text_response_is_decoded_with_its_charset(server):
    output = call(url=f"{server.url}/text")

    assert output["text"] == "héllo wörld"
    assert "json" not in output


def test_post__json_body_is_sent(server):
    output = call(method="POST", url=f"{server.url}/echo", json={"a": [1, 2], "b": None})

    echoed = output["json"]
    assert echoed["method"] == "POST"
    assert echoed["content_type"] == "application/json"
    assert json.loads(echoed["body"]) == {"a": [1, 2], "b": None}


def test_put__form_body_is_url_encoded(server):
    output = call(method="PUT", url=f"{server.url}/echo", form={"name": "Ada Lovelace", "role": "admin&co"})

    echoed = output["json"]
    assert echoed["method"] == "PUT"
    assert echoed["content_type"] == "application/x-www-form-urlencoded"
    assert parse_qs(echoed["body"]) == {"name": ["Ada Lovelace"], "role": ["admin&co"]}


def test_get__query_params_are_merged_into_the_url(server):
    output = call(url=f"{server.url}/echo?keep=1", query={"q": "a b", "n": 2, "tags": ["x", "y"], "flag": True})

    assert output["json"]["query"] == {"keep": ["1"], "q": ["a b"], "n": ["2"], "tags": ["x", "y"], "flag": ["true"]}


def test_head__returns_status_and_empty_text(server):
    output = call(method="HEAD", url=f"{server.url}/json")

    assert output["status"] == 200
    assert output["text"] == ""


def test_expected_status__listed_non_2xx_status_succeeds(server):
    assert call(url=f"{server.url}/missing", expected_status=[404])["status"] == 404
    assert call(method="POST", url=f"{server.url}/created", expected_status=[201])["json"] == {"id": 7}


def test_expected_status__mismatch_is_non_retryable_with_status(server):
    with pytest.raises(NonRetryableAgentError) as exc:
        call(url=f"{server.url}/json", expected_status=[201])

    assert "HTTP 200" in str(exc.value) and "expected 201" in str(exc.value)


# --- destinations refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path_or_url", "reason"),
    [
        ("http://127.0.0.1:{port}/json", "127.0.0.1 is a loopback address"),
        ("http://10.1.2.3/", "10.1.2.3 is a private address; add it to HTTP_AGENT_ALLOWLIST to allow it"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("http://localhost:{port}/json", "loopback"),
        ("http://[::1]:{port}/json", "::1 is a loopback address"),
        ("http://0.0.0.0:{port}/json", "0.0.0.0 is an unspecified address"),
        ("http://[::ffff:127.0.0.1]:{port}/json", "IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("http://100.64.0.9/", "carrier-grade NAT"),
        ("http://[fe80::1]/", "link-local"),
        ("http://2130706433:{port}/json", "resolves to 127.0.0.1, a loopback address"),  # decimal 127.0.0.1
        ("http://0x7f.1:{port}/json", "resolves to 127.0.0.1, a loopback address"),
    ],
)
def test_destination__non_public_is_refused_without_allowlist_even_with_external_requests(
    settings, server, path_or_url, reason
):
    settings.ALLOW_EXTERNAL_REQUESTS = True
    settings.HTTP_AGENT_ALLOWLIST = ["192.168.50.0/24", "api.example.com"]  # matches none of them

    with pytest.raises(NonRetryableAgentError) as exc:
        call(url=path_or_url.format(port=server.server_port))

    assert str(exc.value).startswith("destination not allowed: ")
    assert reason in str(exc.value)
    assert server.hits == []  # refused before connecting


def test_destination__localhost_works_when_allowlisted_by_name(settings, server):
    settings.HTTP_AGENT_ALLOWLIST = ["localhost"]

    assert call(url=f"http://localhost:{server.server_port}/json")["json"] == {"hello": "world"}


def test_destination__public_address_refused_when_external_requests_are_off():
    with pytest.raises(NonRetryableAgentError) as exc:
        call(url="http://93.184.216.34/")

    assert "93.184.216.34 is an external address and ALLOW_EXTERNAL_REQUESTS is off" in str(exc.value)


def test_destination__name_refused_without_dns_query_when_nothing_could_allow_it(settings, monkeypatch):
    settings.HTTP_AGENT_ALLOWLIST = ["api.internal"]  # names only: no address could be allowlisted
    lookups = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: lookups.append(args) or [])

    with pytest.raises(NonRetryableAgentError) as exc:
        call(url="https://example.com/")

    assert "example.com is not in HTTP_AGENT_ALLOWLIST and ALLOW_EXTERNAL_REQUESTS is off" in str(exc.value)
    assert lookups == []


@pytest.mark.parametrize("host", ["foo.localhost", "FOO.LocalHost.", "localhost", "LOCALHOST."])
def test_destination__localhost_names_refused_without_dns_query(settings, server, monkeypatch, host):
    settings.ALLOW_EXTERNAL_REQUESTS = True  # with external requests on, today's policy resolved the name first
    lookups = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: lookups.append(args) or [])

    with pytest.raises(NonRetryableAgentError) as exc:
        call(url=f"http://{host}:{server.server_port}/json")

    assert "is a loopback name; add it to HTTP_AGENT_ALLOWLIST" in str(exc.value)
    assert lookups == []
    assert server.hits == []


def test_destination__allowlist_entry_with_a_port_allows_that_port_only(settings, server):
    other = start_server()
    try:
        settings.HTTP_AGENT_ALLOWLIST = [f"127.0.0.1:{server.server_port}"]

        assert call(url=f"{server.url}/json")["json"] == {"hello": "world"}
        with pytest.raises(NonRetryableAgentError, match="127.0.0.1 is a loopback address"):
            call(url=f"http://127.0.0.1:{other.server_port}/json")
        assert other.hits == []
    finally:
        other.shutdown()
        other.server_close()


def test_destination__invalid_allowlist_entry_is_a_configuration_error(settings, server):
    from django.core.exceptions import ImproperlyConfigured

    settings.HTTP_AGENT_ALLOWLIST = ["127.0.0.1", "bad*entry"]

    with pytest.raises(ImproperlyConfigured, match="bad\\*entry"):
        call(url=f"{server.url}/json")


# --- redirects -----------------------------------------------------------------------------------


def test_redirect__to_an_allowed_path_is_followed(server):
    output = call(url=f"{server.url}/redirect?to=/json")

    assert output["json"] == {"hello": "world"}
    assert output["url"] == f"{server.url}/json"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("http://[::ffff:169.254.169.254]/", "IPv4-mapped form of 169.254.169.254"),
    ],
)
@pytest.mark.parametrize("external", [False, True])
def test_redirect__to_private_or_metadata_address_is_refused(settings, server, location, reason, external):
    settings.ALLOW_EXTERNAL_REQUESTS = external

    with pytest.raises(NonRetryableAgentError) as exc:
        call(url=f"{server.url}/redirect?to={location}")

    assert str(exc.value).startswith("destination not allowed: ")
    assert reason in str(exc.value)


def test_redirect__303_turns_post_into_get_without_body(server):
    output = call(method="POST", url=f"{server.url}/redirect-303", json={"a": 1})

    assert output["json"]["method"] == "GET"
    assert output["json"]["body"] == ""


def test_redirect__307_repeats_the_post_with_its_body(server):
    output = call(method="POST", url=f"{server.url}/redirect-307", json={"a": 1})

    assert output["json"]["method"] == "POST"
    assert json.loads(output["json"]["body"]) == {"a": 1}


def test_redirect__input_headers_are_dropped_when_leaving_the_origin(settings, server):
    settings.HTTP_AGENT_ALLOWLIST = ["127.0.0.1", "localhost"]
    other_origin = f"http://localhost:{server.server_port}/echo"

    same = call(url=f"{server.url}/redirect?to=/echo", headers={"X-Api-Key": "k-123456"})
    other = call(url=f"{server.url}/redirect?to={other_origin}", headers={"X-Api-Key": "k-123456"})

    assert "x-api-key" in same["json"]["header_names"]
    assert "x-api-key" not in other["json"]["header_names"]


def test_redirect__listed_in_expected_status_is_returned_not_followed(server):
    output = call(url=f"{server.url}/redirect?to=/json", expected_status=[302])

    assert output["status"] == 302
    assert output["headers"]["location"] == "/json"
    assert server.counts["/json"] == 0


def test_redirect__more_than_the_limit_is_non_retryable(settings, server):
    settings.HTTP_AGENT_MAX_REDIRECTS = 2

    with pytest.raises(NonRetryableAgentError, match="too many redirects \\(more than 2\\)"):
        call(url=f"{server.url}/loop")
    assert server.counts["/loop"] == 3


# --- limits and failures -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/big", "/big-stream"])
def test_response__larger_than_the_limit_is_cut_with_a_clear_error(settings, server, path):
    settings.HTTP_AGENT_MAX_RESPONSE_BYTES = SMALL_LIMIT_BYTES

    with pytest.raises(NonRetryableAgentError, match=f"response larger than {SMALL_LIMIT_BYTES} bytes"):
        call(url=f"{server.url}{path}")


def test_timeout__slow_response_is_retryable(settings, server):
    settings.HTTP_AGENT_READ_TIMEOUT_SECONDS = 0.2
    started = time.monotonic()

    with pytest.raises(RetryableAgentError, match="ReadTimeout"):
        call(url=f"{server.url}/slow")
    assert time.monotonic() - started < SLOW_SECONDS


def test_timeout__input_timeout_is_capped_by_settings_and_can_shorten_them(settings, server):
    settings.HTTP_AGENT_READ_TIMEOUT_SECONDS = 5.0
    started = time.monotonic()

    with pytest.raises(RetryableAgentError, match="ReadTimeout"):
        call(url=f"{server.url}/slow", timeout_seconds=0.2)
    assert time.monotonic() - started < SLOW_SECONDS


def test_connection_refused__is_retryable():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(RetryableAgentError, match="ConnectError"):
        call(url=f"http://127.0.0.1:{port}/")


def test_503__is_retryable_with_retry_after_and_the_next_attempt_succeeds(server):
    with pytest.raises(RetryableHttpError) as exc:
        call(url=f"{server.url}/flaky")
    assert exc.value.retryable
    assert exc.value.retry_after == 2
    assert "HTTP 503" in str(exc.value) and "retry after 2 s" in str(exc.value) and "try again later" in str(exc.value)

    assert call(url=f"{server.url}/flaky")["json"] == {"ok": True}  # the engine's retry


def test_429__is_retryable_with_retry_after_parsed(server):
    with pytest.raises(RetryableAgentError) as exc:
        call(url=f"{server.url}/limited")

    assert exc.value.retry_after == 7
    assert "HTTP 429" in str(exc.value) and "retry after 7 s" in str(exc.value)


def test_500__is_retryable_with_a_body_excerpt(server):
    with pytest.raises(RetryableAgentError) as exc:
        call(url=f"{server.url}/error")

    assert exc.value.retry_after is None
    assert "HTTP 500" in str(exc.value) and "boom: database on fire" in str(exc.value)


def test_404__is_non_retryable_with_a_body_excerpt(server):
    with pytest.raises(NonRetryableAgentError) as exc:
        call(url=f"{server.url}/missing")

    assert not exc.value.retryable
    assert "HTTP 404" in str(exc.value) and "expected 2xx" in str(exc.value) and "no such thing here" in str(exc.value)


def test_parse_retry_after__seconds_and_http_dates():
    now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)

    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after("Sun, 01 Jun 2025 12:00:30 GMT", now=now) == 30
    assert parse_retry_after("Sun, 01 Jun 2025 11:00:00 GMT", now=now) == 0  # in the past
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


# --- secrets -------------------------------------------------------------------------------------


def test_secrets__header_values_never_appear_in_logs_or_errors(settings, server, caplog):
    caplog.set_level("DEBUG")  # httpx/httpcore debug logging included
    headers = {"Authorization": SECRET, "X-Api-Key": "key-987654"}
    errors = []

    call(url=f"{server.url}/json?token=query-secret", headers=headers)
    for path in ("/echo-auth-400", "/error", "/redirect?to=http://10.0.0.1/"):
        with pytest.raises(NonRetryableAgentError if path != "/error" else RetryableAgentError) as exc:
            call(url=f"{server.url}{path}", headers=headers)
        errors.append(str(exc.value))
    settings.HTTP_AGENT_READ_TIMEOUT_SECONDS = 0.2
    with pytest.raises(RetryableAgentError) as exc:
        call(url=f"{server.url}/slow", headers=headers)
    errors.append(str(exc.value))

    assert "invalid token: [redacted]" in errors[0]  # the server echoed the header back
    logged = caplog.text + "".join(str(record.msg) for record in caplog.records)
    for text in [*errors, logged]:
        assert "s3cret" not in text
        assert "key-987654" not in text
    assert "query-secret" not in logged  # logs carry scheme, host and path only
    assert f"{server.url}/json" in logged


def test_headers__invalid_value_is_refused_without_echoing_it(server):
    with pytest.raises(NonRetryableAgentError) as exc:
        call(url=f"{server.url}/json", headers={"Authorization": "Bearer s3cret\r\nX-Injected: 1"})

    assert "Authorization" in str(exc.value)
    assert "s3cret" not in str(exc.value)


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding"])
def test_headers__reserved_ones_cannot_be_set(server, name):
    with pytest.raises(NonRetryableAgentError, match="set by the agent"):
        call(url=f"{server.url}/json", headers={name: "x"})


# --- input -----------------------------------------------------------------------------------------


def test_input__json_and_form_together_are_refused(server):
    with pytest.raises(NonRetryableAgentError, match="not both"):
        call(method="POST", url=f"{server.url}/echo", json={"a": 1}, form={"b": "2"})


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file", "file:///etc/passwd", "/relative"])
def test_input__only_http_and_https_urls_are_accepted(url):
    with pytest.raises(InvalidAgentInput):
        call(url=url)


def test_input__credentials_in_the_url_are_refused(server):
    with pytest.raises(NonRetryableAgentError, match="must not contain credentials") as exc:
        call(url=f"http://user:pa55word@127.0.0.1:{server.server_port}/json")

    assert "pa55word" not in str(exc.value)


# --- DNS rebinding: the transport connects to the address it checked -------------------------------


class FakeResolver:
    """Answers from a fixed table, counting lookups; the system resolver knows none of these names."""

    def __init__(self, table: dict[str, list[str]]):
        import ipaddress

        self.table = {name: [ipaddress.ip_address(a) for a in addresses] for name, addresses in table.items()}
        self.lookups = Counter()

    async def __call__(self, host, port):
        self.lookups[host] += 1
        return self.table[host]


async def fetch(transport: PinnedTransport, url: str) -> httpx.Response:
    """GET `url` through the transport and read the body."""
    response = await transport.handle_async_request(
        httpx.Request("GET", url, extensions={"timeout": TRANSPORT_TIMEOUT})
    )
    await response.aread()
    return response


def test_pinned_transport__connects_to_the_checked_address_keeping_the_host_header(server):
    resolver = FakeResolver({"rebind.test": ["127.0.0.1"]})
    policy = NetPolicy(allowlist=Allowlist.parse(["127.0.0.0/8"]), resolver=resolver)

    async def scenario():
        async with PinnedTransport(policy=policy) as transport:
            return await fetch(transport, f"http://rebind.test:{server.server_port}/echo")

    response = asyncio.run(scenario())

    assert response.status_code == 200
    assert response.json()["host"] == f"rebind.test:{server.server_port}"
    assert resolver.lookups["rebind.test"] == 1  # resolved once, by the policy; httpcore did no lookup


def test_pinned_transport__refuses_when_any_resolved_address_is_not_allowed(server):
    resolver = FakeResolver({"rebind.test": ["127.0.0.1", "10.0.0.1"]})
    policy = NetPolicy(allowlist=Allowlist.parse(["127.0.0.0/8"]), resolver=resolver)

    async def scenario():
        async with PinnedTransport(policy=policy) as transport:
            await fetch(transport, f"http://rebind.test:{server.server_port}/echo")

    with pytest.raises(DestinationNotAllowed, match="10.0.0.1"):
        asyncio.run(scenario())
    assert server.hits == []


@pytest.fixture
def rebinding_dns(monkeypatch):
    """The system resolver for rebind.test: 127.0.0.1 (allowlisted) on the first lookup, 127.0.0.2 after.

    127.0.0.2 is a loopback address the policy refuses; a trap server listens there, so a second lookup
    (by httpx, httpcore or anyio, between the check and the connection) would be seen as a hit on the trap.
    """
    system_getaddrinfo = socket.getaddrinfo
    lookups = []

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host  # anyio passes the IDNA-encoded bytes
        if name != "rebind.test":
            return system_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(name)
        address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


@pytest.fixture
def trap_server(server):
    """A second server on 127.0.0.2, on the same port as `server`."""
    httpd = start_server(address=("127.0.0.2", server.server_port))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_rebinding__the_agent_connects_only_to_the_address_it_checked(server, trap_server, rebinding_dns):
    output = call(url=f"http://rebind.test:{server.server_port}/echo")

    assert output["json"]["host"] == f"rebind.test:{server.server_port}"
    assert server.hits == [("GET", "/echo")]
    assert trap_server.hits == []
    assert rebinding_dns == ["rebind.test"]  # one lookup, for the check; the connection made none
    # The rebound address is one the policy refuses when asked directly.
    with pytest.raises(NonRetryableAgentError, match="127.0.0.2 is a loopback address"):
        call(url=f"http://127.0.0.2:{server.server_port}/echo")
    assert trap_server.hits == []


@pytest.fixture
def tls_server(tmp_path):
    """An https server on 127.0.0.1 with a self-signed certificate for pinned.test; records the SNI names."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=pinned.test"]
        + ["-addext", "subjectAltName=DNS:pinned.test", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sni_names = []
    context.sni_callback = lambda sock, name, ctx: sni_names.append(name)
    httpd = start_server(context)
    httpd.sni_names = sni_names
    httpd.client_context = ssl.create_default_context(cafile=str(cert))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_pinned_transport__https_sends_the_name_as_sni_and_verifies_the_certificate_for_it(tls_server):
    resolver = FakeResolver({"pinned.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    policy = NetPolicy(allowlist=Allowlist.parse(["pinned.test", "other.test"]), resolver=resolver)

    async def scenario():
        async with PinnedTransport(policy=policy, verify=tls_server.client_context) as transport:
            response = await fetch(transport, f"https://pinned.test:{tls_server.server_port}/json")
            assert response.status_code == 200 and response.json() == {"hello": "world"}
            assert tls_server.sni_names == ["pinned.test"]

            # Same IP, another name: the certificate is checked against the name, not the IP.
            with pytest.raises(httpx.ConnectError, match="(?i)hostname"):
                await fetch(transport, f"https://other.test:{tls_server.server_port}/json")

    asyncio.run(scenario())


@pytest.mark.parametrize("name", ["X-Foo\n", "Bad Name", "X:Y"])
def test_headers__invalid_names_are_refused(server, name):
    with pytest.raises(NonRetryableAgentError, match="not a valid HTTP header name"):
        call(url=f"{server.url}/json", headers={name: "value"})


# --- the event loop: overlap and cancellation -------------------------------------------------------


def test_concurrency__requests_from_one_event_loop_overlap(server):
    agent = HttpRequestAgent()
    contexts = [make_context(agent, {"url": f"{server.url}/wait"}) for _ in range(CONCURRENT_REQUESTS)]

    async def scenario():
        return await asyncio.gather(*(agent.run(context) for context in contexts))

    started = time.monotonic()
    outputs = asyncio.run(scenario())
    elapsed = time.monotonic() - started

    assert [output["json"] for output in outputs] == [{"waited": True}] * CONCURRENT_REQUESTS
    assert server.counts["/wait"] == CONCURRENT_REQUESTS
    # One after another they would take CONCURRENT_REQUESTS * WAIT_SECONDS (10 s); the bound is not a speed target.
    assert elapsed < OVERLAP_BOUND_SECONDS


def test_cancel__set_before_the_request_sends_nothing(server):
    agent = HttpRequestAgent()
    context = make_context(agent, {"url": f"{server.url}/json"})
    context.request_cancel()

    with pytest.raises(NonRetryableAgentError, match="cancelled"):
        asyncio.run(agent.run(context))
    assert server.hits == []


@pytest.mark.parametrize(
    ("path", "reached"),
    [
        ("/hang", "the server has the request and the agent awaits the response"),
        ("/hang-body", "the agent has the headers and awaits the rest of the body"),
    ],
)
def test_cancel__cancelling_the_task_mid_request_raises_cancelled_error_and_closes_the_connection(
    server, path, reached
):
    agent = HttpRequestAgent()
    log = RecordingLog()
    context = make_context(agent, {"url": f"{server.url}{path}"}, log=log)

    async def scenario():
        task = asyncio.create_task(agent.run(context))
        if path == "/hang":
            await until(lambda: server.counts[path] == 1, reached)
        else:
            await until(lambda: "http_response" in log.events, reached)  # logged before the body is read
        context.request_cancel()  # what the engine does on cancel or timeout: both
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: server.closed_by_client == [path], "the server to see the connection closed")

    asyncio.run(scenario())

    assert "http_request_failed" not in log.events  # CancelledError is not turned into an agent error
