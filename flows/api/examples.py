"""What the flows API's OpenAPI document shows: an example definition and the documented error answers."""

from drf_spectacular.utils import OpenApiExample, OpenApiResponse

from agentrunner.api import ErrorSerializer, error_body, error_response

CLAIM_INTAKE_EXAMPLE = {
    "name": "Claim intake",
    "start_task": "extract",
    "tasks": [
        {"name": "extract", "agent": "document-extractor", "input": {"text": "{{ input.document }}"}},
        {
            "name": "check",
            "agent": "policy-checker",
            "input": {"fields": "{{ steps.extract.output.fields }}", "check_date": "{{ input.check_date }}"},
            "retry": {"max_attempts": 3, "backoff_seconds": 2},
        },
        {"name": "accepted", "agent": "pass", "input": {"result": {"route": "accepted"}}},
        {"name": "manual_review", "agent": "pass", "input": {"reasons": "{{ steps.check.output.reasons }}"}},
    ],
    "conditions": [
        {
            "name": "extracted",
            "source_task": "extract",
            "outcome": "success",
            "target_task_success": "check",
            "target_task_failure": "end",
        },
        {
            "name": "approved",
            "source_task": "check",
            "when": 'output.decision == "approved"',
            "target_task_success": "accepted",
            "target_task_failure": "manual_review",
        },
    ],
}

INVALID_DEFINITION = error_response(
    "The definition has errors; every problem is listed by JSON path.",
    "Invalid flow definition: 1 problem.",
    "invalid_definition",
    {"tasks[1].agent": ["Unknown agent 'checker'. Valid agents: document-extractor, pass, policy-checker, wait."]},
)
SLUG_TAKEN = "The team already has a flow with the slug 'claim-intake'."
INVALID_FLOW = OpenApiResponse(
    ErrorSerializer,
    description="The definition has errors (every problem is listed by JSON path), or the team already has a flow "
    "with this slug.",
    examples=[
        OpenApiExample("invalid_definition", value=INVALID_DEFINITION.examples[0].value),
        OpenApiExample("slug taken", value=error_body(SLUG_TAKEN, "invalid", {"slug": [SLUG_TAKEN]})),
    ],
)
FLOW_IN_USE = error_response(
    "The flow has runs, or a schedule uses it.",
    "The flow is in use by schedule 'Nightly intake': delete or change it first, or disable the flow instead.",
    "flow_in_use",
)
BAD_FLOW_INPUT = error_response("Input does not fit the first task.", "Invalid request.", "invalid_input")
HIDDEN = (
    "Any member of the team (viewer and up) may read it. Another team's flow is the 404 of a flow that does not exist."
)
BAD_PAGE = error_response(
    "A `limit` or `offset` that is not a whole number in range.",
    "Invalid request: limit: Must be a whole number from 1 to 1000.",
    "invalid",
    {"limit": ["Must be a whole number from 1 to 1000."]},
)
