"""Errors of schedule services; the API maps each to one status code."""

from runs.exceptions import RunError


class ScheduleInvalid(RunError):
    """The schedule cannot be saved as given."""

    status_code = 400
    code = "invalid"

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("Invalid schedule: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))


class ScheduleNotFound(RunError):
    """No schedule with that id."""

    status_code = 404
    code = "not_found"
