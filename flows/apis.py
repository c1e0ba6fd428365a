"""Flows over HTTP: definitions and versions, validation, starting runs, and the flow-manager endpoint.

Stored flows are read, run and changed with Django's model permissions on Flow (ModelPermissions): a definition
may hold what staff wrote into task inputs (tokens, internal addresses), and a run's steps show those inputs, so
running a stored flow needs what reading it needs. Validating and running an inline definition is for everyone.
"""

import time

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import (
    NOT_FOUND,
    UNAUTHORIZED,
    JSONObjectField,
    ModelPermissions,
    StorableJSONField,
    error_response,
    permission_response,
)
from agentrunner.validators import INT32_MAX
from flows import services
from flows.definition import validate_definition
from flows.exceptions import FlowNotFound
from flows.models import Flow, FlowVersion
from runs import services as run_services
from runs.api.agents import RunAcceptedSerializer
from runs.api.examples import BUSY

MAX_WAIT_SECONDS = 60
WAIT_POLL_SECONDS = 0.05

CLAIM_INTAKE_EXAMPLE = {
    "name": "Claim intake",
    "start_task": "extract",
    "tasks": [
        {"name": "extract", "agent": "document-extractor", "input": {"text": "{{ input.document }}"}},
        {
            "name": "check",
            "agent": "policy-checker",
            "input": {"fields": "{{ steps.extract.output.fields }}", "check_date": "{{ input.check_date }}"},
            "retry": {"max_attempts": 3, "backoff_seconds": 2},
        },
        {"name": "accepted", "agent": "pass", "input": {"result": {"route": "accepted"}}},
        {"name": "manual_review", "agent": "pass", "input": {"reasons": "{{ steps.check.output.reasons }}"}},
    ],
    "conditions": [
        {
            "name": "extracted",
            "source_task": "extract",
            "outcome": "success",
            "target_task_success": "check",
            "target_task_failure": "end",
        },
        {
            "name": "approved",
            "source_task": "check",
            "when": 'output.decision == "approved"',
            "target_task_success": "accepted",
            "target_task_failure": "manual_review",
        },
    ],
}

INVALID_DEFINITION = error_response(
    "The definition has errors; every problem is listed by JSON path.",
    "Invalid flow definition: 1 problem.",
    "invalid_definition",
    {"tasks[1].agent": ["Unknown agent 'checker'. Valid agents: document-extractor, pass, policy-checker, wait."]},
)
HIDDEN = "Needs `flows.view_flow`; without it the answer is the 404 of a flow that does not exist."


def flow_get(slug: str) -> Flow:
    flow = Flow.objects.filter(slug=slug).select_related("owner").first()
    if flow is None:
        raise FlowNotFound()  # the same answer as for a flow the user may not see (FlowPermissions.not_found)
    return flow


class FlowPermissions:
    """Who may read, run and change stored flows: Django's model permissions on Flow."""

    permission_classes = [ModelPermissions]
    permission_model = Flow
    not_found = FlowNotFound


# --- serializers ----------------------------------------------------------------


class FlowVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)

    class Meta:
        model = FlowVersion
        ref_name = "FlowVersion"
        fields = ["id", "number", "definition", "digest", "created_by", "created_at"]


class FlowOutputSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", default=None, allow_null=True)
    version = serializers.SerializerMethodField(help_text="The current version's number.")
    definition = serializers.SerializerMethodField(help_text="The current version's definition.")

    class Meta:
        model = Flow
        ref_name = "Flow"
        fields = ["id", "slug", "name", "description", "enabled", "owner", "version", "definition", "created_at"]

    def get_version(self, flow) -> int | None:
        current = flow.current_version
        return current.number if current else None

    def get_definition(self, flow) -> dict | None:
        current = flow.current_version
        return current.definition if current else None


class FlowInputSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    enabled = serializers.BooleanField(required=False, default=True)
    definition = JSONObjectField(help_text="Tasks and conditions: flow-manager format, extended (see README).")

    class Meta:
        ref_name = "FlowRequest"


class FlowUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)
    definition = JSONObjectField(help_text="A changed definition becomes a new version; runs keep theirs.")

    class Meta:
        ref_name = "FlowUpdateRequest"


