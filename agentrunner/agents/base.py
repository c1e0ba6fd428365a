"""Base class, context and error classes every agent uses."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import jsonschema
import structlog


class OnBusy(StrEnum):
    REJECT = "reject"  # refuse at once (the API answers 409)
    QUEUE = "queue"  # wait, FIFO, holding no worker process


@dataclass(frozen=True)
class ConcurrencyPolicy:
    """How many runs of an agent may execute at once, and what extra runs do."""

    limit: int | None = None  # None = unlimited
    on_busy: OnBusy = OnBusy.QUEUE

    def as_dict(self) -> dict:
        return {"limit": self.limit, "on_busy": str(self.on_busy)}


class AgentError(Exception):
    """An agent failed. Its docstring is the default message."""

    retryable: ClassVar[bool] = False
    code: ClassVar[str] = "agent_error"

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())


class RetryableAgentError(AgentError):
    """A temporary failure; the step may succeed if tried again."""

    retryable = True
    code = "retryable_error"


class NonRetryableAgentError(AgentError):
    """A permanent failure; trying again will not help."""

    code = "non_retryable_error"


class BudgetExceededError(AgentError):
    """A token budget (the run's, or its owner's or team's monthly) refuses this call; the run ends BUDGET_EXCEEDED."""

    code = "budget_exceeded"


class RateLimitedError(RetryableAgentError):
    """A rate limit of this platform refuses the call for now: the step waits and tries again.

    The engine puts the step back to wait `retry_after` seconds without using up one of its attempts: a busy
    team's steps wait for their turn, they do not fail. Raise it only for a limit that clears by itself.
    """

    code = "rate_limited"

    def __init__(self, message: str | None = None, *, retry_after: float):
        self.retry_after = retry_after
        super().__init__(message)


class InvalidAgentInput(AgentError):
    """The input does not match the agent's input schema."""

    code = "invalid_input"

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("Invalid agent input: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))


# A step's retries unless its agent (or its flow task) says otherwise, as the platform specifies: a retryable
# error (RetryableAgentError, a timeout, a lost worker) is tried again after 2, 4, 8 and 16 s, 5 attempts in all.
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_SECONDS = 2  # the first retry's delay; doubles each attempt
DEFAULT_MAX_BACKOFF_SECONDS = 300  # no retry waits longer

# How often a sync caller's async wait (AgentContext.sleep_async) looks at the cancel event.
SYNC_CANCEL_CHECK_SECONDS = 0.05


@dataclass
class AgentContext:
    """What a sync agent's `run` receives: its input, the run's identity, and cancellation."""

    run_id: uuid.UUID
    step_name: str
    attempt: int
    input: dict[str, Any]
    user_id: uuid.UUID | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    log: Any = None
    step_id: int | None = None
    # The account that started the run (Run.created_by): whose monthly LLM budget is used.
    owner_id: int | None = None
    # The run's team (Run.team): its monthly LLM budget and its LLM request limit apply.
    team_id: int | None = None
    # The run's token budget (None = no per-run limit).
    token_budget: int | None = None

    def __post_init__(self):
        if self.log is None:
            self.log = structlog.get_logger("agentrunner.agent")

    @property
    def cancelled(self) -> bool:
        """True once the step was cancelled, timed out or lost its lease: stop and return (or raise)."""
        return self.cancel_event.is_set()

    def request_cancel(self) -> None:
        """Called by the engine (on cancel, timeout or a lost lease): tell the agent to stop."""
        self.cancel_event.set()

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking at once on cancel. Return True if the full time passed."""
        return not self.cancel_event.wait(seconds)

    async def sleep_async(self, seconds: float) -> bool:
        """Await `seconds`, waking on cancel; for library code that serves sync and async agents alike."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.cancelled:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            await asyncio.sleep(min(remaining, SYNC_CANCEL_CHECK_SECONDS))
        return False


@dataclass
class AsyncAgentContext(AgentContext):
    """What an async agent's `async def run` receives.

    On cancel, timeout or a lost lease the engine sets `cancelled` and cancels the agent's task, so the
    await in progress raises `asyncio.CancelledError` (clean up in `finally`, do not swallow it).
    Everything else is as in AgentContext; `sleep` is a coroutine here.
    """

    def __post_init__(self):
        super().__post_init__()
        self._cancelled_async = asyncio.Event()

    def request_cancel(self) -> None:
        """Called by the engine on the context's event loop."""
        self.cancel_event.set()
        self._cancelled_async.set()

    async def sleep(self, seconds: float) -> bool:  # type: ignore[override]
        """Await `seconds`, waking at once on cancel. Return True if the full time passed."""
        try:
            async with asyncio.timeout(max(seconds, 0)):
                await self._cancelled_async.wait()
        except TimeoutError:
            return not self.cancelled
        return False

    async def sleep_async(self, seconds: float) -> bool:
        return await self.sleep(seconds)


class Agent:
    """Subclass, set the class attributes, implement `run` (or `async def run`), decorate with `@register`.

    An agent that waits (HTTP, LLM, sleeps) should define `async def run(self, context)`: each worker
    process then carries many such steps at once on one event loop. Its context is an AsyncAgentContext;
    reach the database only through `asgiref.sync.sync_to_async` (or Django's async ORM methods).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    input_schema: ClassVar[dict] = {"type": "object"}
    concurrency: ClassVar[ConcurrencyPolicy] = ConcurrencyPolicy()
    # Attempts in total for a step of this agent (retryable errors, timeouts, lost workers); 1 = never retried.
    max_attempts: ClassVar[int] = DEFAULT_MAX_ATTEMPTS
    # Seconds before the first retry, doubling each attempt, at most max_backoff_seconds.
    backoff_seconds: ClassVar[float] = DEFAULT_BACKOFF_SECONDS
    max_backoff_seconds: ClassVar[float] = DEFAULT_MAX_BACKOFF_SECONDS

    def validate_input(self, data: Any) -> dict:
        """Return the input if it matches `input_schema`, else raise InvalidAgentInput with every error."""
        if data is None:
            data = {}
        validator = jsonschema.Draft202012Validator(self.input_schema)
        errors: dict[str, list[str]] = {}
        for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "input"
            errors.setdefault(path, []).append(error.message)
        if errors:
            raise InvalidAgentInput(errors)
        return data

    def run(self, context: AgentContext) -> Any:
        """Do the work and return a JSON-serialisable output."""
        raise NotImplementedError

    @classmethod
    def is_async(cls) -> bool:
        """True for agents whose `run` is a coroutine function."""
        return inspect.iscoroutinefunction(cls.run)
