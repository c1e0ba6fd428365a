"""What the runs API's OpenAPI document shows: example ids and the documented error answers."""

from agentrunner.api import error_response

EXAMPLE_RUN_ID = "6f1c2b7e-3f0a-4d1e-9d2a-0c5e8b7a1f42"
EXAMPLE_USER_ID = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"

BAD_RUN_REQUEST = error_response(
    "Unknown agent type, invalid user_id or input not matching the agent's input schema.",
    "Invalid agent input: seconds: 'seconds' is a required property",
    "invalid_input",
    {"input.seconds": ["'seconds' is a required property"]},
)
BUSY = error_response(
    "The agent is at its concurrency limit and its policy is `reject`.",
    "Agent 'document-extractor' is already running at its concurrency limit (1); "
    "try again when the current run has finished.",
    "agent_busy",
)
RUN_FINISHED_ERR = error_response(
    "The run has already finished.", "Run ... has already finished (COMPLETED); nothing to cancel.", "run_finished"
)