class ValidateInputSerializer(serializers.Serializer):
    definition = StorableJSONField()

    class Meta:
        ref_name = "FlowValidateRequest"


class ProblemSerializer(serializers.Serializer):
    path = serializers.CharField()
    message = serializers.CharField()
    severity = serializers.ChoiceField(choices=["error", "warning"])

    class Meta:
        ref_name = "FlowProblem"


class ValidateOutputSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    problems = ProblemSerializer(many=True)

    class Meta:
        ref_name = "FlowValidation"


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


# --- views ----------------------------------------------------------------------


class FlowListCreateApi(FlowPermissions, APIView):
    @extend_schema(
        operation_id="flows_list",
        summary="List flows",
        description="Every stored flow with its current definition. Needs `flows.view_flow` (superusers have it; "
        "give it to others with a group): definitions may hold what staff wrote into task inputs.",
        responses={200: FlowOutputSerializer(many=True), 401: UNAUTHORIZED, 403: permission_response(Flow, "view")},
        tags=["flows"],
    )
    def get(self, request):
        flows = Flow.objects.select_related("owner").prefetch_related("versions")
        return Response(FlowOutputSerializer(flows, many=True).data)

    @extend_schema(
        operation_id="flows_create",
        summary="Create a flow",
        description="Needs `flows.add_flow`.",
        request=FlowInputSerializer,
        responses={
            201: FlowOutputSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            403: permission_response(Flow, "add"),
        },
        examples=[
            OpenApiExample(
                "claim intake",
                request_only=True,
                value={"slug": "claim-intake", "name": "Claim intake", "definition": CLAIM_INTAKE_EXAMPLE},
            )
        ],
        tags=["flows"],
    )
    def post(self, request):
        data = FlowInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        flow = services.flow_create(owner=request.user, **data.validated_data)
        return Response(FlowOutputSerializer(flow).data, status=status.HTTP_201_CREATED)


