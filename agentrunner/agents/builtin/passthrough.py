"""`pass`: the Pass state of workflow engines. Returns its input merged with a fixed object."""

from agentrunner.agents.base import Agent, AgentContext
from agentrunner.agents.registry import register


@register
class PassAgent(Agent):
    name = "pass"
    description = "Return the input, merged with the optional object `result` (its keys win)."
    input_schema = {
        "type": "object",
        "properties": {"result": {"type": "object"}},
    }

    def run(self, context: AgentContext) -> dict:
        data = dict(context.input)
        fixed = data.pop("result", None) or {}
        return {**data, **fixed}
