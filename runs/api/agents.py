"""Agent types (`/agents`, `/agents/{type}`) and the runner-compatible `/agents/run` and
`/agents/status/{run_id}`, which keep the earlier runner's shape (`run_id`, `state`)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.agents import all_agents
from agentrunner.agents.builtin.document_extractor import input_from_upload
from agentrunner.api import (
    NOT_FOUND,
    RATE_LIMITED,
    RETRY_AFTER,
    UNAUTHORIZED,
    IsSuperuser,
    JSONObjectField,
    SafeJSONParser,
    error_response,
)
from agentrunner.logging import current_request_id
from agentrunner.models import Role
from agentrunner.ratelimit import RunStartThrottle
from agentrunner.validators import INT32_MAX, validate_storable_json
from runs import selectors, services
from runs.api.examples import BAD_RUN_REQUEST, BUSY, EXAMPLE_RUN_ID, EXAMPLE_USER_ID
from runs.models import AgentPolicy, OnBusyChoice, RunStatus

MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class AgentRunInputSerializer(serializers.Serializer):
    agent_type = serializers.CharField(max_length=100)
    user_id = serializers.UUIDField()
    input = JSONObjectField(required=False, default=dict)
    token_budget = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=INT32_MAX,
        help_text="Most LLM tokens this run may use (a flow's `budget.max_tokens` applies if omitted).",
    )

    file = serializers.FileField(
        required=False,
        help_text="multipart/form-data only: a PDF or text document for `document-extractor` "
        f"(at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB).",
    )

    class Meta:
        ref_name = "AgentRunRequest"

    def validate_file(self, upload):
        if upload.size > MAX_UPLOAD_BYTES:
            raise serializers.ValidationError(f"File too large: at most {MAX_UPLOAD_BYTES} bytes.")
        return upload

    def validate(self, attrs):
        upload = attrs.pop("file", None)
        if upload is not None:
            try:
                document = input_from_upload(filename=upload.name, content=upload.read())
            except ValueError as exc:
                raise serializers.ValidationError({"file": [str(exc)]}) from None
            attrs["input"] = {**(attrs.get("input") or {}), **document}
            try:
                validate_storable_json(attrs["input"])  # a text file may hold a NUL
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"file": exc.messages}) from None
        return attrs


class RunAcceptedSerializer(serializers.Serializer):
    run_id = serializers.UUIDField()

    class Meta:
        ref_name = "RunAccepted"


class AgentStatusSerializer(serializers.Serializer):
    run_id = serializers.UUIDField(source="id")
    state = serializers.CharField(source="status", help_text="One of " + ", ".join(RunStatus.values))
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_null=True)

    class Meta:
        ref_name = "AgentStatus"

    def to_representation(self, run):
        data = super().to_representation(run)
        data["error"] = data["error"] or None
        return data


class ConcurrencySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=INT32_MAX, allow_null=True, help_text="null = unlimited")
    on_busy = serializers.ChoiceField(choices=OnBusyChoice.choices)

    class Meta:
        ref_name = "Concurrency"


class AgentSerializer(serializers.Serializer):
    agent_type = serializers.CharField()
    description = serializers.CharField()
    input_schema = serializers.JSONField(help_text="JSON Schema the run input must match.")
    concurrency = ConcurrencySerializer(help_text="Effective policy (the operator's override, else the default).")
    default_concurrency = ConcurrencySerializer()
    overridden = serializers.BooleanField()
    max_attempts = serializers.IntegerField()

    class Meta:
        ref_name = "Agent"


class AgentUpdateInputSerializer(serializers.Serializer):
    concurrency = ConcurrencySerializer(allow_null=True, help_text="null = back to the agent's default policy.")

    class Meta:
        ref_name = "AgentUpdateRequest"


class AgentRunApi(APIView):
    parser_classes = [SafeJSONParser, MultiPartParser, FormParser]
    throttle_classes = [RunStartThrottle]
    write_role = Role.RUNNER

    @extend_schema(
        operation_id="agents_run",
        summary="Start an agent run",
        description="Validates the input against the agent's schema and queues the run. With the `reject` "
        "policy a busy agent answers 409 at once. `document-extractor` also accepts a multipart upload "
        "(`file`). Counts against the run-start limit (429 over it).",
        request={"application/json": AgentRunInputSerializer, "multipart/form-data": AgentRunInputSerializer},
        parameters=[RETRY_AFTER],
        responses={
            202: RunAcceptedSerializer,
            400: BAD_RUN_REQUEST,
            401: UNAUTHORIZED,
            409: BUSY,
            429: RATE_LIMITED,
        },
        examples=[
            OpenApiExample(
                "extract from text",
                request_only=True,
                value={
                    "agent_type": "document-extractor",
                    "user_id": EXAMPLE_USER_ID,
                    "input": {"text": "Policy Number: PL-1\nNamed Insured: Acme GmbH"},
                },
            ),
            OpenApiExample("accepted", response_only=True, status_codes=["202"], value={"run_id": EXAMPLE_RUN_ID}),
        ],
        tags=["agents"],
    )
    def post(self, request):
        data = AgentRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run, _ = services.run_create(
            agent_type=data.validated_data["agent_type"],
            input=data.validated_data["input"],
            user_id=data.validated_data["user_id"],
            created_by=request.user,
            token_budget=data.validated_data.get("token_budget"),
            team=request.acting.team,
            request_id=current_request_id(),
        )
        return Response({"run_id": str(run.id)}, status=status.HTTP_202_ACCEPTED)


class AgentStatusApi(APIView):
    @extend_schema(
        operation_id="agents_status",
        summary="Poll an agent run",
        responses={200: AgentStatusSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
        examples=[
            OpenApiExample(
                "completed",
                value={
                    "run_id": EXAMPLE_RUN_ID,
                    "state": "COMPLETED",
                    "result": {"waited_seconds": 1.0},
                    "error": None,
                },
            )
        ],
        tags=["agents"],
    )
    def get(self, request, run_id):
        run = selectors.run_get(team=request.acting.team, run_id=run_id)
        return Response(AgentStatusSerializer(run).data)


class AgentListApi(generics.ListAPIView):
    serializer_class = AgentSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator: no database
            return AgentPolicy.objects.none()
        return selectors.agent_list()

    @extend_schema(
        operation_id="agents_list",
        summary="List agent types",
        description="Registered agent types with their input schema and effective concurrency policy, by name.",
        responses={200: AgentSerializer(many=True), 401: UNAUTHORIZED},
        tags=["agents"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class AgentUpdateApi(APIView):
    permission_classes = [IsSuperuser]

    @extend_schema(
        operation_id="agents_update",
        summary="Change an agent type's concurrency policy",
        description="Superusers only: an agent's policy is shared by every team (it protects what the agent "
        "calls). Stored in the database; applies to the next run. Waiting runs that now fit start at once.",
        request=AgentUpdateInputSerializer,
        responses={
            200: AgentSerializer,
            400: error_response("Bad policy.", "Invalid request.", "invalid"),
            401: UNAUTHORIZED,
            403: error_response("Not a superuser.", IsSuperuser.message, "permission_denied"),
            404: NOT_FOUND,
        },
        examples=[OpenApiExample("one at a time, queued", value={"concurrency": {"limit": 1, "on_busy": "queue"}})],
        tags=["agents"],
    )
    def patch(self, request, agent_type):
        if agent_type not in all_agents():  # in the URL: a 404, not the 400 of an unknown type in a body
            raise NotFound(f"Unknown agent type {agent_type!r}.")
        data = AgentUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        concurrency = data.validated_data["concurrency"]
        if concurrency is None:
            services.agent_policy_update(agent_type=agent_type, limit=None, on_busy="", override=False)
        else:
            services.agent_policy_update(
                agent_type=agent_type, limit=concurrency["limit"], on_busy=concurrency["on_busy"]
            )
        return Response(AgentSerializer(selectors.agent_get(agent_type=agent_type)).data)
