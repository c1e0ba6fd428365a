"""Errors of schedule services; the API maps each to one status code."""

from agentrunner.errors import InvalidFields, ServiceError


class ScheduleInvalid(InvalidFields):
    """The schedule cannot be saved as given."""

    noun = "schedule"


class ScheduleNotFound(ServiceError):
    """No schedule with that id."""

    status_code = 404
    code = "not_found"
