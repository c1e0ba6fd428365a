"""Errors the run services raise; the API maps each to one status code."""


class RunError(Exception):
    """The run could not be handled."""

    status_code = 400
    code = "run_error"

    def __init__(self, message: str | None = None, **extra):
        super().__init__(message or (self.__doc__ or "").strip())
        self.extra = extra


class InvalidFields(RunError):
    """The request names fields that cannot be used; `errors` lists every problem by field."""

    status_code = 400
    code = "invalid"
    noun = "input"

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        problems = "; ".join(f"{field}: {', '.join(messages)}" for field, messages in errors.items())
        super().__init__(f"Invalid {self.noun}: {problems}")


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
