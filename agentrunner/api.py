"""One exception handler shapes every API error as {"detail", "code", "errors"}."""

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from agentrunner.agents import InvalidAgentInput
from agentrunner.agents.registry import UnknownAgentType
from flows.definition import InvalidFlowDefinition
from runs.exceptions import RunError


class SafeJSONParser(JSONParser):
    """JSON where nesting too deep for Python's decoder is a 400 like any other parse error, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from None


def _flatten(detail, prefix="") -> dict[str, list[str]]:
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(value, name))
        return out
    if isinstance(detail, list) and detail and all(isinstance(d, dict | list) for d in detail):
        out = {}
        for i, value in enumerate(detail):
            out.update(_flatten(value, f"{prefix}.{i}" if prefix else str(i)))
        return out
    items = detail if isinstance(detail, list) else [detail]
    return {prefix or "non_field_errors": [str(i) for i in items]}


def error_body(detail: str, code: str, errors: dict | None = None, **extra) -> dict:
    return {"detail": detail, "code": code, "errors": errors or {}, **extra}


def exception_handler(exc, context):
    """Turn every known error into a 4xx with the same shape; anything else stays a 500 (a bug)."""
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("Request body too large.", "request_too_large"), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    if isinstance(exc, UnknownAgentType):
        return Response(
            error_body(str(exc), "unknown_agent_type", {"agent_type": [str(exc)]}), status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, InvalidAgentInput):
        errors = {f"input.{k}" if k != "input" else k: v for k, v in exc.errors.items()}
        return Response(error_body(str(exc), "invalid_input", errors), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, InvalidFlowDefinition):
        errors, warnings = {}, {}
        for problem in exc.problems:
            (errors if problem.severity == "error" else warnings).setdefault(problem.path, []).append(problem.message)
        count = sum(len(v) for v in errors.values())
        detail = f"Invalid flow definition: {count} problem{'s' if count != 1 else ''}."
        return Response(
            error_body(detail, "invalid_definition", errors, warnings=warnings), status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, RunError):
        errors = getattr(exc, "errors", None)
        return Response(error_body(str(exc), exc.code, errors, **exc.extra), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError(str(exc))
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        first = next(iter(errors.items()), ("", [""]))
        detail = f"Invalid request: {first[0]}: {first[1][0]}" if first[0] else "Invalid request."
        response.data = error_body(detail, "invalid", errors)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        response.data = error_body(str(detail), code if isinstance(code, str) else "error")
    return response


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for people.")
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. `invalid`, `agent_busy`, `not_found`.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Field errors by field path (e.g. `input.seconds`); empty when not about fields.",
    )

    class Meta:
        ref_name = "Error"


def error_response(description: str, example_detail: str, code: str, errors: dict | None = None) -> OpenApiResponse:
    return OpenApiResponse(
        ErrorSerializer,
        description=description,
        examples=[OpenApiExample(code, value=error_body(example_detail, code, errors))],
    )


UNAUTHORIZED = error_response(
    "Missing or bad credentials.", "Authentication credentials were not provided.", "not_authenticated"
)
NOT_FOUND = error_response("No such object.", "Not found.", "not_found")
