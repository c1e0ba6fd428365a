"""Digests: list, create, read, change and delete them (`/digests`, `/digests/{id}`), and preview the email
of the period so far (`/digests/{id}/preview`)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import NOT_FOUND, UNAUTHORIZED, role_response
from agentrunner.models import Role
from digests import selectors, services
from digests.api.examples import (
    CANNOT_CHANGE,
    EXAMPLE_DIGEST,
    EXAMPLE_PREVIEW,
    EXAMPLE_REQUEST,
    HIDDEN,
    INVALID,
)
from digests.models import DeliveryStatus, DigestDelivery, DigestPeriod, DigestSubscription, RankOrder, Weekday
from flows.models import Flow
from schedules.models import Schedule

MAX_LIMIT = 100
WEEKDAY_NAMES = {day.label.lower(): day.value for day in Weekday}


# --- serializers ----------------------------------------------------------------


class TeamSlugRelatedField(serializers.SlugRelatedField):
    """A flow by slug among the acting team's flows (the serializer's `team` context): another team's flow is
    "does not exist"."""

    def __init__(self, **kwargs):
        super().__init__(queryset=Flow.objects.none(), **kwargs)  # the model, for the OpenAPI document

    def get_queryset(self):
        team = self.context.get("team")
        return Flow.objects.filter(team=team) if team is not None else Flow.objects.none()


class TeamPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A schedule by id among the acting team's schedules: another team's schedule is "does not exist"."""

    def __init__(self, **kwargs):
        super().__init__(queryset=Schedule.objects.none(), **kwargs)  # the model, for the OpenAPI document

    def get_queryset(self):
        team = self.context.get("team")
        return Schedule.objects.filter(team=team) if team is not None else Schedule.objects.none()


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
        help_text="Unique in the team; also the start of the email's subject, so no line breaks or other control "
        "characters.",
    )
    recipients = serializers.ListField(
        child=serializers.EmailField(), min_length=1, max_length=100, help_text="Email addresses."
    )
    flow = TeamSlugRelatedField(
        slug_field="slug",
        required=False,
        allow_null=True,
        error_messages={"does_not_exist": "No flow with slug {value!r}.", "invalid": "Give a flow's slug."},
        help_text="Source: the slug of one of the team's flows (its runs, every version). Give exactly one of "
        "flow, agent, schedule.",
    )
    agent = serializers.CharField(
        max_length=100,
        required=False,
        allow_null=True,
        help_text="Source: an agent type (the team's single-agent runs of it).",
    )
    schedule = TeamPrimaryKeyRelatedField(
        required=False,
        allow_null=True,
        error_messages={"does_not_exist": "No schedule with id {pk_value}.", "incorrect_type": "Give a schedule's id."},
        help_text="Source: the id of one of the team's schedules (only the runs it started).",
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


def digest_answer(digest: DigestSubscription, status_code: int = status.HTTP_200_OK) -> Response:
    """The digest as the list reads it (source, creator, last delivery), read again after a write."""
    digest = selectors.digest_get(team=digest.team_id, digest_id=digest.pk)
    return Response(DigestOutputSerializer(digest).data, status=status_code)


# --- views ----------------------------------------------------------------------


class DigestListApi(generics.ListAPIView):
    serializer_class = DigestOutputSerializer
    queryset = DigestSubscription.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.digest_list(team=self.request.acting.team).order_by("name")

    @extend_schema(
        operation_id="digests_list",
        summary="List digests",
        description="The acting team's digests by name, with their recipients. Any member of the team (viewer and "
        "up) may read them.",
        responses={
            200: DigestOutputSerializer(many=True),
            401: UNAUTHORIZED,
            403: role_response(Role.VIEWER),
        },
        examples=[OpenApiExample("one daily digest", value=EXAMPLE_DIGEST, response_only=True)],
        tags=["digests"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class DigestCreateApi(APIView):
    @extend_schema(
        operation_id="digests_create",
        summary="Create a digest",
        description="Mail the top results of a flow, an agent or a schedule to people, once per period. Give "
        "exactly one source: one of the team's flows or schedules (another team's is the 400 of one that does not "
        "exist), or an agent, whose runs in the team it ranks. The name is unique in the team. Unset fields take "
        "their defaults (daily at 08:00 UTC, top 5, newest first). Needs the editor role.",
        request=DigestInputSerializer,
        responses={
            201: DigestOutputSerializer,
            400: INVALID,
            401: UNAUTHORIZED,
            403: role_response(Role.EDITOR),
        },
        examples=[
            OpenApiExample("daily top claims by score", request_only=True, value=EXAMPLE_REQUEST),
            OpenApiExample("created", response_only=True, status_codes=["201"], value=EXAMPLE_DIGEST),
        ],
        tags=["digests"],
    )
    def post(self, request):
        team = request.acting.team
        data = DigestInputSerializer(data=request.data, context={"team": team})
        data.is_valid(raise_exception=True)
        digest = services.digest_create(created_by=request.user, team=team, **data.service_fields())
        return digest_answer(digest, status.HTTP_201_CREATED)


class DigestDetailApi(APIView):
    @extend_schema(
        operation_id="digests_retrieve",
        summary="Get a digest",
        description=HIDDEN,
        responses={200: DigestOutputSerializer, 401: UNAUTHORIZED, 403: role_response(Role.VIEWER), 404: NOT_FOUND},
        examples=[OpenApiExample("daily digest", value=EXAMPLE_DIGEST, response_only=True)],
        tags=["digests"],
    )
    def get(self, request, digest_id):
        digest = selectors.digest_get(team=request.acting.team, digest_id=digest_id)
        return Response(DigestOutputSerializer(digest).data)


class DigestUpdateApi(APIView):
    @extend_schema(
        operation_id="digests_partial_update",
        summary="Change some of a digest's fields",
        description="Giving one source (flow, agent or schedule) replaces the current one. The current period "
        "keeps its start; its end follows the new timing. Needs the editor role; another team's digest is a 404.",
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
        digest = selectors.digest_get(team=request.acting.team, digest_id=digest_id)
        data = DigestInputSerializer(data=request.data, partial=True, context={"team": request.acting.team})
        data.is_valid(raise_exception=True)
        digest = services.digest_update(subscription=digest, **data.service_fields())
        return digest_answer(digest)


class DigestDeleteApi(APIView):
    @extend_schema(
        operation_id="digests_destroy",
        summary="Delete a digest and its deliveries",
        description="Needs the editor role; another team's digest is a 404.",
        responses={
            204: None,
            401: UNAUTHORIZED,
            403: role_response(Role.EDITOR),
            404: NOT_FOUND,
        },
        tags=["digests"],
    )
    def delete(self, request, digest_id):
        services.digest_delete(subscription=selectors.digest_get(team=request.acting.team, digest_id=digest_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DigestPreviewApi(APIView):
    @extend_schema(
        operation_id="digests_preview",
        summary="The email of the period so far",
        description="What Send now would mail now, rendered from the runs since the last delivery (or the "
        "previous period boundary): the results of every run of the source in the team, whoever started it. "
        "Nothing is recorded or sent. " + HIDDEN,
        responses={
            200: DigestPreviewSerializer,
            401: UNAUTHORIZED,
            403: role_response(Role.VIEWER),
            404: NOT_FOUND,
        },
        examples=[OpenApiExample("two claims", value=EXAMPLE_PREVIEW)],
        tags=["digests"],
    )
    def get(self, request, digest_id):
        digest = selectors.digest_get(team=request.acting.team, digest_id=digest_id)
        preview = selectors.digest_preview(subscription=digest)
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