class FlowDetailApi(FlowPermissions, APIView):
    @extend_schema(
        operation_id="flows_retrieve",
        summary="Get a flow",
        description=HIDDEN,
        responses={200: FlowOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
        tags=["flows"],
    )
    def get(self, request, slug):
        return Response(FlowOutputSerializer(flow_get(slug)).data)

    @extend_schema(
        operation_id="flows_update",
        summary="Replace a flow",
        description="A changed definition becomes a new version; running runs keep the version they started with. "
        "Needs `flows.change_flow`.",
        request=FlowUpdateSerializer,
        responses={
            200: FlowOutputSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            403: permission_response(Flow, "change"),
            404: NOT_FOUND,
        },
        tags=["flows"],
    )
    def put(self, request, slug):
        return self._update(request, slug, partial=False)

    @extend_schema(
        operation_id="flows_partial_update",
        summary="Change some of a flow's fields",
        description="Needs `flows.change_flow`.",
        request=FlowUpdateSerializer(partial=True),
        responses={
            200: FlowOutputSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            403: permission_response(Flow, "change"),
            404: NOT_FOUND,
        },
        tags=["flows"],
    )
    def patch(self, request, slug):
        return self._update(request, slug, partial=True)

    def _update(self, request, slug, *, partial):
        flow = flow_get(slug)
        data = FlowUpdateSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        flow = services.flow_update(flow=flow, user=request.user, **data.validated_data)
        return Response(FlowOutputSerializer(flow).data)

    @extend_schema(
        operation_id="flows_destroy",
        summary="Delete a flow that never ran and no schedule uses",
        description="Needs `flows.delete_flow`.",
        responses={
            204: None,
            401: UNAUTHORIZED,
            403: permission_response(Flow, "delete"),
            404: NOT_FOUND,
            409: error_response(
                "The flow has runs, or a schedule uses it.",
                "The flow is in use by schedule 'Nightly intake': delete or change it first, or disable the flow "
                "instead.",
                "flow_in_use",
            ),
        },
        tags=["flows"],
    )
    def delete(self, request, slug):
        services.flow_delete(flow=flow_get(slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


class FlowVersionsApi(FlowPermissions, APIView):
    @extend_schema(
        operation_id="flows_versions",
        summary="A flow's versions, newest first",
        description=HIDDEN,
        responses={200: FlowVersionSerializer(many=True), 401: UNAUTHORIZED, 404: NOT_FOUND},
        tags=["flows"],
    )
    def get(self, request, slug):
        versions = flow_get(slug).versions.select_related("created_by").order_by("-number")
        return Response(FlowVersionSerializer(versions, many=True).data)


class FlowValidateApi(APIView):
    @extend_schema(
        operation_id="flows_validate",
        summary="Validate a definition without saving it",
        description="Every problem at once, by JSON path; warnings (e.g. unreachable tasks) do not make it invalid. "
        "`max_steps` is checked against what the caller may ask for (lower for non-staff users).",
        request=ValidateInputSerializer,
        responses={200: ValidateOutputSerializer, 400: error_response("No definition.", "Invalid request.", "invalid")},
        tags=["flows"],
    )
    def post(self, request):
        data = ValidateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        problems = validate_definition(
            data.validated_data["definition"], max_steps_limit=services.max_steps_allowed(user=request.user)
        )
        valid = not any(p.severity == "error" for p in problems)
        return Response({"valid": valid, "problems": [p.as_dict() for p in problems]})


class FlowRunApi(FlowPermissions, APIView):
    # A run's steps show the tasks' inputs as the definition gives them: running a flow needs seeing it.
    permission_actions = {"POST": "view"}

    @extend_schema(
        operation_id="flows_run",
        summary="Start a run of a flow's current version",
        description="Needs `flows.view_flow`, as reading the flow does (a run's steps show the inputs its "
        "definition gives the tasks); without it the answer is the 404 of a flow that does not exist. An inline "
        "definition (`POST /api/v1/flow/execute`) needs no permission.",
        request=FlowRunInputSerializer,
        responses={
            202: RunAcceptedSerializer,
            200: OpenApiResponse(RunAcceptedSerializer, description="Existing run for this idempotency key."),
            400: error_response("Input does not fit the first task.", "Invalid request.", "invalid_input"),
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: BUSY,
        },
        examples=[OpenApiExample("a claim", request_only=True, value={"input": {"document": "Policy Number: PL-1"}})],
        tags=["flows"],
    )
    def post(self, request, slug):
        flow = flow_get(slug)
        data = FlowRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = flow.current_version
        run, created = run_services.flow_run_create(version=version, created_by=request.user, **data.validated_data)
        return Response({"run_id": str(run.id)}, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK)


class FlowExecuteApi(APIView):
    @extend_schema(
        operation_id="flow_execute",
        summary="Run an inline flow definition (flow-manager compatible)",
        description="Open to every signed-in user, without a permission: the definition is the caller's. "
        "With `wait`, answers 200 with the execution history when the run ends within that many "
        "seconds; otherwise (or with no wait) 202 with the run id to poll. A non-staff user's flow may ask for at "
        "most `FLOW_MAX_STEPS_NON_STAFF` steps (`max_steps`, a setting; 100 unless the operator changed it).",
        request=FlowExecuteInputSerializer,
        responses={
            200: FlowExecuteOutputSerializer,
            202: RunAcceptedSerializer,
            400: INVALID_DEFINITION,
            401: UNAUTHORIZED,
            409: BUSY,
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
        version = services.inline_version(definition=values["flow"], created_by=request.user)
        run, _ = run_services.flow_run_create(version=version, input=values["input"], created_by=request.user)
        deadline = time.monotonic() + values["wait"]
        while True:
            run.refresh_from_db()
            if run.is_finished or time.monotonic() >= deadline:
                break
            time.sleep(WAIT_POLL_SECONDS)
        if not run.is_finished:
            return Response({"run_id": str(run.id)}, status=status.HTTP_202_ACCEPTED)
        messages = {"COMPLETED": "Flow executed successfully", "CANCELLED": "Flow was cancelled"}
        return Response(
            {
                "message": messages.get(run.status, f"Flow failed: {run.error}"),
                "flow_id": f"inline-{version.digest[:12]}",
                "run_id": str(run.id),
                "status": run.status,
                "execution_history": (run.result or {}).get("execution_history", {}),
            }
        )
