"""The flow-manager-compatible inline run (`/flow/execute`), which keeps that API's shape (`run_id`,
`execution_history`)."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import RATE_LIMITED, RETRY_AFTER, UNAUTHORIZED, JSONObjectField, role_response
from agentrunner.logging import current_request_id
from agentrunner.models import Role
from agentrunner.ratelimit import RunStartThrottle
from flows import selectors, services
from flows.api.examples import CLAIM_INTAKE_EXAMPLE, INVALID_DEFINITION
from runs import services as run_services
from runs.api.agents import RunAcceptedSerializer
from runs.api.examples import BUSY

MAX_WAIT_SECONDS = 60


class FlowExecuteInputSerializer(serializers.Serializer):
    flow = JSONObjectField(help_text="An inline flow definition (flow-manager format, extended).")
    input = JSONObjectField(required=False, default=dict)
    wait = serializers.FloatField(
        required=False,
        default=0,
        min_value=0,
        max_value=MAX_WAIT_SECONDS,
        help_text=f"Seconds to wait for the run to end (at most {MAX_WAIT_SECONDS}); 0 answers 202 at once.",
    )

    class Meta:
        ref_name = "FlowExecuteRequest"


class FlowExecuteOutputSerializer(serializers.Serializer):
    message = serializers.CharField()
    flow_id = serializers.CharField(help_text="Identifier of the (inline) flow version.")
    run_id = serializers.UUIDField()
    status = serializers.CharField()
    execution_history = serializers.DictField(help_text="{task: {status, data}} for every task that ran.")

    class Meta:
        ref_name = "FlowExecuteResult"


MESSAGES = {"COMPLETED": "Flow executed successfully", "CANCELLED": "Flow was cancelled"}


class FlowExecuteApi(APIView):
    # The definition is the caller's own, but it starts a run of the acting team: a runner's right.
    write_role = Role.RUNNER
    throttle_classes = [RunStartThrottle]

    @extend_schema(
        operation_id="flow_execute",
        summary="Run an inline flow definition (flow-manager compatible)",
        description="Needs the runner role: the definition is the caller's, the run belongs to the acting team "
        "(read it at `/api/v1/runs/{id}`). With `wait`, answers 200 with the execution history when the run ends "
        "within that many seconds; otherwise (or with no wait) 202 with the run id to poll. Below the editor role, "
        "a flow may ask for at most `FLOW_MAX_STEPS_NON_STAFF` steps (`max_steps`, a setting; 100 unless the "
        "operator changed it); editors and admins of the team, up to the format's 10,000. Counts against the "
        "run-start limits of the team and of you (429 over either).",
        request=FlowExecuteInputSerializer,
        parameters=[RETRY_AFTER],
        responses={
            200: FlowExecuteOutputSerializer,
            202: RunAcceptedSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            403: role_response(Role.RUNNER),
            409: BUSY,
            429: RATE_LIMITED,
        },
        examples=[
            OpenApiExample("claim intake", request_only=True, value={"flow": CLAIM_INTAKE_EXAMPLE, "wait": 10}),
        ],
        tags=["flows"],
    )
    def post(self, request):
        data = FlowExecuteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        team = request.acting.team
        version = services.inline_version(definition=values["flow"], created_by=request.user, team=team)
        run, _ = run_services.flow_run_create(
            version=version, input=values["input"], created_by=request.user, team=team, request_id=current_request_id()
        )
        run = selectors.flow_run_wait(run=run, seconds=values["wait"])
        if not run.is_finished:
            return Response({"run_id": str(run.id)}, status=status.HTTP_202_ACCEPTED)
        return Response(
            {
                "message": MESSAGES.get(run.status, f"Flow failed: {run.error}"),
                "flow_id": f"inline-{version.digest[:12]}",
                "run_id": str(run.id),
                "status": run.status,
                "execution_history": (run.result or {}).get("execution_history", {}),
            }
        )
