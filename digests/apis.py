"""Digests over HTTP: define them, read their deliveries, preview, send now, resend or mark sent.

Django's model permissions decide who does what, as in the admin (ModelPermissions): a digest and its deliveries
and preview are read with `digests.view_digestsubscription` (they show recipients and results), Send now is a
change of the digest, and the decisions about a delivery need `digests.change_digestdelivery`.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import (
    NOT_FOUND,
    UNAUTHORIZED,
    LimitOffsetPagination,
    ModelPermissions,
    error_response,
    permission_response,
)
from digests import selectors, services
from digests.exceptions import DigestInvalid
from digests.models import DeliveryStatus, DigestDelivery, DigestPeriod, DigestSubscription, RankOrder, Weekday
from flows.models import Flow
from schedules.models import Schedule

MAX_LIMIT = 100
# API field names for the service's error keys (the model says agent_type, the API says agent).
API_FIELD = {"agent_type": "agent"}
WEEKDAY_NAMES = {day.label.lower(): day.value for day in Weekday}
EXAMPLE_DELIVERY = {
    "id": 41,
    "digest": 7,
    "period_key": "manual:2026-11-21T10:12:03.512000+00:00",
    "period_start": "2026-11-21T07:00:00Z",
    "period_end": "2026-11-21T10:12:03.512000Z",
    "manual": True,
    "run": None,
    "run_ids": ["6f1c2b7e-3f0a-4d1e-9d2a-0c5e8b7a1f42"],
    "status": "pending",
    "needs_decision": False,
    "message_id": "<digest-7-3a1f0c9e2b7d4e6f8a1b2c3d@example.com>",
    "recipients": ["claims-team@example.com"],
    "subject": "Claim intake — top claims: top 1 of 2026-11-21 08:00–11:12 Europe/Paris",
    "attempts": 0,
    "next_attempt_at": "2026-11-21T10:14:03Z",
    "error": "",
    "history": [],
    "sending_started_at": None,
    "sent_at": None,
    "created_at": "2026-11-21T10:12:03Z",
}
EXAMPLE_REQUEST = {
    "name": "Claim intake — top claims",
    "recipients": ["claims-team@example.com", "lead@example.com"],
    "flow": "claim-intake",
    "period": "daily",
    "send_at": "08:00",
    "timezone": "Europe/Paris",
    "rank_by": "score",
    "rank_order": "desc",
    "limit": 5,
}
EXAMPLE_DIGEST = {
    "id": 7,
    **EXAMPLE_REQUEST,
    "enabled": True,
    "agent": None,
    "schedule": None,
    "source_label": "flow claim-intake",
    "period_description": "daily at 08:00 Europe/Paris",
    "weekday": "monday",
    "items_path": "",
    "include_failures": True,
    "skip_empty": False,
    "next_send_at": "2026-11-22T07:00:00Z",
    "last_delivery": {
        "id": 40,
        "status": "sent",
        "period_start": "2026-11-20T07:00:00Z",
        "period_end": "2026-11-21T07:00:00Z",
        "runs": 12,
        "sent_at": "2026-11-21T07:00:04Z",
        "created_at": "2026-11-21T07:00:01Z",
    },
    "created_by": "staff",
    "created_at": "2026-11-01T09:30:00Z",
    "updated_at": "2026-11-01T09:30:00Z",
}

HIDDEN = "Needs `digests.view_digestsubscription`; without it the answer is the 404 of a digest that does not exist."
CANNOT_CHANGE = permission_response(DigestSubscription, "change")
CANNOT_DECIDE = permission_response(DigestDelivery, "change")
INVALID = error_response(
    "Bad input; every problem is listed by field.",
    "Invalid request: recipients.1: Enter a valid email address.",
    "invalid",
    {"recipients.1": ["Enter a valid email address."], "flow": ["Object with slug=claims does not exist."]},
)
WRONG_STATE = error_response(
    "The delivery is not in a state that allows this.",
    "Only a delivery that is sending or failed can be marked sent (it is Sent).",
    "delivery_state",
)


class DigestPermissions:
    """Who may read and change digests: Django's model permissions on DigestSubscription."""

    permission_classes = [ModelPermissions]
    permission_model = DigestSubscription


def digest_get(digest_id: int) -> DigestSubscription:
    return get_object_or_404(selectors.digest_list(), pk=digest_id)


def invalid(exc: DigestInvalid) -> serializers.ValidationError:
    # The shared exception handler answers RunError subclasses with `extra` only, so DigestInvalid's
    # per-field errors would be lost: re-raise them as a validation error (same 400 shape and code).
    return serializers.ValidationError({API_FIELD.get(k, k): v for k, v in exc.errors.items()})


