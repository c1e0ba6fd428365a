"""`http-request`: call an HTTP(S) endpoint, under the outbound policy of `agentrunner.netpolicy`.

Secrets: request header values never reach a log line or an error message. Logs carry the method, the URL
without query or credentials, the status and the elapsed time; response excerpts in error messages have the
request's header values redacted (an endpoint may echo them back).

An async agent: the engine runs it on an event loop with many other steps, so nothing here may block the
loop (host names are resolved in the loop's thread pool, see `NetPolicy.acheck`; the TLS context is built once
per process). A cancelled task gets `asyncio.CancelledError` at its current await; it propagates unchanged,
after the response and the connection are closed.
"""

from __future__ import annotations

import functools
import json
import math
import re
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import aclosing, contextmanager
from datetime import datetime

import httpx
from django.conf import settings

from agentrunner.agents.base import Agent, AsyncAgentContext, NonRetryableAgentError, RetryableAgentError
from agentrunner.agents.registry import register
from agentrunner.netpolicy import DestinationNotAllowed, NetPolicy, ResolutionFailed
from agentrunner.retry_after import parse_retry_after as retry_after_in_seconds

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_AFTER_STATUSES = frozenset({429, 503})
# Computed by httpx from the URL and body; set from the input they could smuggle a second request or
# make the pinned connection carry another virtual host's name.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "trailer"})
DEFAULT_HEADERS = {"user-agent": "agentrunner-http-request", "accept": "*/*", "accept-encoding": "gzip, deflate"}
ERROR_BODY_BYTES = 4096  # read at most this much of an error response, for its excerpt
EXCERPT_CHARS = 200
SECRET_MIN_CHARS = 4  # shorter header values ("1", "no") are not worth redacting everywhere
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110 token)
_SECRET_PARTS = re.compile(r"[\s,;]+")


