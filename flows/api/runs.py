"""Starting a run of a stored flow's current version (`/flows/{slug}/runs`); the run is then read at `/runs/{id}`."""

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import NOT_FOUND, RATE_LIMITED, RETRY_AFTER, UNAUTHORIZED, JSONObjectField, role_response
from agentrunner.logging import current_request_id
from agentrunner.models import Role
from agentrunner.ratelimit import RunStartThrottle
from agentrunner.validators import INT32_MAX
from flows import selectors
from flows.api.examples import BAD_FLOW_INPUT
from runs import services as run_services
from runs.api.examples import BUSY
from runs.api.runs import RunOutputSerializer, is_idempotent_replay
from runs.exceptions import IdempotencyConflict


class FlowRunInputSerializer(serializers.Serializer):
    input = JSONObjectField(required=False, default=dict)
    token_budget = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=INT32_MAX,
        help_text="Overrides the flow's `budget.max_tokens`.",
    )
    user_id = serializers.UUIDField(required=False, allow_null=True)
    idempotency_key = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")

    class Meta:
        ref_name = "FlowRunRequest"


class FlowRunStartApi(APIView):
    # Starting a run is a runner's right (TeamPermissions checks it before the flow is looked up).
    write_role = Role.RUNNER
    throttle_classes = [RunStartThrottle]

    def is_replay(self, request) -> bool:
        return is_idempotent_replay(request)

    @extend_schema(
        operation_id="flows_run",
        summary="Start a run of a flow's current version",
        description="202 with the new run, as `POST /api/v1/runs` answers; with an `idempotency_key` already used "
        "by you, 200 with that run (409 if it was for another flow, input or team). The run belongs to the flow's "
        "team, the acting one. Needs the runner role; another team's flow is the 404 of a flow that does not "
        "exist. Counts against the run-start limits of the team and of you (429 over either), except a reused "
        "`idempotency_key`.",
        request=FlowRunInputSerializer,
        parameters=[RETRY_AFTER],
        responses={
            202: RunOutputSerializer,
            200: OpenApiResponse(RunOutputSerializer, description="Existing run for this idempotency key."),
            400: BAD_FLOW_INPUT,
            401: UNAUTHORIZED,
            403: role_response(Role.RUNNER),
            404: NOT_FOUND,
            409: BUSY,
            429: RATE_LIMITED,
        },
        examples=[OpenApiExample("a claim", request_only=True, value={"input": {"document": "Policy Number: PL-1"}})],
        tags=["flows"],
    )
    def post(self, request, slug):
        flow = selectors.flow_get(team=request.acting.team, slug=slug)
        data = FlowRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        run, created = run_services.flow_run_create(
            version=flow.current_version, created_by=request.user, request_id=current_request_id(), **values
        )
        # A key reused for another flow, input or team answers nothing of that run (as POST /runs).
        same = run.flow_version_id is not None and run.flow_version.flow_id == flow.pk and run.team_id == flow.team_id
        if not created and (not same or run.input != values["input"]):
            raise IdempotencyConflict()
        return Response(
            RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        )
