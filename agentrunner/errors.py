"""The base of every error a service raises for a request it cannot carry out.

Each app's errors extend `ServiceError` with the HTTP status and the stable code the API answers with,
so the API's exception handler (agentrunner.api) maps them all the same way without importing any app,
and the admin shows their message.
"""

from __future__ import annotations


class ServiceError(Exception):
    """The request could not be carried out."""

    status_code = 400
    code = "error"

    def __init__(self, message: str | None = None, *, errors: dict[str, list[str]] | None = None, **extra):
        super().__init__(message or (self.__doc__ or "").strip())
        self.errors = errors or {}
        self.extra = extra

    def body(self) -> dict:
        """The API's error body: {"detail", "code", "errors"} and any extra members."""
        return {"detail": str(self), "code": self.code, "errors": self.errors, **self.extra}


class InvalidFields(ServiceError):
    """The request names fields that cannot be used; `errors` lists every problem by field path."""

    status_code = 400
    code = "invalid"
    noun = "input"

    def __init__(self, errors: dict[str, list[str]]):
        problems = "; ".join(f"{field}: {', '.join(messages)}" for field, messages in errors.items())
        super().__init__(f"Invalid {self.noun}: {problems}", errors=errors)
