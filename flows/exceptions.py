"""Errors of flow services; the API maps each to one status code."""

from runs.exceptions import RunError


class FlowNotFound(RunError):
    """No flow with that slug."""

    status_code = 404
    code = "not_found"


class FlowInUse(RunError):
    """The flow has runs; disable it instead of deleting it (runs keep their history)."""

    status_code = 409
    code = "flow_in_use"


class FlowDisabled(RunError):
    """The flow is disabled; enable it to start runs."""

    status_code = 409
    code = "flow_disabled"


class FlowSlugTaken(RunError):
    """A flow with this slug already exists."""

    status_code = 400
    code = "invalid"


class RunNotResumable(RunError):
    """Only a FAILED flow run can be resumed from its failed step."""

    status_code = 409
    code = "not_resumable"
