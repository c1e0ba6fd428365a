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


def renamed_fields(errors: dict[str, list[str]], names: dict[str, str]) -> dict[str, list[str]]:
    """`errors` by field path with the first part of each path renamed (`agent_type` -> `agent`, and
    `input.x` kept as is unless `input` is renamed); problems of fields that end up with one name are merged."""
    out: dict[str, list[str]] = {}
    for path, messages in errors.items():
        first, dot, rest = path.partition(".")
        out.setdefault(names.get(first, first) + dot + rest, []).extend(messages)
    return out


class APIFieldNames:
    """Mixin for an `InvalidFields` error whose API body names the fields as the API does.

    `api_fields` maps the services' names to the API's; the admin, which uses the model's names, still reads
    `errors` as raised.
    """

    api_fields: dict[str, str] = {}

    def body(self) -> dict:
        errors = renamed_fields(self.errors, self.api_fields)
        return {**super().body(), "detail": str(type(self)(errors)), "errors": errors}
