"""`pass`: the Pass state of workflow engines. Returns its input merged with a fixed object."""

from agentrunner.agents.base import Agent, AgentContext
from agentrunner.agents.registry import register


@register
class PassAgent(Agent):
    name = "pass"
    description = (
        'Returns its input, with the fields of the optional object "result" added (they replace input fields '
        "of the same name)."
    )
    input_schema = {
        "type": "object",
        "properties": {"result": {"type": "object"}},
    }

    def run(self, context: AgentContext) -> dict:
        data = dict(context.input)
        fixed = data.pop("result", None) or {}
        return {**data, **fixed}
