"""Errors of flow services; the API maps each to one status code."""

from agentrunner.errors import ServiceError


class FlowNotFound(ServiceError):
    """No flow with that slug."""

    status_code = 404
    code = "not_found"


class FlowInUse(ServiceError):
    """The flow has runs; disable it instead of deleting it (runs keep their history)."""

    status_code = 409
    code = "flow_in_use"


class FlowDisabled(ServiceError):
    """The flow is disabled; enable it to start runs."""

    status_code = 409
    code = "flow_disabled"


class FlowSlugTaken(ServiceError):
    """A flow with this slug already exists."""

    status_code = 400
    code = "invalid"


class RunNotResumable(ServiceError):
    """Only a FAILED flow run can be resumed from its failed step."""

    status_code = 409
    code = "not_resumable"
