"""`wait`: the Wait state of workflow engines. Sleeps, stopping promptly on cancel."""

import time

from agentrunner.agents.base import Agent, AgentContext
from agentrunner.agents.registry import register


@register
class WaitAgent(Agent):
    name = "wait"
    description = "Sleep for `seconds` (0-3600), stopping within the cancel-poll interval on cancel."
    input_schema = {
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 3600}},
        "required": ["seconds"],
        "additionalProperties": False,
    }

    def run(self, context: AgentContext) -> dict:
        seconds = float(context.input["seconds"])
        started = time.monotonic()
        completed = context.sleep(seconds)
        return {"waited_seconds": round(time.monotonic() - started, 3), "completed": completed}
