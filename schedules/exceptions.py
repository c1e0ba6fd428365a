"""Errors of schedule services; the API maps each to one status code."""

from runs.exceptions import InvalidFields, RunError


class ScheduleInvalid(InvalidFields):
    """The schedule cannot be saved as given."""

    noun = "schedule"


class ScheduleNotFound(RunError):
    """No schedule with that id."""

    status_code = 404
    code = "not_found"
