"""The shared API layer: one exception handler shapes every API error as {"detail", "code", "errors"}; the
parser, JSON fields, pagination and filters every app's API uses, each refusing what the database cannot take;
the model permissions that decide who sees and changes flows, schedules and digests.
"""

import copy
from datetime import UTC, timedelta

import django_filters
from django import forms
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import exceptions, pagination, permissions, serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from agentrunner.agents import InvalidAgentInput
from agentrunner.errors import ServiceError
from agentrunner.models import Role
from agentrunner.teams.exceptions import RoleTooLow
from agentrunner.teams.selectors import TEAM_HEADER, team_acting
from agentrunner.validators import validate_storable_json


class SafeJSONParser(JSONParser):
    """JSON where nesting too deep for Python's decoder is a 400 like any other parse error, not a 500; and where
    text the database cannot store (a NUL character, a lone surrogate) is a 400 naming the field, whatever the field.

    The second check covers every field at once, stored or only looked up (a slug, an idempotency key): PostgreSQL
    refuses such text in any statement, so without it each field would need its own guard, and one without would
    answer 500 (so did a digest's `flow` and a flow run's `idempotency_key`).
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from None
        refuse_unstorable_text(data)
        return data


def refuse_unstorable_text(data) -> None:
    """A 400 if `data`, a parsed JSON body, holds text the database cannot store: by top-level field, naming where."""
    if not isinstance(data, dict):
        data = {"non_field_errors": data}
    errors: dict[str, list[str]] = {}
    for field, value in data.items():
        try:
            validate_storable_json({field: value})  # where: "the value at name", "the key 'x' at input.a"
        except DjangoValidationError as exc:
            errors[field if _storable(field) else "non_field_errors"] = exc.messages
    if errors:
        raise exceptions.ValidationError(errors)


def _storable(text: str) -> bool:
    try:
        validate_storable_json(text)
    except DjangoValidationError:
        return False
    return True


class StorableJSONField(serializers.JSONField):
    """JSON the database can store: no NUL character or lone surrogate in any key or string.

    Every serializer field whose value is stored as JSON uses this (or JSONObjectField): PostgreSQL's jsonb
    refuses both, which would otherwise be a 500 at save time; SQLite is held to the same rule.
    """

    default_validators = [validate_storable_json]


class JSONObjectField(StorableJSONField):
    """A storable JSON object (dict); arrays, strings and numbers are refused."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value


class CachedFieldsMixin:
    """A ModelSerializer whose fields are worked out from the model once per class, not on every use.

    ModelSerializer introspects the model each time a serializer is made (once per request for a detail
    answer: ~1-2 ms); here the first result is kept and each serializer gets a copy, as a plain Serializer
    copies its declared fields. For output serializers whose fields do not depend on the request.
    """

    _fields_prototype: dict | None = None

    def get_fields(self):
        cls = type(self)
        if cls.__dict__.get("_fields_prototype") is None:
            cls._fields_prototype = super().get_fields()
        return copy.deepcopy(cls._fields_prototype)


# The largest page a client may ask for; a `limit` beyond it, below 1 or not a whole number is a 400.
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
# An offset past PostgreSQL's bigint was a 500.
MAX_OFFSET = 2**63 - 1


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """Every list of the API: `{count, next, previous, results}`, `limit` (1 to MAX_PAGE_SIZE, default
    DEFAULT_PAGE_SIZE) and `offset`. A malformed `limit` or `offset` is a 400 naming it, not a silent default."""

    default_limit = DEFAULT_PAGE_SIZE
    max_limit = MAX_PAGE_SIZE

    def get_limit(self, request):
        return self._number(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request):
        return self._number(request, self.offset_query_param, 0, 0, MAX_OFFSET)

    @staticmethod
    def _number(request, name: str, default: int, lowest: int, highest: int) -> int:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not lowest <= value <= highest:
            raise exceptions.ValidationError({name: [f"Must be a whole number from {lowest} to {highest}."]})
        return value

    def get_paginated_response_schema(self, schema):
        page = super().get_paginated_response_schema(schema)
        page["properties"]["count"]["example"] = 2
        page["properties"]["next"]["example"] = None
        page["properties"]["previous"]["example"] = None
        return page

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_limit, default=self.default_limit)
                parameter["description"] = (
                    f"Number of results per page: 1 to {self.max_limit} (default {self.default_limit})."
                )
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"].update(minimum=0, default=0)
        return parameters


def operations(**views):
    """One URL whose operations (HTTP methods) are each their own view: `operations(get=RunList, post=RunStart)`.

    Each view keeps its own serializers, permissions, pagination and OpenAPI description; this only routes by
    method (405 with `Allow` for any other, OPTIONS and HEAD to the GET view or else the first).
    `schema_operations` lets the OpenAPI generator see each view (settings' PREPROCESSING_HOOKS).
    """
    from rest_framework.views import APIView  # not at the top: see exception_handler

    handlers = {method.upper(): view.as_view() for method, view in views.items()}
    fallback = handlers.get("GET") or next(iter(handlers.values()))

    def dispatch(request, *args, **kwargs):
        handler = handlers.get(request.method)
        if handler is None and request.method in ("HEAD", "OPTIONS"):
            handler = fallback
        if handler is None:
            response = Response(
                error_body(f'Method "{request.method}" not allowed.', "method_not_allowed"),
                status=status.HTTP_405_METHOD_NOT_ALLOWED,
                headers={"Allow": ", ".join(sorted(handlers))},
            )
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = "application/json"
            response.renderer_context = {}
            return response.render()
        return handler(request, *args, **kwargs)

    # What drf-spectacular's endpoint enumerator reads: a view class answering every routed method...
    dispatch.cls = type(
        "Operations", (APIView,), {method.lower(): (lambda self, request, *a, **k: None) for method in handlers}
    )
    dispatch.initkwargs = {}
    dispatch.csrf_exempt = True  # as APIView.as_view(); each view checks CSRF for session users itself
    dispatch.schema_operations = handlers  # ...and, per method, the view that really answers it
    return dispatch


