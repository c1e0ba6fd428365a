"""Errors of schedule services; the API maps each to one status code."""

from agentrunner.errors import APIFieldNames, InvalidFields, ServiceError


class ScheduleInvalid(APIFieldNames, InvalidFields):
    """The schedule cannot be saved as given."""

    noun = "schedule"
    # The services' field names, as the API calls them (`target` is the flow or agent to start, `kind` the timing).
    api_fields = {"agent_type": "agent", "interval_seconds": "every_seconds", "target": "flow", "kind": "cron"}


class ScheduleNotFound(ServiceError):
    """No schedule with that id."""

    status_code = 404
    code = "not_found"
