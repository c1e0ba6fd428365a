"""Errors of the LLM gateway. All are AgentErrors, so an agent may let them propagate to the engine.

`LLMGatewayError` is what a caller catches to fall back to something else when no model answered;
a refused budget is `agentrunner.agents.BudgetExceededError` instead, which ends the run and must not be
caught as a gateway failure, and the team's request limit is `LLMRateLimited`, which the step waits for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentrunner.agents.base import AgentError, NonRetryableAgentError, RateLimitedError, RetryableAgentError

if TYPE_CHECKING:
    from agentrunner.llm.gateway import Completion


class LLMGatewayError(AgentError):
    """The LLM gateway could not produce a usable answer."""

    code = "llm_error"


class LLMUnavailable(LLMGatewayError, RetryableAgentError):
    """No LLM provider answered (errors, timeouts or open circuit breakers); trying again later may work."""

    code = "llm_unavailable"

    def __init__(self, message: str | None = None, *, errors: dict[str, str] | None = None):
        self.errors = errors or {}
        super().__init__(message)


class LLMRequestRejected(LLMGatewayError, NonRetryableAgentError):
    """Every LLM provider rejected the request itself (e.g. HTTP 400/401/404): trying again will not help."""

    code = "llm_request_rejected"

    def __init__(self, message: str | None = None, *, errors: dict[str, str] | None = None):
        self.errors = errors or {}
        super().__init__(message)


class LLMNotConfigured(LLMGatewayError, NonRetryableAgentError):
    """No LLM provider is configured (set OPENAI_API_KEY, ANTHROPIC_API_KEY or LOCAL_LLM_BASE_URL)."""

    code = "llm_not_configured"


class LLMInvalidRequest(LLMGatewayError, NonRetryableAgentError):
    """The LLM request is invalid (messages, limits or JSON schema)."""

    code = "llm_invalid_request"


class LLMOutputInvalid(LLMGatewayError, RetryableAgentError):
    """The model's answer is not JSON matching the requested schema; another attempt may do better."""

    code = "llm_output_invalid"

    def __init__(self, message: str | None = None, *, completion: Completion | None = None):
        self.completion = completion
        super().__init__(message)


class LLMRateLimited(RateLimitedError):
    """The team's LLM requests per minute are used up: the step waits `retry_after` seconds and tries again.

    Not an LLMGatewayError: a caller that falls back when no model answers must not fall back here (a model
    will answer once the team's turn comes); the engine puts the step back without using up an attempt.
    """

    code = "llm_rate_limited"

    def __init__(self, message: str | None = None, *, retry_after: float, key: str = "", limit: int = 0):
        self.key = key
        self.limit = limit
        super().__init__(message, retry_after=retry_after)
