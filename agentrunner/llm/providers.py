"""The providers behind the gateway: which are configured, how to call each, and how to read their errors.

OpenAI and any OpenAI-compatible "local" server (vLLM, Ollama, llama.cpp) use the `openai` SDK's chat
completions, Anthropic uses the `anthropic` SDK's messages, both through their async clients. The SDKs'
own retries are off (`max_retries=0`): the gateway retries, so that every try is counted, recorded and
seen by the breaker. The SDKs are imported on first use, not with this module: importing them takes
seconds, which every process start (web, worker, manage.py) would pay.

Clients are kept per event loop (see `_client`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings

from agentrunner.llm.redact import redact
from agentrunner.retry_after import parse_retry_after

if TYPE_CHECKING:
    import ssl

OPENAI = "openai"
ANTHROPIC = "anthropic"
LOCAL = "local"
KNOWN_PROVIDERS = (OPENAI, ANTHROPIC, LOCAL)
# Passed explicitly when the setting is empty: given no base URL the SDKs read OPENAI_BASE_URL /
# ANTHROPIC_BASE_URL from the environment, and `.env.example` sets them empty, which they would use as is.
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
CHARS_PER_TOKEN = 4  # rough size of a token, for estimates
# HTTP statuses worth trying again on the same provider (the SDKs' own list): timeout, conflict,
# rate limit, and every 5xx (including Anthropic's 529 "overloaded").
RETRYABLE_STATUSES = frozenset({408, 409, 429})
# Statuses that say the provider cannot serve us at all (bad key, no access): they count against its
# breaker. Other 4xx are about this request (too long, bad parameter) and say nothing of its health.
UNUSABLE_STATUSES = frozenset({401, 402, 403})
MAX_ERROR_CHARS = 500  # of a provider's error, as we keep it


@dataclass(frozen=True)
class Provider:
    name: str
    model: str  # default model
    api_key: str
    base_url: str


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    system: str | None
    max_tokens: int
    temperature: float | None  # None: the provider's default
    want_json: bool


@dataclass(frozen=True)
class Answer:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool  # the server reported no usage: counted from characters instead


class ProviderFailure(Exception):
    """A provider call failed; `retryable` says whether the same provider may be tried again."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        counts_for_breaker: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.counts_for_breaker = counts_for_breaker
        self.retry_after = retry_after
        self.status = status


def configured_providers() -> list[Provider]:
    """Return the providers of LLM_PROVIDERS, in failover order, that have credentials (read at call time)."""
    found = []
    for name in settings.LLM_PROVIDERS:
        if name == OPENAI and settings.OPENAI_API_KEY:
            base_url = settings.OPENAI_BASE_URL or OPENAI_DEFAULT_BASE_URL
            found.append(Provider(OPENAI, settings.OPENAI_MODEL, settings.OPENAI_API_KEY, base_url))
        elif name == ANTHROPIC and settings.ANTHROPIC_API_KEY:
            found.append(
                Provider(
                    ANTHROPIC,
                    settings.ANTHROPIC_MODEL,
                    settings.ANTHROPIC_API_KEY,
                    settings.ANTHROPIC_BASE_URL or ANTHROPIC_DEFAULT_BASE_URL,
                )
            )
        elif name == LOCAL and settings.LOCAL_LLM_BASE_URL:
            found.append(
                Provider(
                    LOCAL, settings.LOCAL_LLM_MODEL, settings.LOCAL_LLM_API_KEY or "local", settings.LOCAL_LLM_BASE_URL
                )
            )
    return found


def model_for(provider: Provider, requested: str | None) -> str:
    """Pick the model a provider is asked for.

    "openai:gpt-4o", "anthropic:claude-3-5-sonnet-latest", "local:llama3.1:8b" name the model of one
    provider; a plain "claude-..." name is Anthropic's; any other plain name is for the OpenAI-compatible
    providers (openai, local). Every other provider in the failover chain uses its configured default.
    """
    if not requested:
        return provider.model
    prefix, sep, rest = requested.partition(":")
    if sep and prefix in KNOWN_PROVIDERS:
        return rest if prefix == provider.name and rest else provider.model
    is_claude = requested.startswith("claude")
    if (provider.name == ANTHROPIC) == is_claude:
        return requested
    return provider.model


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