# --- serializers ----------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": 6},
            {"type": "string", "enum": list(WEEKDAY_NAMES)},
        ],
        "description": "0 = Sunday … 6 = Saturday (cron numbering), or the day's English name.",
        "example": "monday",
    }
)
class WeekdayField(serializers.Field):
    """A weekday as 0–6 (0 = Sunday, as in cron) or an English name or its first three letters."""

    default_error_messages = {
        "invalid": "Give 0–6 (0 = Sunday) or a day's name, e.g. monday.",
    }

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool) and 0 <= data <= 6:
            return data
        if isinstance(data, str):
            text = data.strip().lower()
            if text.isdigit() and 0 <= int(text) <= 6:
                return int(text)
            for name, value in WEEKDAY_NAMES.items():
                if text in (name, name[:3]):
                    return value
        self.fail("invalid")

    def to_representation(self, value):
        return Weekday(value).label.lower()


class DigestInputSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=200,
        help_text="Unique; also the start of the email's subject, so no line breaks or other control characters.",
    )
    recipients = serializers.ListField(
        child=serializers.EmailField(), min_length=1, max_length=100, help_text="Email addresses."
    )
    flow = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Flow.objects.all(),
        required=False,
        allow_null=True,
        error_messages={"does_not_exist": "No flow with slug {value!r}.", "invalid": "Give a flow's slug."},
        help_text="Source: a flow's slug (its runs, every version). Give exactly one of flow, agent, schedule.",
    )
    agent = serializers.CharField(
        max_length=100, required=False, allow_null=True, help_text="Source: an agent type (its single-agent runs)."
    )
    schedule = serializers.PrimaryKeyRelatedField(
        queryset=Schedule.objects.all(),
        required=False,
        allow_null=True,
        error_messages={"does_not_exist": "No schedule with id {pk_value}.", "incorrect_type": "Give a schedule's id."},
        help_text="Source: a schedule's id (only the runs it started).",
    )
    enabled = serializers.BooleanField(required=False, help_text="False pauses the digest.")
    period = serializers.ChoiceField(
        choices=DigestPeriod.choices,
        required=False,
        help_text="`after_run` (one email per run of the schedule source), `hourly`, `daily` or `weekly`.",
    )
    send_at = serializers.TimeField(
        format="%H:%M",
        input_formats=["%H:%M", "%H:%M:%S"],
        required=False,
        help_text="HH:MM in `timezone`, for daily and weekly digests.",
    )
    weekday = WeekdayField(required=False, help_text="For weekly digests.")
    timezone = serializers.CharField(max_length=64, required=False, help_text="An IANA name, e.g. Europe/Paris.")
    items_path = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Path to a list in each run's result whose entries are ranked (e.g. `output.leads`); "
        "empty = each run is one result.",
    )
    rank_by = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Path to the number to rank by, e.g. `score`; empty = newest first.",
    )
    rank_order = serializers.ChoiceField(choices=RankOrder.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, required=False, help_text="How many results.")
    include_failures = serializers.BooleanField(required=False, help_text="List the period's failed runs too.")
    skip_empty = serializers.BooleanField(
        required=False, help_text="Record, but do not mail, periods with nothing to report."
    )

    class Meta:
        ref_name = "DigestInput"

    def validate(self, attrs):
        given = [name for name in ("flow", "agent", "schedule") if attrs.get(name)]
        if len(given) > 1 or (not self.partial and not given):
            raise serializers.ValidationError({"source": ["Give exactly one of flow, agent and schedule."]})
        return attrs

    def service_fields(self) -> dict:
        """The validated data as digest_create/digest_update arguments; a new source replaces the old one."""
        data = dict(self.validated_data)
        if any(data.get(name) for name in ("flow", "agent", "schedule")):
            agent = data.pop("agent", None)
            data = {**data, "flow": data.get("flow"), "agent_type": agent or "", "schedule": data.get("schedule")}
        else:
            for name in ("flow", "agent", "schedule"):
                data.pop(name, None)  # null without another source: nothing to change
        if "recipients" in data:
            data["recipients"] = ", ".join(data["recipients"])
        return data