class RetryableHttpError(RetryableAgentError):
    """A temporary HTTP failure; the step may succeed if tried again."""

    def __init__(self, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        # Seconds the server asked us to wait (Retry-After on 429/503); the engine may use it for its backoff.
        self.retry_after = retry_after


class PinnedTransport(httpx.AsyncHTTPTransport):
    """An async httpx transport that connects only to addresses the outbound policy has just checked.

    DNS rebinding: a name may resolve to a public address when it is checked and to 127.0.0.1 a moment later,
    when the HTTP library resolves it again to connect. So for each request this transport resolves the host
    once (`NetPolicy.acheck` resolves and checks every address, off the event loop), then hands httpcore a copy
    of the request whose URL holds the checked IP: httpcore (through anyio's `connect_tcp`) connects to that
    literal and makes no DNS query of its own. What the server sees is unchanged: the Host header was set from
    the original URL when the request was built, and for https the `sni_hostname` request extension
    (httpx/httpcore API) makes httpcore send the original name as SNI and verify the certificate against that
    name (ssl's server_hostname), not against the IP. The addresses are tried in the resolver's order, moving
    on only when a connection is refused.

    Keep-alive is off: httpcore pools connections by origin, which is now the IP, and a TLS connection opened
    for one name must never carry a request for another name on the same IP. No proxy is ever used (a proxy
    would resolve the name itself): `proxy` is not passed, and callers use the transport directly rather than
    through an `httpx.AsyncClient`, which would mount proxies from the environment (HTTP_PROXY, ALL_PROXY, ...)
    for some URLs in place of this transport.
    """

    def __init__(self, *, policy: NetPolicy, verify: ssl.SSLContext | str | bool = True):
        super().__init__(verify=verify, limits=httpx.Limits(max_keepalive_connections=0))
        self.policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
        host = url.raw_host.decode("ascii")
        addresses = await self.policy.acheck(host, url.port or DEFAULT_PORTS[url.scheme])
        for index, address in enumerate(addresses):
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=str(address)),
                headers=request.headers,
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
            try:
                response = await super().handle_async_request(pinned)
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise
                continue
            response.request = request
            return response
        raise AssertionError("NetPolicy.acheck returns at least one address")  # pragma: no cover


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The verifying TLS context every run shares (httpx's default: certifi, or SSL_CERT_FILE/SSL_CERT_DIR)."""
    # Built once per process: loading the CA bundle takes tens of milliseconds, which would block the event loop
    # at the start of every run. Sharing one context between connections is what an httpx client does too.
    return httpx.create_ssl_context()


@register
class HttpRequestAgent(Agent):
    name = "http-request"
    description = (
        'Sends one web request (HTTP or HTTPS) and returns the status, the headers, the body (as "json" when '
        'the answer is JSON, else as "text"), the final address and how long it took. Only addresses the '
        "server's outbound rules allow can be reached; private and internal addresses are always refused. "
        "Redirects are followed a limited number of times, each one checked the same way, unless their status "
        'is listed in "expected_status"; the headers you give are dropped when a redirect leaves the first site. '
        "Busy or failing servers, time-outs and broken connections are tried again; other unexpected statuses "
        "are not."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "method": {"enum": list(METHODS), "default": "GET"},
            "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", "maxLength": 8192},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "query": {
                "type": "object",
                "additionalProperties": {
                    "anyOf": [
                        {"type": ["string", "number", "boolean"]},
                        {"type": "array", "items": {"type": ["string", "number", "boolean"]}},
                    ]
                },
            },
            "json": {"description": 'A JSON body (any JSON value). Not together with "form".'},
            "form": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": 'A body of form fields. Not together with "json".',
            },
            "expected_status": {
                "type": "array",
                "items": {"type": "integer", "minimum": 100, "maximum": 599},
                "minItems": 1,
                "description": "Statuses that count as success (default: any 2xx).",
            },
            "timeout_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "How long to wait to connect and for the answer; the server sets an upper limit.",
            },
        },
        "required": ["url"],
        "additionalProperties": False,
    }
    max_attempts = 3

    async def run(self, context: AsyncAgentContext) -> dict:
        data = context.input
        if "json" in data and "form" in data:  # checked here: a schema `not` would echo the input (headers)
            raise NonRetryableAgentError("give either `json` or `form` as the body, not both")
        method = data.get("method", "GET")
        headers = _request_headers(data.get("headers") or {})
        url = _start_url(data["url"], data.get("query"))
        body = {"json": data["json"]} if "json" in data else {"data": data["form"]} if "form" in data else {}
        expected = frozenset(data.get("expected_status") or ())
        redactor = _Redactor(headers.values())
        timeout = _timeout(data.get("timeout_seconds"))
        max_bytes = int(settings.HTTP_AGENT_MAX_RESPONSE_BYTES)
        max_redirects = int(settings.HTTP_AGENT_MAX_REDIRECTS)
        started = time.monotonic()

        # The transport is used directly, not through an httpx.AsyncClient: see PinnedTransport (no proxies).
        async with PinnedTransport(policy=NetPolicy.from_settings(), verify=_tls_context()) as transport:
            for _hop in range(max_redirects + 1):
                if context.cancelled:
                    raise NonRetryableAgentError("cancelled before the request completed")
                target = f"{method} {_display_url(url)}"
                request = httpx.Request(
                    method, url, headers={**DEFAULT_HEADERS, **headers}, extensions={"timeout": timeout}, **body
                )
                hop_started = time.monotonic()
                with _http_errors(context, target, redactor, started):
                    response = await transport.handle_async_request(request)
                async with aclosing(response):
                    with _http_errors(context, target, redactor, started):
                        status = response.status_code
                        context.log.info(
                            "http_response",
                            method=method,
                            url=_display_url(url),
                            status=status,
                            elapsed_ms=_ms_since(hop_started),
                        )
                        location = response.headers.get("location")
                        if status in REDIRECT_STATUSES and status not in expected and location:
                            next_url = _redirect_url(url, location)
                            if _origin(next_url) != _origin(url):
                                headers = {}  # input headers may be credentials for this origin only
                            if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
                                method, body = "GET", {}  # what browsers (and httpx) do
                            url = next_url
                            continue
                        if (status in expected) if expected else (200 <= status < 300):
                            content = await _read_body(response, max_bytes, context, target)
                            return _output(response, content, url, _ms_since(started))
                        excerpt = redactor.redact(await _excerpt(response))
                        raise _status_error(status, target, excerpt, response.headers, expected)
            raise NonRetryableAgentError(f"too many redirects (more than {max_redirects}) from {_display_url(url)}")


