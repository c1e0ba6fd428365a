"""The LLM gateway: `acomplete()` (async) and `complete()` (sync) route a request to OpenAI, Anthropic or a
local OpenAI-compatible server.

Budgets, the team's request limit, retries, circuit breakers and failover are described in
`agentrunner.llm.gateway`; every provider call is an `agentrunner.models.LLMCall` row. Importing this
package does not import the provider SDKs (slow): they are loaded by the first call.
"""

from agentrunner.llm import checks  # noqa: F401  (registers the settings checks)
from agentrunner.llm.breaker import breaker_reset
from agentrunner.llm.exceptions import (
    LLMGatewayError,
    LLMInvalidRequest,
    LLMNotConfigured,
    LLMOutputInvalid,
    LLMRateLimited,
    LLMRequestRejected,
    LLMUnavailable,
)
from agentrunner.llm.gateway import Completion, acomplete, complete, cost_usd
from agentrunner.llm.providers import configured_providers
from agentrunner.llm.selectors import breaker_states, owner_usage, team_usage


def any_provider_configured() -> bool:
    """True if at least one provider has credentials (read now, from the settings)."""
    return bool(configured_providers())


__all__ = [
    "Completion",
    "LLMGatewayError",
    "LLMInvalidRequest",
    "LLMNotConfigured",
    "LLMOutputInvalid",
    "LLMRateLimited",
    "LLMRequestRejected",
    "LLMUnavailable",
    "acomplete",
    "any_provider_configured",
    "breaker_reset",
    "breaker_states",
    "complete",
    "configured_providers",
    "cost_usd",
    "owner_usage",
    "team_usage",
]
