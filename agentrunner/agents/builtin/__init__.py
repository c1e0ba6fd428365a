"""Built-in agents; importing this package registers them."""

import agentrunner.agents.builtin.http_request  # noqa: F401
from agentrunner.agents.builtin import document_extractor, llm, passthrough, policy_checker, wait  # noqa: F401
