"""Schedules: list, create, read, change, delete, pause and resume them (`/schedules`, `/schedules/{id}`,
`/schedules/{id}/pause`, `/schedules/{id}/resume`)."""

from __future__ import annotations

from datetime import UTC, datetime

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import NOT_FOUND, UNAUTHORIZED, JSONObjectField, role_response
from agentrunner.models import Role
from flows.models import Flow
from runs.models import RunStatus
from schedules import selectors, services
from schedules.api.examples import (
    CANNOT_CHANGE,
    CLAIM_INTAKE_EVERY_10_MIN,
    CLAIM_INTAKE_OUTPUT,
    HIDDEN,
    INVALID_SCHEDULE,
    WEEKDAY_MORNINGS,
)
from schedules.models import CatchUpPolicy, OverlapPolicy, Schedule, ScheduleKind
from schedules.timing import Timing, TimingError

# Longer gaps are what cron expressions are for ("0 6 1 1 *" = every 1 January).
MAX_EVERY_SECONDS = 366 * 24 * 3600


def utc(value: datetime | None) -> str | None:
    return serializers.DateTimeField(default_timezone=UTC).to_representation(value) if value else None


# --- serializers ----------------------------------------------------------------


class ScheduleInputSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=200, help_text="Unique in the team; shown in the admin, in runs and in digests."
    )
    flow = serializers.SlugField(
        max_length=100,
        required=False,
        help_text="The slug of the team's flow to start (its newest version each time).",
    )
    agent = serializers.CharField(
        max_length=100, required=False, help_text="Or the agent type to start (GET /api/v1/agents)."
    )
    input = JSONObjectField(
        required=False, default=dict, help_text="The input every run starts with (checked against the agent's schema)."
    )
    cron = serializers.CharField(
        max_length=100,
        required=False,
        help_text="Five fields, minute hour day-of-month month day-of-week, read in `timezone`: "
        "`0 7 * * 1-5` = weekdays at 07:00. Give this or `every_seconds`.",
    )
    every_seconds = serializers.IntegerField(
        min_value=1,
        max_value=MAX_EVERY_SECONDS,
        required=False,
        help_text="Or a fixed interval, aligned to the clock: 600 fires at :00, :10, :20, …",
    )
    timezone = serializers.CharField(
        max_length=64, required=False, default="UTC", help_text="An IANA time zone such as `Europe/Paris`."
    )
    enabled = serializers.BooleanField(required=False, default=True, help_text="false = paused.")
    overlap = serializers.ChoiceField(
        choices=OverlapPolicy.choices,
        required=False,
        default=OverlapPolicy.SKIP,
        help_text="What a fire time does while the previous run is still active: skip it, queue it, or start "
        "another run anyway.",
    )
    catch_up = serializers.ChoiceField(
        choices=CatchUpPolicy.choices,
        required=False,
        default=CatchUpPolicy.SKIP_MISSED,
        help_text="Fire times missed while the workers were down: skip them, or run once for all of them.",
    )

    class Meta:
        ref_name = "ScheduleRequest"

    def validate_flow(self, slug: str) -> Flow:
        # Only the acting team's flows: another team's is refused as one that does not exist.
        flow = Flow.objects.filter(team=self.context["team"], slug=slug).first()
        if flow is None:
            raise serializers.ValidationError(f"No flow {slug!r}.")
        return flow

    def validate_cron(self, expression: str) -> str:
        try:
            Timing(cron=expression)
        except TimingError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return expression

    def validate(self, attrs):
        errors = {}
        if "flow" in attrs and "agent" in attrs:
            errors["flow"] = ["Give either a flow or an agent, not both."]
        elif not self.partial and "flow" not in attrs and "agent" not in attrs:
            errors["flow"] = ["Give the flow (its slug) or the agent to start."]
        if "cron" in attrs and "every_seconds" in attrs:
            errors["cron"] = ["Give either cron or every_seconds, not both."]
        elif not self.partial and "cron" not in attrs and "every_seconds" not in attrs:
            errors["cron"] = ["Give when to start: cron (e.g. '0 7 * * 1-5') or every_seconds (e.g. 600)."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    def service_fields(self) -> dict:
        """The validated fields under the service's names (kind, cron and interval_seconds for the timing)."""
        data = dict(self.validated_data)
        if "agent" in data:
            data["agent_type"] = data.pop("agent")
        if "cron" in data:
            data.update(kind=ScheduleKind.CRON, interval_seconds=None)
        if "every_seconds" in data:
            data.update(kind=ScheduleKind.INTERVAL, interval_seconds=data.pop("every_seconds"), cron="")
        return data


LastRunSerializer = inline_serializer(
    name="ScheduleLastRun",
    fields={
        "id": serializers.UUIDField(),
        "status": serializers.ChoiceField(choices=RunStatus.choices),
        "scheduled_for": serializers.DateTimeField(allow_null=True, help_text="The fire time the run stands for."),
        "finished_at": serializers.DateTimeField(allow_null=True),
    },
    allow_null=True,
)


class ScheduleOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    flow = serializers.SerializerMethodField(help_text="The flow's slug; null when the schedule starts an agent.")
    agent = serializers.SerializerMethodField(help_text="The agent type; null when the schedule starts a flow.")
    input = serializers.JSONField()
    cron = serializers.SerializerMethodField(help_text="Null for an interval schedule.")
    every_seconds = serializers.SerializerMethodField(help_text="Null for a cron schedule.")
    timezone = serializers.CharField()
    enabled = serializers.BooleanField()
    overlap = serializers.ChoiceField(choices=OverlapPolicy.choices)
    catch_up = serializers.ChoiceField(choices=CatchUpPolicy.choices)
    next_fire_times = serializers.SerializerMethodField(
        help_text=f"The next {selectors.NEXT_FIRE_TIMES} fire times, in UTC; empty while paused."
    )
    last_run = serializers.SerializerMethodField(help_text="The newest run the schedule started; null if none.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    class Meta:
        ref_name = "Schedule"

    def get_flow(self, schedule) -> str | None:
        return schedule.flow.slug if schedule.flow_id else None

    def get_agent(self, schedule) -> str | None:
        return schedule.agent_type or None

    def get_cron(self, schedule) -> str | None:
        return schedule.cron if schedule.kind == ScheduleKind.CRON else None

    def get_every_seconds(self, schedule) -> int | None:
        return schedule.interval_seconds if schedule.kind == ScheduleKind.INTERVAL else None

    @extend_schema_field(serializers.ListField(child=serializers.DateTimeField()))
    def get_next_fire_times(self, schedule):
        return [utc(moment) for moment in selectors.schedule_next_fire_times(schedule)]

    @extend_schema_field(LastRunSerializer)
    def get_last_run(self, schedule):
        run = selectors.schedule_last_run(schedule)
        if run is None:
            return None
        return {
            "id": str(run.pk),
            "status": run.status,
            "scheduled_for": utc(run.scheduled_for),
            "finished_at": utc(run.finished_at),
        }


def schedule_answer(schedule: Schedule, status_code: int = status.HTTP_200_OK) -> Response:
    """The schedule as the list reads it (flow slug, newest run), read again after a write."""
    schedule = selectors.schedule_get(team=schedule.team_id, schedule_id=schedule.pk)
    return Response(ScheduleOutputSerializer(schedule).data, status=status_code)


# --- views ----------------------------------------------------------------------


class ScheduleListApi(generics.ListAPIView):
    serializer_class = ScheduleOutputSerializer
    queryset = Schedule.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.schedule_list(team=self.request.acting.team).order_by("name")

    @extend_schema(
        operation_id="schedules_list",
        summary="List schedules",
        description="The acting team's schedules by name, with each one's input, next fire times and newest run. "
        "Any member of the team (viewer and up) may read them.",
        responses={
            200: ScheduleOutputSerializer(many=True),
            401: UNAUTHORIZED,
            403: role_response(Role.VIEWER),
        },
        tags=["schedules"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ScheduleCreateApi(APIView):
    @extend_schema(
        operation_id="schedules_create",
        summary="Create a schedule",
        description="Starts a flow or an agent with a fixed input at every fire time: a cron expression read in "
        "the schedule's time zone, or a fixed interval. The schedule and its runs belong to the acting team; its "
        "name is unique in the team, and `flow` names one of the team's flows (another team's is the 400 of a flow "
        "that does not exist). Runs are started as the user who creates it. Needs the editor role.",
        request=ScheduleInputSerializer,
        responses={
            201: ScheduleOutputSerializer,
            400: INVALID_SCHEDULE,
            401: UNAUTHORIZED,
            403: role_response(Role.EDITOR),
        },
        examples=[
            OpenApiExample("claim intake every 10 minutes", request_only=True, value=CLAIM_INTAKE_EVERY_10_MIN),
            OpenApiExample("an agent on weekday mornings", request_only=True, value=WEEKDAY_MORNINGS),
            OpenApiExample("created", response_only=True, status_codes=["201"], value=CLAIM_INTAKE_OUTPUT),
        ],
        tags=["schedules"],
    )
    def post(self, request):
        team = request.acting.team
        data = ScheduleInputSerializer(data=request.data, context={"team": team})
        data.is_valid(raise_exception=True)
        schedule = services.schedule_create(created_by=request.user, team=team, **data.service_fields())
        return schedule_answer(schedule, status.HTTP_201_CREATED)


class ScheduleDetailApi(APIView):
    @extend_schema(
        operation_id="schedules_retrieve",
        summary="Get a schedule",
        description=HIDDEN,
        responses={
            200: ScheduleOutputSerializer,
            401: UNAUTHORIZED,
            403: role_response(Role.VIEWER),
            404: NOT_FOUND,
        },
        examples=[OpenApiExample("claim intake", value=CLAIM_INTAKE_OUTPUT)],
        tags=["schedules"],
    )
    def get(self, request, schedule_id):
        schedule = selectors.schedule_get(team=request.acting.team, schedule_id=schedule_id)
        return Response(ScheduleOutputSerializer(schedule).data)


class ScheduleUpdateApi(APIView):
    @extend_schema(
        operation_id="schedules_partial_update",
        summary="Change some of a schedule's fields",
        description="Giving `cron` makes it a cron schedule, `every_seconds` an interval one; `flow` or `agent` "
        "replaces the target (one of the team's flows). The next fire time is computed again from now: nothing is "
        "caught up. Needs the editor role; another team's schedule is a 404.",
        request=ScheduleInputSerializer(partial=True),
        responses={
            200: ScheduleOutputSerializer,
            400: INVALID_SCHEDULE,
            401: UNAUTHORIZED,
            403: CANNOT_CHANGE,
            404: NOT_FOUND,
        },
        examples=[
            OpenApiExample(
                "every morning at 9 in Paris",
                request_only=True,
                value={"cron": "0 9 * * *", "timezone": "Europe/Paris"},
            )
        ],
        tags=["schedules"],
    )
    def patch(self, request, schedule_id):
        schedule = selectors.schedule_get(team=request.acting.team, schedule_id=schedule_id)
        data = ScheduleInputSerializer(data=request.data, partial=True, context={"team": request.acting.team})
        data.is_valid(raise_exception=True)
        return schedule_answer(services.schedule_update(schedule=schedule, **data.service_fields()))


class ScheduleDeleteApi(APIView):
    @extend_schema(
        operation_id="schedules_destroy",
        summary="Delete a schedule",
        description="Its runs stay (without the link to the schedule); its slot history goes. Needs the editor "
        "role; another team's schedule is a 404.",
        responses={204: None, 401: UNAUTHORIZED, 403: role_response(Role.EDITOR), 404: NOT_FOUND},
        tags=["schedules"],
    )
    def delete(self, request, schedule_id):
        services.schedule_delete(schedule=selectors.schedule_get(team=request.acting.team, schedule_id=schedule_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ScheduleSwitchApi(APIView):
    """Pause or resume: a change of the schedule's `enabled`, as the admin's actions."""

    enabled: bool
    permission_actions = {"POST": "change"}  # a change of the schedule: the editor role, as in the admin

    def switch(self, request, schedule_id) -> Response:
        schedule = selectors.schedule_get(team=request.acting.team, schedule_id=schedule_id)
        return schedule_answer(services.schedule_update(schedule=schedule, enabled=self.enabled))


class SchedulePauseApi(ScheduleSwitchApi):
    enabled = False

    @extend_schema(
        operation_id="schedules_pause",
        summary="Pause a schedule",
        description="No fire time starts a run until it is resumed; slots queued behind a running run are "
        "skipped. Pausing a paused schedule changes nothing. Needs the editor role; another team's schedule is a "
        "404.",
        request=None,
        responses={
            200: ScheduleOutputSerializer,
            400: INVALID_SCHEDULE,
            401: UNAUTHORIZED,
            403: CANNOT_CHANGE,
            404: NOT_FOUND,
        },
        examples=[OpenApiExample("paused", value={**CLAIM_INTAKE_OUTPUT, "enabled": False, "next_fire_times": []})],
        tags=["schedules"],
    )
    def post(self, request, schedule_id):
        return self.switch(request, schedule_id)


class ScheduleResumeApi(ScheduleSwitchApi):
    enabled = True

    @extend_schema(
        operation_id="schedules_resume",
        summary="Resume a paused schedule",
        description="It fires again from its next fire time; the fire times missed while paused are not caught "
        "up. 400 if the schedule no longer validates (e.g. its agent was removed). Needs the editor role; another "
        "team's schedule is a 404.",
        request=None,
        responses={
            200: ScheduleOutputSerializer,
            400: INVALID_SCHEDULE,
            401: UNAUTHORIZED,
            403: CANNOT_CHANGE,
            404: NOT_FOUND,
        },
        examples=[OpenApiExample("resumed", value=CLAIM_INTAKE_OUTPUT)],
        tags=["schedules"],
    )
    def post(self, request, schedule_id):
        return self.switch(request, schedule_id)