async def call(provider: Provider, model: str, request: Request) -> Answer:
    """Send one request to one provider; raise ProviderFailure on any failure the gateway handles.

    This is where a provider's error becomes ours, so it is redacted here: a provider or a proxy may echo
    our request, API key included, and the text goes to the run's error, the LLMCall rows and the logs.
    The SDK's exception is not chained to ours (`from None`): its text is the unredacted one, and a
    traceback would print it.
    """
    try:
        if provider.name == ANTHROPIC:
            return await _call_anthropic(provider, model, request)
        return await _call_openai_compatible(provider, model, request)
    except ProviderFailure as failure:
        raise _redacted(failure, provider) from None
    except Exception as exc:
        failure = _sdk_failure(exc, from_anthropic=provider.name == ANTHROPIC)
        if failure is None:
            raise
        raise _redacted(failure, provider) from None


def _redacted(failure: ProviderFailure, provider: Provider) -> ProviderFailure:
    # Redacted before it is cut short: a key cut in two would no longer be recognised.
    message = redact(str(failure), secrets=(provider.api_key,))[:MAX_ERROR_CHARS]
    return ProviderFailure(
        message,
        retryable=failure.retryable,
        counts_for_breaker=failure.counts_for_breaker,
        retry_after=failure.retry_after,
        status=failure.status,
    )


def _sdk_failure(exc: Exception, *, from_anthropic: bool) -> ProviderFailure | None:
    """Map an SDK's exception to the ProviderFailure the gateway acts on; None for any other exception."""
    # Imported here, not with the module (see its docstring); the client that raised has loaded it already.
    if from_anthropic:
        import anthropic as sdk

        base = sdk.AnthropicError
    else:
        import openai as sdk

        base = sdk.OpenAIError
    if isinstance(exc, sdk.APIStatusError):
        return _status_failure(exc)
    if isinstance(exc, sdk.APITimeoutError):  # before APIConnectionError, its parent class
        return ProviderFailure(
            f"timed out after {settings.LLM_TIMEOUT_SECONDS:g} s", retryable=True, counts_for_breaker=True
        )
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderFailure(f"connection failed ({_cause(exc)})", retryable=True, counts_for_breaker=True)
    if isinstance(exc, sdk.APIResponseValidationError | ValueError):
        # ValueError: the SDKs let json.JSONDecodeError through for a body that is not JSON.
        return ProviderFailure(
            f"malformed response ({type(exc).__name__}: {exc})", retryable=True, counts_for_breaker=True
        )
    if isinstance(exc, base):
        return ProviderFailure(f"{type(exc).__name__}: {exc}", retryable=False, counts_for_breaker=False)
    return None


async def _call_openai_compatible(provider: Provider, model: str, request: Request) -> Answer:
    client = await _client(provider)
    messages = list(request.messages)
    if request.system:
        messages.insert(0, {"role": "system", "content": request.system})
    options = {} if request.temperature is None else {"temperature": request.temperature}
    # OpenAI's newer models accept only max_completion_tokens; OpenAI-compatible servers know max_tokens.
    options["max_completion_tokens" if provider.name == OPENAI else "max_tokens"] = request.max_tokens
    if request.want_json:
        options["response_format"] = {"type": "json_object"}
    response = await client.chat.completions.create(model=model, messages=messages, **options)
    try:
        text = response.choices[0].message.content or ""
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else None
        completion_tokens = usage.completion_tokens if usage else None
        served = response.model or model
    except (AttributeError, IndexError, TypeError) as exc:
        raise _malformed(response) from exc
    return _answer(text, served, prompt_tokens, completion_tokens, request)


async def _call_anthropic(provider: Provider, model: str, request: Request) -> Answer:
    client = await _client(provider)
    # Anthropic takes the system prompt apart from the messages, which may only be user/assistant.
    system_parts = [request.system] if request.system else []
    messages = []
    for message in request.messages:
        if message["role"] == "system":
            system_parts.append(message["content"])
        else:
            messages.append(message)
    options = {"system": "\n\n".join(system_parts)} if system_parts else {}
    # No temperature: the Messages API of the pinned SDK (anthropic 2.x) has no sampling parameters.
    response = await client.messages.create(model=model, messages=messages, max_tokens=request.max_tokens, **options)
    try:
        text = "".join(block.text for block in response.content if getattr(block, "type", None) == "text")
        usage = response.usage
        prompt_tokens = (usage.input_tokens or 0) + (getattr(usage, "cache_creation_input_tokens", None) or 0)
        prompt_tokens += getattr(usage, "cache_read_input_tokens", None) or 0
        completion_tokens = usage.output_tokens
        served = response.model or model
    except (AttributeError, TypeError) as exc:
        raise _malformed(response) from exc
    return _answer(text, served, prompt_tokens, completion_tokens, request)


