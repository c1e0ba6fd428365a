"""The agent SDK: subclass `Agent`, decorate with `@register`, one module per agent."""

from agentrunner.agents.base import (
    Agent,
    AgentContext,
    AgentError,
    AsyncAgentContext,
    BudgetExceededError,
    ConcurrencyPolicy,
    InvalidAgentInput,
    NonRetryableAgentError,
    OnBusy,
    RateLimitedError,
    RetryableAgentError,
)
from agentrunner.agents.registry import UnknownAgentType, all_agents, get_agent, register

__all__ = [
    "Agent",
    "AgentContext",
    "AgentError",
    "AsyncAgentContext",
    "BudgetExceededError",
    "ConcurrencyPolicy",
    "InvalidAgentInput",
    "NonRetryableAgentError",
    "OnBusy",
    "RateLimitedError",
    "RetryableAgentError",
    "UnknownAgentType",
    "all_agents",
    "get_agent",
    "register",
]
