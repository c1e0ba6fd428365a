"""A schedule's slot history (`/schedules/{id}/fires`): what each fire time became."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import generics, serializers

from agentrunner.api import NOT_FOUND, UNAUTHORIZED, role_response
from agentrunner.models import Role
from schedules import selectors
from schedules.api.examples import HIDDEN, SKIPPED_SLOT, STARTED_SLOT
from schedules.models import FireStatus, ScheduleFire


class ScheduleFireOutputSerializer(serializers.Serializer):
    intended_at = serializers.DateTimeField(help_text="The fire time this slot stands for.")
    status = serializers.ChoiceField(
        choices=FireStatus.choices,
        help_text="What the slot became: "
        + "; ".join(f"`{value}` = {label}" for value, label in FireStatus.choices)
        + ".",
    )
    detail = serializers.CharField(help_text="Why it was skipped, queued or could not start; empty otherwise.")
    run_id = serializers.UUIDField(allow_null=True, help_text="The run the slot started, if any.")
    fired_at = serializers.DateTimeField(source="created_at", help_text="When the slot was decided.")

    class Meta:
        ref_name = "ScheduleFire"


class ScheduleFireListApi(generics.ListAPIView):
    serializer_class = ScheduleFireOutputSerializer
    queryset = ScheduleFire.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        schedule = selectors.schedule_get(team=self.request.acting.team, schedule_id=self.kwargs["schedule_id"])
        return selectors.schedule_fire_list(schedule=schedule)

    @extend_schema(
        operation_id="schedules_fires",
        summary="A schedule's slot history, newest first",
        description="One entry per fire time the scheduler reached: the run it started, or why it was skipped, "
        "queued or could not start. " + HIDDEN,
        responses={
            200: ScheduleFireOutputSerializer(many=True),
            401: UNAUTHORIZED,
            403: role_response(Role.VIEWER),
            404: NOT_FOUND,
        },
        examples=[
            OpenApiExample("skipped while the previous run was running", response_only=True, value=SKIPPED_SLOT),
            OpenApiExample("started a run", response_only=True, value=STARTED_SLOT),
        ],
        tags=["schedules"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
