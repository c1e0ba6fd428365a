"""The agent SDK: subclass `Agent`, decorate with `@register`, one module per agent; or `@task` a plain function."""

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
from agentrunner.agents.functions import TaskFailed, TaskResult, task
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
    "TaskFailed",
    "TaskResult",
    "UnknownAgentType",
    "all_agents",
    "get_agent",
    "register",
    "task",
]
