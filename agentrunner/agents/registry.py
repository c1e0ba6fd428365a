"""The registry of agent types, filled by the `@register` decorator."""

from agentrunner.agents.base import Agent
from agentrunner.errors import ServiceError

_AGENTS: dict[str, type[Agent]] = {}


class UnknownAgentType(ServiceError, LookupError):
    """No agent type of that name is registered."""

    status_code = 400
    code = "unknown_agent_type"

    def __init__(self, name: str):
        self.name = name
        message = f"Unknown agent_type {name!r}. Valid types: {', '.join(sorted(_AGENTS))}."
        super().__init__(message, errors={"agent_type": [message]})


def register(cls: type[Agent]) -> type[Agent]:
    """Class decorator: make an agent type available by its `name`."""
    existing = _AGENTS.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"Agent type {cls.name!r} is registered twice ({existing.__module__}, {cls.__module__}).")
    _AGENTS[cls.name] = cls
    return cls


def get_agent(name: str) -> Agent:
    try:
        return _AGENTS[name]()
    except KeyError:
        raise UnknownAgentType(name) from None


def all_agents() -> dict[str, type[Agent]]:
    return dict(sorted(_AGENTS.items()))
