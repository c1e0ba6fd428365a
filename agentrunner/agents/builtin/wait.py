"""`wait`: the Wait state of workflow engines. Waits on the event loop, stopping at once on cancel."""

import time

from agentrunner.agents.base import Agent, AsyncAgentContext
from agentrunner.agents.registry import register


@register
class WaitAgent(Agent):
    name = "wait"
    description = "Waits the given number of seconds (0 to 3600); cancelling the run stops it at once."
    input_schema = {
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 3600}},
        "required": ["seconds"],
        "additionalProperties": False,
    }

    async def run(self, context: AsyncAgentContext) -> dict:
        seconds = float(context.input["seconds"])
        started = time.monotonic()
        completed = await context.sleep(seconds)
        return {"waited_seconds": round(time.monotonic() - started, 3), "completed": completed}
