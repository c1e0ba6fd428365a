"""What the schedules API's OpenAPI document shows: example schedules and slots, the documented errors."""

from agentrunner.api import error_response, role_response
from agentrunner.models import Role
from runs.api.examples import EXAMPLE_RUN_ID

EXAMPLE_SCHEDULE_ID = 7
CLAIM_INTAKE_EVERY_10_MIN = {
    "name": "Claim intake every 10 minutes",
    "flow": "claim-intake",
    "input": {"document": "Policy Number: PL-1\nNamed Insured: Acme GmbH", "check_date": "2026-11-21"},
    "every_seconds": 600,
    "timezone": "Europe/Paris",
    "overlap": "skip",
    "catch_up": "skip_missed",
}
WEEKDAY_MORNINGS = {
    "name": "Exchange rates, weekday mornings",
    "agent": "http-request",
    "input": {"url": "https://api.example.com/rates", "method": "GET"},
    "cron": "0 7 * * 1-5",
    "timezone": "Europe/Paris",
}
CLAIM_INTAKE_OUTPUT = {
    "id": EXAMPLE_SCHEDULE_ID,
    "name": "Claim intake every 10 minutes",
    "flow": "claim-intake",
    "agent": None,
    "input": CLAIM_INTAKE_EVERY_10_MIN["input"],
    "cron": None,
    "every_seconds": 600,
    "timezone": "Europe/Paris",
    "enabled": True,
    "overlap": "skip",
    "catch_up": "skip_missed",
    "next_fire_times": [f"2026-11-21T12:{m}:00Z" for m in ("10", "20", "30", "40", "50")],
    "last_run": {
        "id": EXAMPLE_RUN_ID,
        "status": "COMPLETED",
        "scheduled_for": "2026-11-21T12:00:00Z",
        "finished_at": "2026-11-21T12:00:04.318000Z",
    },
    "created_at": "2026-11-20T09:12:44.102000Z",
    "updated_at": "2026-11-21T08:30:02.551000Z",
}
# One slot each: the OpenAPI document shows each inside a page ({count, next, previous, results}).
SKIPPED_SLOT = {
    "intended_at": "2026-11-21T12:10:00Z",
    "status": "skipped_overlap",
    "detail": f"Run {EXAMPLE_RUN_ID} was still running.",
    "run_id": None,
    "fired_at": "2026-11-21T12:10:00.412000Z",
}
STARTED_SLOT = {
    "intended_at": "2026-11-21T12:00:00Z",
    "status": "started",
    "detail": "",
    "run_id": EXAMPLE_RUN_ID,
    "fired_at": "2026-11-21T12:00:00.388000Z",
}

INVALID_SCHEDULE = error_response(
    "A field is missing or wrong (unknown flow or agent, where another team's flow is unknown; name taken in the "
    "team; bad cron expression, time zone or interval; input not matching the agent); every problem is listed by "
    "field.",
    "Invalid request: cron: '0 25 * * *' is not a valid cron expression.",
    "invalid",
    {"cron": ["'0 25 * * *' is not a valid cron expression."], "timezone": ["Unknown time zone 'Paris'; ..."]},
)
HIDDEN = (
    "Any member of the team (viewer and up) may read it. Another team's schedule is the 404 of a schedule that does "
    "not exist."
)
CANNOT_CHANGE = role_response(Role.EDITOR)
