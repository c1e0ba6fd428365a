"""Errors the run services raise; the API maps each to its status code (agentrunner.errors)."""

from agentrunner.errors import InvalidFields, ServiceError

__all__ = [
    "AgentBusy",
    "InvalidFields",
    "RunAlreadyDecided",
    "RunAlreadyFinished",
    "RunError",
    "RunNotFailed",
    "RunNotFound",
]


class RunError(ServiceError):
    """The run could not be handled."""

    code = "run_error"


class AgentBusy(RunError):
    """The agent is already running at its concurrency limit; try again later."""

    status_code = 409
    code = "agent_busy"


class RunNotFound(RunError):
    """No run with that id."""

    status_code = 404
    code = "not_found"


class RunAlreadyFinished(RunError):
    """The run has already finished."""

    status_code = 409
    code = "run_finished"


class IdempotencyConflict(RunError):
    """This idempotency key was already used for a different agent, flow or input."""

    status_code = 409
    code = "idempotency_conflict"


class RunNotFailed(RunError):
    """Only a FAILED run can be retried or dismissed."""

    status_code = 409
    code = "not_failed"


class RunAlreadyDecided(RunError):
    """Someone already retried or dismissed this failure of the run."""

    status_code = 409
    code = "already_decided"