def _answer(text, served, prompt_tokens, completion_tokens, request: Request) -> Answer:
    if not isinstance(text, str):
        raise _malformed(text)
    estimated = not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int)
    if estimated:  # some OpenAI-compatible servers report no usage: count something rather than nothing
        chars = sum(len(m["content"]) for m in request.messages) + len(request.system or "")
        prompt_tokens, completion_tokens = math.ceil(chars / CHARS_PER_TOKEN), estimate_tokens(text)
    return Answer(text, str(served), max(prompt_tokens, 0), max(completion_tokens, 0), estimated)


def _malformed(response) -> ProviderFailure:
    shown = response if isinstance(response, str) else type(response).__name__
    return ProviderFailure(f"malformed response ({str(shown)[:200]})", retryable=True, counts_for_breaker=True)


def _status_failure(exc) -> ProviderFailure:
    status = exc.status_code
    retryable = status in RETRYABLE_STATUSES or status >= 500
    return ProviderFailure(
        f"HTTP {status}: {_error_message(exc)}",
        retryable=retryable,
        counts_for_breaker=retryable or status in UNUSABLE_STATUSES,
        retry_after=retry_after_seconds(exc.response.headers) if status == 429 or status >= 500 else None,
        status=status,
    )


def _error_message(exc) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", exc))


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{type(cause).__name__}: {cause}" if cause else str(exc)


def retry_after_seconds(headers, *, now: float | None = None) -> float | None:
    """Read Retry-After (seconds or an HTTP date) or retry-after-ms; None if absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"), now=None if now is None else datetime.fromtimestamp(now, UTC))


# Async clients per event loop. A client holds a pool of keep-alive connections, and a connection
# belongs to the loop it was opened on: another loop cannot use it. So each loop has its own clients,
# one per (provider kind, key, URL, timeout). The engine's loop lives as long as its worker process and
# keeps its clients, and with them their connections, from one request to the next. `complete()` (sync
# callers) runs each request on a loop of its own (asgiref's async_to_sync): that loop's clients are
# closed when it shuts down (`_close_at_shutdown`), and forgotten if it was closed without a shutdown.
_loops: dict[asyncio.AbstractEventLoop, _LoopClients] = {}
_loops_lock = threading.Lock()  # loops run in different threads; each loop's own dict is used by its thread only


@dataclass
class _LoopClients:
    clients: dict[tuple, Any] = field(default_factory=dict)
    closer: AsyncGenerator | None = None


async def _client(provider: Provider):
    """Return this event loop's client for the provider's kind, key, URL and timeout, made on first use."""
    loop = asyncio.get_running_loop()
    with _loops_lock:
        mine = _loops.get(loop)
        if mine is None:
            for closed in [other for other in _loops if other.is_closed()]:
                del _loops[closed]
            mine = _loops[loop] = _LoopClients()
    if mine.closer is None:
        mine.closer = _close_at_shutdown(loop, mine)
        await mine.closer.asend(None)
    kind = ANTHROPIC if provider.name == ANTHROPIC else OPENAI
    key = (kind, provider.api_key, provider.base_url, float(settings.LLM_TIMEOUT_SECONDS))
    client = mine.clients.get(key)
    if client is None:
        client = mine.clients[key] = new_client(kind, *key[1:])
    return client


async def _close_at_shutdown(loop: asyncio.AbstractEventLoop, mine: _LoopClients):
    """Wait, parked at the `yield`, for the loop to shut down, then close its clients.

    An event loop closes the async generators still open when it shuts down (`loop.shutdown_asyncgens()`,
    which `asyncio.run` calls before closing the loop): that is this generator's cue.
    """
    try:
        yield
    finally:
        with _loops_lock:
            if _loops.get(loop) is mine:
                del _loops[loop]
        # Closing errors are ignored: the loop and its connections are going away anyway.
        await asyncio.gather(*(client.close() for client in mine.clients.values()), return_exceptions=True)


def new_client(kind: str, api_key: str, base_url: str, timeout: float):
    """Build an async SDK client (OPENAI: also for OpenAI-compatible servers; ANTHROPIC)."""
    if kind == ANTHROPIC:
        import anthropic

        http = anthropic.DefaultAsyncHttpxClient(verify=_tls_context(), timeout=timeout)
        return anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0, http_client=http
        )
    import openai

    http = openai.DefaultAsyncHttpxClient(verify=_tls_context(), timeout=timeout)
    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0, http_client=http)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client: making one loads the CA bundle (~40 ms), too slow for a client per loop."""
    import httpx2  # the SDKs' HTTP library: the context it makes for them by default (CA bundle, SSL_CERT_FILE)

    return httpx2.create_ssl_context()


def parse_json_output(text: str):
    """Parse a model's JSON answer, tolerating a Markdown code fence around it; raise ValueError if not JSON."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return json.loads(stripped)
