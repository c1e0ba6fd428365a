"""Base class, context and error classes every agent uses."""

from __future__ import annotations

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
    """A token budget (the run's or its owner's monthly) does not allow this call; the run ends BUDGET_EXCEEDED."""

    code = "budget_exceeded"


class InvalidAgentInput(AgentError):
    """The input does not match the agent's input schema."""

    code = "invalid_input"

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("Invalid agent input: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))


@dataclass
class AgentContext:
    """What an agent's `run` receives: its input and the run's identity."""

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
    # The run's token budget (None = no per-run limit).
    token_budget: int | None = None

    def __post_init__(self):
        if self.log is None:
            self.log = structlog.get_logger("agentrunner.agent")

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking at once on cancel. Return True if the full time passed."""
        return not self.cancel_event.wait(seconds)


class Agent:
    """Subclass, set the class attributes, implement `run`, decorate with `@register`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    input_schema: ClassVar[dict] = {"type": "object"}
    concurrency: ClassVar[ConcurrencyPolicy] = ConcurrencyPolicy()
    # Attempts in total for a step of this agent (retryable errors, lost workers).
    max_attempts: ClassVar[int] = 1

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
