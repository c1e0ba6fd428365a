"""What the digests API's OpenAPI document shows: an example digest and delivery, the documented errors."""

from agentrunner.api import error_response, role_response
from agentrunner.models import Role

EXAMPLE_DELIVERY = {
    "id": 41,
    "digest": 7,
    "period_key": "manual:2026-11-21T10:12:03.512000+00:00",
    "period_start": "2026-11-21T07:00:00Z",
    "period_end": "2026-11-21T10:12:03.512000Z",
    "manual": True,
    "run": None,
    "run_ids": ["6f1c2b7e-3f0a-4d1e-9d2a-0c5e8b7a1f42"],
    "status": "pending",
    "needs_decision": False,
    "message_id": "<digest-7-3a1f0c9e2b7d4e6f8a1b2c3d@example.com>",
    "recipients": ["claims-team@example.com"],
    "subject": "Claim intake — top claims: top 1 of 2026-11-21 08:00–11:12 Europe/Paris",
    "attempts": 0,
    "next_attempt_at": "2026-11-21T10:14:03Z",
    "error": "",
    "history": [],
    "sending_started_at": None,
    "sent_at": None,
    "created_at": "2026-11-21T10:12:03Z",
}
EXAMPLE_REQUEST = {
    "name": "Claim intake — top claims",
    "recipients": ["claims-team@example.com", "lead@example.com"],
    "flow": "claim-intake",
    "period": "daily",
    "send_at": "08:00",
    "timezone": "Europe/Paris",
    "rank_by": "score",
    "rank_order": "desc",
    "limit": 5,
}
EXAMPLE_DIGEST = {
    "id": 7,
    **EXAMPLE_REQUEST,
    "enabled": True,
    "agent": None,
    "schedule": None,
    "source_label": "flow claim-intake",
    "period_description": "daily at 08:00 Europe/Paris",
    "weekday": "monday",
    "items_path": "",
    "include_failures": True,
    "skip_empty": False,
    "next_send_at": "2026-11-22T07:00:00Z",
    "last_delivery": {
        "id": 40,
        "status": "sent",
        "period_start": "2026-11-20T07:00:00Z",
        "period_end": "2026-11-21T07:00:00Z",
        "runs": 12,
        "sent_at": "2026-11-21T07:00:04Z",
        "created_at": "2026-11-21T07:00:01Z",
    },
    "created_by": "staff",
    "created_at": "2026-11-01T09:30:00Z",
    "updated_at": "2026-11-01T09:30:00Z",
}
EXAMPLE_PREVIEW = {
    "period_start": "2026-11-21T07:00:00Z",
    "period_end": "2026-11-21T10:12:03Z",
    "runs": 2,
    "empty": False,
    "subject": "Claim intake — top claims: top 2 of 2026-11-21 08:00–11:12 Europe/Paris",
    "text": "Claim intake — top claims\n…\n1. score = 0.93 · flow claim-intake · …",
    "html": "<!DOCTYPE html>…",
}

HIDDEN = (
    "Any member of the team (viewer and up) may read it. Another team's digest is the 404 of a digest that does not "
    "exist."
)
CANNOT_CHANGE = role_response(Role.EDITOR)
CANNOT_DECIDE = role_response(Role.EDITOR)
INVALID = error_response(
    "Bad input; every problem is listed by field.",
    "Invalid request: recipients.1: Enter a valid email address.",
    "invalid",
    {"recipients.1": ["Enter a valid email address."], "flow": ["Object with slug=claims does not exist."]},
)
WRONG_STATE = error_response(
    "The delivery is not in a state that allows this.",
    "Only a delivery that is sending or failed can be marked sent (it is Sent).",
    "delivery_state",
)
SEND_RACE = error_response(
    "Another Send now of the same moment got there first.",
    "Another send of this digest got there first.",
    "delivery_state",
)