class DeliverySummarySerializer(serializers.ModelSerializer):
    # A plain string: a second component with DeliveryStatus as an enum makes drf-spectacular warn about the
    # "status" name until settings.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] names the enum.
    status = serializers.CharField(help_text="As a delivery's status: " + ", ".join(DeliveryStatus.values) + ".")
    runs = serializers.SerializerMethodField(help_text="How many runs the digest covers.")

    class Meta:
        model = DigestDelivery
        ref_name = "DigestDeliverySummary"
        fields = ["id", "status", "period_start", "period_end", "runs", "sent_at", "created_at"]
        read_only_fields = fields

    def get_runs(self, delivery) -> int:
        return len(delivery.run_ids)


class DigestOutputSerializer(serializers.ModelSerializer):
    recipients = serializers.ListField(child=serializers.EmailField(), source="recipient_list")
    flow = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    agent = serializers.SerializerMethodField(help_text="The agent type, when the source is an agent.")
    schedule = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    source_label = serializers.CharField(help_text="The source in words, e.g. `flow claim-intake`.")
    period_description = serializers.SerializerMethodField(help_text="e.g. `daily at 08:00 Europe/Paris`.")
    send_at = serializers.TimeField(format="%H:%M")
    weekday = WeekdayField()
    next_send_at = serializers.SerializerMethodField(
        help_text="When the current period ends and its email goes out; null when paused or for `after_run`."
    )
    last_delivery = serializers.SerializerMethodField(help_text="The newest delivery; null before the first.")
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)

    class Meta:
        model = DigestSubscription
        ref_name = "Digest"
        fields = [
            "id",
            "name",
            "enabled",
            "recipients",
            "flow",
            "agent",
            "schedule",
            "source_label",
            "period",
            "period_description",
            "send_at",
            "weekday",
            "timezone",
            "items_path",
            "rank_by",
            "rank_order",
            "limit",
            "include_failures",
            "skip_empty",
            "next_send_at",
            "last_delivery",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_agent(self, digest) -> str | None:
        return digest.agent_type or None

    def get_period_description(self, digest) -> str:
        return selectors.digest_period_words(digest)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_send_at(self, digest):
        return selectors.digest_next_send_at(digest)

    @extend_schema_field(DeliverySummarySerializer(allow_null=True))
    def get_last_delivery(self, digest):
        delivery = selectors.digest_latest_delivery(digest)
        return DeliverySummarySerializer(delivery).data if delivery else None


class DeliveryOutputSerializer(serializers.ModelSerializer):
    digest = serializers.PrimaryKeyRelatedField(source="subscription", read_only=True)
    run = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="For a per-run digest: the run it reports."
    )
    run_ids = serializers.ListField(child=serializers.UUIDField(), help_text="The runs the digest covers.")
    needs_decision = serializers.SerializerMethodField(
        help_text="Failed, or stuck in `sending` (its worker died mid-send): nothing retries it; resend it or "
        "mark it sent."
    )
    recipients = serializers.SerializerMethodField()
    history = serializers.ListField(
        child=serializers.DictField(), help_text="Every send attempt and decision: at, attempt, outcome, error, by."
    )

    class Meta:
        model = DigestDelivery
        ref_name = "DigestDelivery"
        fields = [
            "id",
            "digest",
            "period_key",
            "period_start",
            "period_end",
            "manual",
            "run",
            "run_ids",
            "status",
            "needs_decision",
            "message_id",
            "recipients",
            "subject",
            "attempts",
            "next_attempt_at",
            "error",
            "history",
            "sending_started_at",
            "sent_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_needs_decision(self, delivery) -> bool:
        return selectors.delivery_needs_decision(delivery)

    def get_recipients(self, delivery) -> list[str]:
        return selectors.delivery_recipients(delivery)


class DigestPreviewSerializer(serializers.Serializer):
    period_start = serializers.DateTimeField(help_text="Where the period so far starts: the last delivery's end.")
    period_end = serializers.DateTimeField(help_text="Now.")
    runs = serializers.IntegerField(help_text="Finished runs of the source in the period.")
    empty = serializers.BooleanField(help_text="Nothing to report (no result, no failure).")
    subject = serializers.CharField()
    text = serializers.CharField(help_text="The plain-text part.")
    html = serializers.CharField(help_text="The HTML part.")

    class Meta:
        ref_name = "DigestPreview"


# --- views ----------------------------------------------------------------------


class DigestListCreateApi(DigestPermissions, APIView):
    @extend_schema(
        operation_id="digests_list",
        summary="List digests",
        description="Every digest with its recipients. Needs `digests.view_digestsubscription` (superusers have "
        "it; give it to others with a group).",
        responses={
            200: DigestOutputSerializer(many=True),
            401: UNAUTHORIZED,
            403: permission_response(DigestSubscription, "view"),
        },
        examples=[OpenApiExample("one daily digest", value=[EXAMPLE_DIGEST], response_only=True)],
        tags=["digests"],
    )
    def get(self, request):
        return Response(DigestOutputSerializer(selectors.digest_list(), many=True).data)

    @extend_schema(
        operation_id="digests_create",
        summary="Create a digest",
        description="Mail the top results of a flow, an agent or a schedule to people, once per period. Give "
        "exactly one source. Unset fields take their defaults (daily at 08:00 UTC, top 5, newest first). Needs "
        "`digests.add_digestsubscription`.",
        request=DigestInputSerializer,
        responses={
            201: DigestOutputSerializer,
            400: INVALID,
            401: UNAUTHORIZED,
            403: permission_response(DigestSubscription, "add"),
        },
        examples=[
            OpenApiExample("daily top claims by score", request_only=True, value=EXAMPLE_REQUEST),
            OpenApiExample("created", response_only=True, status_codes=["201"], value=EXAMPLE_DIGEST),
        ],
        tags=["digests"],
    )
    def post(self, request):
        data = DigestInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            digest = services.digest_create(created_by=request.user, **data.service_fields())
        except DigestInvalid as exc:
            raise invalid(exc) from None
        return Response(DigestOutputSerializer(digest_get(digest.pk)).data, status=status.HTTP_201_CREATED)


class DigestDetailApi(DigestPermissions, APIView):
    @extend_schema(
        operation_id="digests_retrieve",
        summary="Get a digest",
        description=HIDDEN,
        responses={200: DigestOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
        examples=[OpenApiExample("daily digest", value=EXAMPLE_DIGEST, response_only=True)],
        tags=["digests"],
    )
    def get(self, request, digest_id):
        return Response(DigestOutputSerializer(digest_get(digest_id)).data)

    @extend_schema(
        operation_id="digests_partial_update",
        summary="Change some of a digest's fields",
        description="Giving one source (flow, agent or schedule) replaces the current one. The current period "
        "keeps its start; its end follows the new timing. Needs `digests.change_digestsubscription`.",
        request=DigestInputSerializer(partial=True),
        responses={
            200: DigestOutputSerializer,
            400: INVALID,
            401: UNAUTHORIZED,
            403: CANNOT_CHANGE,
            404: NOT_FOUND,
        },
        examples=[
            OpenApiExample(
                "weekly on Monday, top 10", request_only=True, value={"period": "weekly", "weekday": 1, "limit": 10}
            )
        ],
        tags=["digests"],
    )
    def patch(self, request, digest_id):
        digest = digest_get(digest_id)
        data = DigestInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        try:
            services.digest_update(subscription=digest, **data.service_fields())
        except DigestInvalid as exc:
            raise invalid(exc) from None
        return Response(DigestOutputSerializer(digest_get(digest.pk)).data)

    @extend_schema(
        operation_id="digests_destroy",
        summary="Delete a digest and its deliveries",
        description="Needs `digests.delete_digestsubscription`.",
        responses={
            204: None,
            401: UNAUTHORIZED,
            403: permission_response(DigestSubscription, "delete"),
            404: NOT_FOUND,
        },
        tags=["digests"],
    )
    def delete(self, request, digest_id):
        services.digest_delete(subscription=digest_get(digest_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DigestDeliveriesApi(DigestPermissions, generics.ListAPIView):
    serializer_class = DeliveryOutputSerializer
    pagination_class = LimitOffsetPagination
    queryset = DigestDelivery.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        digest = get_object_or_404(DigestSubscription, pk=self.kwargs["digest_id"])
        return selectors.digest_deliveries(subscription=digest)

    @extend_schema(
        operation_id="digests_deliveries",
        summary="A digest's deliveries, newest first",
        description="One per period (or per run for `after_run` digests, or per Send now), with what happened "
        "to its email. `needs_decision` marks failed ones and ones stuck in `sending`. " + HIDDEN,
        responses={200: DeliveryOutputSerializer(many=True), 401: UNAUTHORIZED, 404: NOT_FOUND},
        tags=["digests"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class DigestSendApi(DigestPermissions, APIView):
    permission_actions = {"POST": "change"}  # as the admin's Send now

    @extend_schema(
        operation_id="digests_send",
        summary="Send the period so far now",
        description="Cuts the current period at now and queues its email: the runs since the last delivery. "
        "The next scheduled digest starts from now. With `skip_empty` and nothing to report the delivery is "
        "recorded as `empty` and nothing is mailed. Needs `digests.change_digestsubscription`.",
        request=None,
        responses={
            202: DeliveryOutputSerializer,
            401: UNAUTHORIZED,
            403: CANNOT_CHANGE,
            404: NOT_FOUND,
            409: error_response(
                "Another Send now of the same moment got there first.",
                "Another send of this digest got there first.",
                "delivery_state",
            ),
        },
        examples=[OpenApiExample("queued", response_only=True, status_codes=["202"], value=EXAMPLE_DELIVERY)],
        tags=["digests"],
    )
    def post(self, request, digest_id):
        digest = digest_get(digest_id)
        delivery = services.digest_period_close(subscription_id=digest.pk, manual=True)
        if delivery is None:
            return Response(
                {"detail": "Another send of this digest got there first.", "code": "delivery_state", "errors": {}},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(DeliveryOutputSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class DigestPreviewApi(DigestPermissions, APIView):
    @extend_schema(
        operation_id="digests_preview",
        summary="The email of the period so far",
        description="What Send now would mail now, rendered from the runs since the last delivery (or the "
        "previous period boundary): the results of every run of the source, whoever started it. Nothing is "
        "recorded or sent. " + HIDDEN,
        responses={200: DigestPreviewSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
        examples=[
            OpenApiExample(
                "two claims",
                value={
                    "period_start": "2026-11-21T07:00:00Z",
                    "period_end": "2026-11-21T10:12:03Z",
                    "runs": 2,
                    "empty": False,
                    "subject": "Claim intake — top claims: top 2 of 2026-11-21 08:00–11:12 Europe/Paris",
                    "text": "Claim intake — top claims\n…\n1. score = 0.93 · flow claim-intake · …",
                    "html": "<!DOCTYPE html>…",
                },
            )
        ],
        tags=["digests"],
    )
    def get(self, request, digest_id):
        preview = selectors.digest_preview(subscription=digest_get(digest_id))
        body = {
            "period_start": preview.start,
            "period_end": preview.end,
            "runs": preview.run_count,
            "empty": preview.content.empty,
            "subject": preview.content.subject,
            "text": preview.content.text,
            "html": preview.content.html,
        }
        return Response(DigestPreviewSerializer(body).data)


class DeliveryActionApi(APIView):
    """Resend or mark sent: a person's decision about a delivery, through the service."""

    permission_classes = [ModelPermissions]
    permission_model = DigestDelivery
    permission_actions = {"POST": "change"}  # as the admin's decisions (DigestDeliveryAdmin.has_decide_permission)

    def decide(self, request, delivery_id, service):
        delivery = get_object_or_404(selectors.delivery_list(), pk=delivery_id)
        delivery = service(delivery=delivery, by=request.user.get_username())
        return Response(DeliveryOutputSerializer(delivery).data)


class DeliveryResendApi(DeliveryActionApi):
    @extend_schema(
        operation_id="digests_deliveries_resend",
        summary="Send a delivery again",
        description="From `sending` (stuck), `failed` or `sent`. The email keeps its Message-ID, so mail "
        "programs that already have it usually show one copy; some recipients may still see it twice. Needs "
        "`digests.change_digestdelivery`.",
        request=None,
        responses={
            200: DeliveryOutputSerializer,
            401: UNAUTHORIZED,
            403: CANNOT_DECIDE,
            404: NOT_FOUND,
            409: WRONG_STATE,
        },
        examples=[OpenApiExample("queued again", response_only=True, value=EXAMPLE_DELIVERY)],
        tags=["digests"],
    )
    def post(self, request, delivery_id):
        return self.decide(request, delivery_id, services.delivery_resend)


class DeliveryMarkSentApi(DeliveryActionApi):
    @extend_schema(
        operation_id="digests_deliveries_mark_sent",
        summary="Record that a delivery reached its recipients",
        description="For a delivery stuck in `sending` or `failed` that you know was delivered (e.g. from the "
        "mail server's log). Nothing is sent. Needs `digests.change_digestdelivery`.",
        request=None,
        responses={
            200: DeliveryOutputSerializer,
            401: UNAUTHORIZED,
            403: CANNOT_DECIDE,
            404: NOT_FOUND,
            409: WRONG_STATE,
        },
        examples=[
            OpenApiExample(
                "marked sent", response_only=True, value={**EXAMPLE_DELIVERY, "status": "sent", "manual": False}
            )
        ],
        tags=["digests"],
    )
    def post(self, request, delivery_id):
        return self.decide(request, delivery_id, services.delivery_mark_sent)