def schema_operations_hook(endpoints, **kwargs):
    """drf-spectacular preprocessing hook: document each method of an `operations()` URL by its own view."""
    routed = []
    for path, path_regex, method, callback in endpoints:
        callback = getattr(callback, "schema_operations", {}).get(method, callback)
        routed.append((path, path_regex, method, callback))
    return routed


# The widest UTC offsets in use are -12:00 and +14:00; PostgreSQL refuses offsets from 16 hours on.
MAX_UTC_OFFSET = timedelta(hours=14)


class UTCIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 date-time, turned into UTC; an offset beyond ±14:00 or a moment out of range is refused."""

    default_error_messages = {
        "offset": "The time zone offset must be between -14:00 and +14:00.",
        "range": "The date-time is out of range.",
    }

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None or moment.utcoffset() is None:
            return moment
        if abs(moment.utcoffset()) > MAX_UTC_OFFSET:
            raise forms.ValidationError(self.error_messages["offset"], code="offset")
        try:
            # In UTC, the databases compare it without converting it (e.g. 0001-01-01T00:00+01:00 cannot be).
            return moment.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError(self.error_messages["range"], code="range") from None


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO 8601 filter, in UTC and refusing impossible offsets (a 400, not a database error)."""

    field_class = UTCIsoDateTimeField


class IdFilter(django_filters.NumberFilter):
    """An integer id: a fraction, or a number beyond a 64-bit key, is a 400 (SQLite overflowed into a 500)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


# The action each method is, as DRF's DjangoModelPermissions maps them, plus `view` for reading.
ACTION_FOR_METHOD = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def role_denied_message(needed: str, team: str = "acme", role: str = "viewer") -> str:
    """e.g. "This needs the editor role in team 'acme'; you are a viewer."."""
    return f"This needs the {needed} role in team {team!r}; you are {_a(role)}."


class TeamPermissions(permissions.BasePermission):
    """Who may do what, for the whole API: signed in, acting in a team, with the role the operation needs.

    The team is the one the `X-Team` header names, else the user's only team (agentrunner.teams.selectors.
    team_acting); it is set on the request as `request.acting` (team and role) for the view and its selectors,
    which return only that team's objects: another team's object is a 404, as one that does not exist.

    Reading needs the viewer role; a write (POST, PUT, PATCH, DELETE, or a method the view maps to "change" in
    `permission_actions`) needs the view's `write_role`: editor by default, runner for operations on runs, admin
    for team management. Superusers act as admins of every team. A missing role is a 403 naming it, decided
    before any object is looked up, so the answer does not depend on whether it exists.
    """

    # Whether the team comes from the X-Team header (the OpenAPI document then lists it: agentrunner.openapi).
    reads_team_header = True

    def team_slug(self, request, view) -> str | None:
        return request.headers.get(TEAM_HEADER) or None

    def needed_role(self, request, view) -> str:
        action = getattr(view, "permission_actions", {}).get(request.method, ACTION_FOR_METHOD[request.method])
        return Role.VIEWER if action == "view" else getattr(view, "write_role", Role.EDITOR)

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False  # DRF answers 401
        if request.method not in ACTION_FOR_METHOD:
            raise exceptions.MethodNotAllowed(request.method)
        request.acting = acting = team_acting(user=user, slug=self.team_slug(request, view))
        needed = self.needed_role(request, view)
        if acting.allows(needed):
            return True
        raise RoleTooLow(role_denied_message(needed, acting.team.slug, acting.role))


class IsSuperuser(permissions.BasePermission):
    """Superusers only: for settings of the whole service, shared by every team (an anonymous request is a 401)."""

    message = "Only a superuser may do this: it changes a setting shared by every team."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_superuser)


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
    if isinstance(exc, InvalidAgentInput):
        errors = {f"input.{k}" if k != "input" else k: v for k, v in exc.errors.items()}
        return Response(error_body(str(exc), "invalid_input", errors), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ServiceError):  # every app's errors: their own status, code and body
        return Response(exc.body(), status=exc.status_code)
    if isinstance(exc, exceptions.Throttled):  # a rate limit (agentrunner.ratelimit): when to try again
        wait = exc.wait
        if wait is None:
            return Response(error_body("Too many requests.", "rate_limited"), status=status.HTTP_429_TOO_MANY_REQUESTS)
        return Response(
            error_body(f"Too many requests: try again in {wait} second{'s' if wait != 1 else ''}.", "rate_limited"),
            status=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError(str(exc))
    # Imported here, not above: loading rest_framework.views reads DEFAULT_PARSER_CLASSES, i.e. this module,
    # so a module-level import made `import agentrunner.api` fail when it came first.
    from rest_framework.views import exception_handler as drf_exception_handler

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
RATE_LIMITED = error_response(
    "Over a run-start limit: the team's (100 in any 60 s by default) or yours in the team (20), superusers "
    "included; the `Retry-After` header says in how many seconds a start is accepted again. Nothing was started.",
    "Too many requests: try again in 17 seconds.",
    "rate_limited",
)
# The header of a 429: an operation documenting RATE_LIMITED lists it in its `parameters`.
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    description="Seconds until the limit accepts a start again (whole seconds, rounded up).",
    response=[429],
)


def role_response(needed: str) -> OpenApiResponse:
    """The documented 403 of an operation that needs `needed` (a role) in the acting team."""
    return error_response(f"Your role in the team is below {needed}.", role_denied_message(needed), "permission_denied")
