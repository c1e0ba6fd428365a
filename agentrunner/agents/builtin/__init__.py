"""Built-in agents; importing this package registers them."""

from agentrunner.agents.builtin import document_extractor, passthrough, policy_checker, wait  # noqa: F401
