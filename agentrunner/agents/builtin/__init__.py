"""Built-in agents; importing this package registers them."""

from agentrunner.agents.builtin import (  # noqa: F401
    document_extractor,
    http_request,
    llm,
    passthrough,
    policy_checker,
    wait,
)