class _Redactor:
    """Replace the request's header values (and their words) in text that may echo them."""

    def __init__(self, values: Iterable[str]):
        secrets: set[str] = set()
        for value in values:
            secrets.add(value.strip())
            secrets.update(_SECRET_PARTS.split(value))
        # Longest first, so a whole value goes before one of its words.
        self.secrets = sorted((s for s in secrets if len(s) >= SECRET_MIN_CHARS), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text


def _request_headers(raw: dict[str, str]) -> dict[str, str]:
    """Return the input headers, lowercased; refuse bad or reserved ones, naming the header, never its value."""
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if not _TOKEN.fullmatch(name):
            raise NonRetryableAgentError(f"header name {name[:64]!r} is not a valid HTTP header name")
        if name.lower() in RESERVED_HEADERS:
            raise NonRetryableAgentError(f"header {name} is set by the agent and cannot be given")
        if not value.isascii() or any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
            raise NonRetryableAgentError(f"header {name}: the value must be ASCII without control characters")
        headers[name.lower()] = value
    return headers


def _start_url(raw: str, query: dict | None) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise NonRetryableAgentError(f"invalid url: {exc}") from None
    if url.scheme not in DEFAULT_PORTS or not url.host:
        raise NonRetryableAgentError("url must be an absolute http:// or https:// URL")
    if url.userinfo:
        raise NonRetryableAgentError("url must not contain credentials; send them in an Authorization header")
    return url.copy_merge_params(query) if query else url


def _redirect_url(current: httpx.URL, location: str) -> httpx.URL:
    try:
        url = current.join(location)
    except httpx.InvalidURL:
        raise NonRetryableAgentError(f"redirect from {_display_url(current)} has an invalid Location") from None
    if url.scheme not in DEFAULT_PORTS or not url.host:
        raise NonRetryableAgentError(f"redirect from {_display_url(current)} leaves http/https")
    return url.copy_with(username=None, password=None, fragment=None)


def _origin(url: httpx.URL) -> tuple[str, bytes, int]:
    return url.scheme, url.raw_host.lower(), url.port or DEFAULT_PORTS[url.scheme]


def _display_url(url: httpx.URL) -> str:
    """Scheme, host, port and path: no credentials, no query (either may carry secrets)."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


def _timeout(requested: float | None) -> dict[str, float]:
    connect = float(settings.HTTP_AGENT_CONNECT_TIMEOUT_SECONDS)
    read = float(settings.HTTP_AGENT_READ_TIMEOUT_SECONDS)
    if requested is not None:
        connect, read = min(connect, requested), min(read, requested)
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect).as_dict()


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


@contextmanager
def _http_errors(context: AsyncAgentContext, target: str, redactor: _Redactor, started: float) -> Iterator[None]:
    """Turn policy and transport failures into agent errors whose messages hold no header values."""
    try:
        yield
    except DestinationNotAllowed as exc:
        context.log.warning("http_destination_refused", target=target, reason=exc.detail)
        raise NonRetryableAgentError(str(exc)) from None
    except ResolutionFailed as exc:
        error = RetryableHttpError if exc.temporary else NonRetryableAgentError
        raise error(f"{target}: {exc}") from None
    except httpx.HTTPError as exc:
        context.log.warning(
            "http_request_failed", target=target, error=type(exc).__name__, elapsed_ms=_ms_since(started)
        )
        detail = redactor.redact(str(exc))[:EXCERPT_CHARS]
        message = f"{target}: {type(exc).__name__}" + (f" ({detail})" if detail else "")
        retryable = isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)
        raise (RetryableHttpError(message) if retryable else NonRetryableAgentError(message)) from None


async def _read_body(response: httpx.Response, limit: int, context: AsyncAgentContext, target: str) -> bytes:
    """Stream the (decoded) body, stopping as soon as it passes `limit` bytes."""
    too_large = NonRetryableAgentError(
        f"response larger than {limit} bytes (HTTP_AGENT_MAX_RESPONSE_BYTES) from {target}"
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async with aclosing(response.aiter_bytes()) as body:  # closed when we stop early, not when collected
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if context.cancelled:
                raise NonRetryableAgentError(f"cancelled while reading the response from {target}")
    return b"".join(chunks)


async def _excerpt(response: httpx.Response) -> str:
    """The start of an error response's body, on one line; what cannot be read is left out."""
    chunks, size = [], 0
    try:
        async with aclosing(response.aiter_bytes()) as body:
            async for chunk in body:
                chunks.append(chunk)
                size += len(chunk)
                if size >= ERROR_BODY_BYTES:
                    break
    except httpx.HTTPError:
        pass  # the status says enough
    text = _decode(response, b"".join(chunks)[:ERROR_BODY_BYTES])
    return " ".join(text.split())[:EXCERPT_CHARS]


def _status_error(
    status: int, target: str, excerpt: str, headers: httpx.Headers, expected: frozenset[int]
) -> RetryableHttpError | NonRetryableAgentError:
    suffix = f": {excerpt}" if excerpt else ""
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(headers.get("retry-after")) if status in RETRY_AFTER_STATUSES else None
        wait = f" (retry after {retry_after} s)" if retry_after is not None else ""
        return RetryableHttpError(f"HTTP {status} from {target}{wait}{suffix}", retry_after=retry_after)
    wanted = ", ".join(str(s) for s in sorted(expected)) if expected else "2xx"
    return NonRetryableAgentError(f"HTTP {status} from {target}, expected {wanted}{suffix}")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> int | None:
    """Retry-After as whole seconds from now (rounded up), or None if absent/invalid."""
    seconds = retry_after_in_seconds(value, now=now)
    return None if seconds is None else math.ceil(seconds)


def _decode(response: httpx.Response, content: bytes) -> str:
    try:
        text = content.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # an unknown charset
        text = content.decode("utf-8", errors="replace")
    return text.replace("\x00", "\ufffd")  # PostgreSQL cannot store NUL in JSON text


_NOT_JSON = object()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON the engine can store")


def _json_body(response: httpx.Response, content: bytes) -> object:
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content or not (media_type == "application/json" or media_type.endswith("+json")):
        return _NOT_JSON
    try:
        return json.loads(content, parse_constant=_reject_constant)
    except ValueError:  # invalid JSON (or NaN/Infinity) is returned as text
        return _NOT_JSON


def _output(response: httpx.Response, content: bytes, url: httpx.URL, elapsed_ms: int) -> dict:
    output: dict = {
        "status": response.status_code,
        "headers": dict(response.headers.items()),
        "url": str(url),
        "elapsed_ms": elapsed_ms,
    }
    parsed = _json_body(response, content)
    if parsed is _NOT_JSON:
        output["text"] = _decode(response, content)
    else:
        output["json"] = parsed
    return output
