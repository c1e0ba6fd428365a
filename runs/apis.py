"""Runs and agents over HTTP: thin views calling services and selectors."""

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.agents.builtin.document_extractor import input_from_upload
from agentrunner.api import (
    NOT_FOUND,
    UNAUTHORIZED,
    IdFilter,
    IsoDateTimeFilter,
    JSONObjectField,
    SafeJSONParser,
    error_response,
    may_see,
)
from agentrunner.validators import INT32_MAX, validate_storable_json
from flows.exceptions import FlowNotFound
from flows.models import Flow, FlowVersion
from runs import selectors, services
from runs.exceptions import RunError
from runs.models import OnBusyChoice, Run, RunStatus

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
EXAMPLE_RUN_ID = "6f1c2b7e-3f0a-4d1e-9d2a-0c5e8b7a1f42"
EXAMPLE_USER_ID = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"


BlockedBySerializer = inline_serializer(
    name="BlockedBy",
    fields={
        "concurrency_key": serializers.CharField(),
        "runs": serializers.ListField(child=serializers.UUIDField(), help_text="Runs holding the slots."),
        "slots_used": serializers.IntegerField(),
        "limit": serializers.IntegerField(allow_null=True),
        "position": serializers.IntegerField(help_text="1 = next to get a slot."),
    },
)


FlowRefSerializer = inline_serializer(
    name="FlowRef",
    fields={
        "slug": serializers.CharField(allow_null=True),
        "version": serializers.IntegerField(),
        "version_id": serializers.IntegerField(),
    },
)


class RunOutputSerializer(serializers.ModelSerializer):
    flow = serializers.SerializerMethodField(
        help_text="The flow version this run executes (slug null for an inline flow); null for a single-agent run."
    )
    blocked_by = serializers.SerializerMethodField(
        help_text="While the run waits for a concurrency slot: who holds it, slots used / limit and its "
        "place in the queue. Null otherwise."
    )

    class Meta:
        model = Run
        ref_name = "Run"
        fields = [
            "id",
            "status",
            "agent_type",
            "flow",
            "input",
            "result",
            "error",
            "error_code",
            "user_id",
            "idempotency_key",
            "token_budget",
            "created_at",
            "started_at",
            "finished_at",
            "cancel_requested_at",
            "rerun_of",
            "schedule",
            "scheduled_for",
            "blocked_by",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "schedule": {"help_text": "Id of the schedule that started this run; null otherwise."},
            "scheduled_for": {"help_text": "The schedule's fire time this run stands for (one run per time)."},
        }

    @extend_schema_field(FlowRefSerializer)
    def get_flow(self, run):
        version = run.flow_version
        if version is None:
            return None
        return {
            "slug": version.flow.slug if version.flow else None,
            "version": version.number,
            "version_id": version.pk,
        }

    @extend_schema_field(BlockedBySerializer)
    def get_blocked_by(self, run):
        page = self.context.get("blocked_by")  # a list computes it for its whole page at once
        return page.get(run.pk) if page is not None else selectors.run_blocked_by(run=run)


class AttemptOutputSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    status = serializers.CharField()
    worker_id = serializers.CharField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.SerializerMethodField()
    error = serializers.CharField()
    error_code = serializers.CharField()

    class Meta:
        ref_name = "StepAttempt"

    def get_duration_ms(self, attempt) -> int | None:
        return round(attempt.duration.total_seconds() * 1000) if attempt.duration else None


class StepOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sequence = serializers.IntegerField()
    name = serializers.CharField()
    agent_type = serializers.CharField()
    status = serializers.CharField()
    input = serializers.JSONField()
    output = serializers.JSONField(allow_null=True)
    error = serializers.CharField()
    error_code = serializers.CharField()
    attempts = AttemptOutputSerializer(source="attempt_set", many=True, help_text="Every attempt, oldest first.")
    max_attempts = serializers.IntegerField()
    queued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True, help_text="When a RETRYING step tries again.")

    class Meta:
        ref_name = "Step"


class RunCreateInputSerializer(serializers.Serializer):
    agent_type = serializers.CharField(
        max_length=100, required=False, help_text="A registered agent type (GET /api/v1/agents); or give `flow`."
    )
    flow = serializers.SlugField(
        max_length=100, required=False, help_text="A flow's slug: runs its current version; or give `agent_type`."
    )
    input = JSONObjectField(required=False, default=dict, help_text="The agent's or flow's input.")
    user_id = serializers.UUIDField(required=False, allow_null=True, help_text="The end user the run is for.")
    idempotency_key = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        default="",
        help_text="Sending the same key again returns the same run instead of starting another.",
    )
    token_budget = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=INT32_MAX,
        help_text="Most LLM tokens this run may use (a flow's `budget.max_tokens` applies if omitted).",
    )

    class Meta:
        ref_name = "RunCreateRequest"

    def validate(self, attrs):
        if ("agent_type" in attrs) == ("flow" in attrs):
            raise serializers.ValidationError({"agent_type": ["Give exactly one of agent_type and flow."]})
        return attrs


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


# --- error examples -------------------------------------------------------------

BAD_RUN_REQUEST = error_response(
    "Unknown agent type, invalid user_id or input not matching the agent's input schema.",
    "Invalid agent input: seconds: 'seconds' is a required property",
    "invalid_input",
    {"input.seconds": ["'seconds' is a required property"]},
)
BUSY = error_response(
    "The agent is at its concurrency limit and its policy is `reject`.",
    "Agent 'document-extractor' is already running at its concurrency limit (1); "
    "try again when the current run has finished.",
    "agent_busy",
)
RUN_FINISHED_ERR = error_response(
    "The run has already finished.", "Run ... has already finished (COMPLETED); nothing to cancel.", "run_finished"
)


# --- agents ---------------------------------------------------------------------


class AgentRunApi(APIView):
    parser_classes = [SafeJSONParser, MultiPartParser, FormParser]

    @extend_schema(
        operation_id="agents_run",
        summary="Start an agent run",
        description="Validates the input against the agent's schema and queues the run. With the `reject` "
        "policy a busy agent answers 409 at once. `document-extractor` also accepts a multipart upload "
        "(`file`).",
        request={"application/json": AgentRunInputSerializer, "multipart/form-data": AgentRunInputSerializer},
        responses={202: RunAcceptedSerializer, 400: BAD_RUN_REQUEST, 401: UNAUTHORIZED, 409: BUSY},
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
        run = get_object_or_404(selectors.run_list(user=request.user), pk=run_id)
        return Response(AgentStatusSerializer(run).data)


class AgentListApi(APIView):
    @extend_schema(
        operation_id="agents_list",
        summary="List agent types",
        description="Registered agent types with their input schema and effective concurrency policy.",
        responses={200: AgentSerializer(many=True), 401: UNAUTHORIZED},
        tags=["agents"],
    )
    def get(self, request):
        return Response(AgentSerializer(selectors.agent_list(), many=True).data)


class AgentUpdateApi(APIView):
    @extend_schema(
        operation_id="agents_update",
        summary="Change an agent type's concurrency policy",
        description="Staff only. Stored in the database; applies to the next run. Waiting runs that now "
        "fit start at once.",
        request=AgentUpdateInputSerializer,
        responses={
            200: AgentSerializer,
            400: error_response("Bad policy.", "Invalid request.", "invalid"),
            401: UNAUTHORIZED,
            403: error_response("Not staff.", "You do not have permission.", "permission_denied"),
            404: NOT_FOUND,
        },
        examples=[OpenApiExample("one at a time, queued", value={"concurrency": {"limit": 1, "on_busy": "queue"}})],
        tags=["agents"],
    )
    def patch(self, request, agent_type):
        if not request.user.is_staff:
            return Response(
                {"detail": "Only staff can change agent policies.", "code": "permission_denied", "errors": {}},
                status=status.HTTP_403_FORBIDDEN,
            )
        if agent_type not in {a["agent_type"] for a in selectors.agent_list()}:
            return Response(
                {"detail": f"Unknown agent type {agent_type!r}.", "code": "not_found", "errors": {}},
                status=status.HTTP_404_NOT_FOUND,
            )
        data = AgentUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        concurrency = data.validated_data["concurrency"]
        if concurrency is None:
            services.agent_policy_update(agent_type=agent_type, limit=None, on_busy="", override=False)
        else:
            services.agent_policy_update(
                agent_type=agent_type, limit=concurrency["limit"], on_busy=concurrency["on_busy"]
            )
        agent = next(a for a in selectors.agent_list() if a["agent_type"] == agent_type)
        return Response(AgentSerializer(agent).data)


# --- runs -----------------------------------------------------------------------


class RunFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=RunStatus.choices)
    agent_type = django_filters.CharFilter()
    flow = django_filters.CharFilter(field_name="flow_version__flow__slug", help_text="A flow's slug.")
    user_id = django_filters.UUIDFilter()
    schedule = IdFilter(field_name="schedule_id", help_text="A schedule's id: the runs it started.")
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Run
        fields = ["status", "agent_type", "flow", "user_id", "schedule", "created_after", "created_before"]


class RunListApi(generics.ListAPIView):
    serializer_class = RunOutputSerializer
    filterset_class = RunFilter

    queryset = Run.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.run_list(user=self.request.user)

    def get_serializer(self, *args, **kwargs):
        if kwargs.get("many") and args:  # a page of runs: why each waits, in a few queries for all
            kwargs.setdefault("context", self.get_serializer_context())["blocked_by"] = selectors.runs_blocked_by(
                runs=args[0]
            )
        return super().get_serializer(*args, **kwargs)

    @extend_schema(
        operation_id="runs_list",
        summary="List runs",
        description="Newest first. Staff see every run, other users the runs they started.",
        responses={
            200: RunOutputSerializer(many=True),
            400: error_response("Bad filter.", "Invalid request.", "invalid"),
            401: UNAUTHORIZED,
        },
        tags=["runs"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class RunStartApi(APIView):
    @extend_schema(
        operation_id="runs_create",
        summary="Start a run",
        description="202 with the new run. With an `idempotency_key` already used by you, 200 with that run "
        "(409 if the agent or input differ). Starting a stored `flow` needs `flows.view_flow`, as reading it "
        "does; without it the answer is the 404 of a flow that does not exist.",
        request=RunCreateInputSerializer,
        responses={
            202: RunOutputSerializer,
            200: OpenApiResponse(RunOutputSerializer, description="Existing run for this idempotency key."),
            400: BAD_RUN_REQUEST,
            401: UNAUTHORIZED,
            404: error_response(
                "No flow with that slug, or one you may not see.", "No flow 'claim-intake'.", "not_found"
            ),
            409: BUSY,
        },
        examples=[
            OpenApiExample(
                "wait two seconds",
                request_only=True,
                value={"agent_type": "wait", "input": {"seconds": 2}, "idempotency_key": "nightly-2026-11-21"},
            )
        ],
        tags=["runs"],
    )
    def post(self, request):
        data = RunCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        common = {
            "input": values["input"],
            "user_id": values.get("user_id"),
            "created_by": request.user,
            "idempotency_key": values["idempotency_key"],
            "token_budget": values.get("token_budget"),
        }
        if "flow" in values:
            version = flow_current_version(values["flow"], user=request.user)
            run, created = services.flow_run_create(version=version, **common)
            same = run.flow_version_id is not None and run.flow_version.flow_id == version.flow_id
        else:
            run, created = services.run_create(agent_type=values["agent_type"], **common)
            same = run.agent_type == values["agent_type"]
        if not created and (not same or run.input != values["input"]):
            raise IdempotencyConflict()
        return Response(
            RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        )


def flow_current_version(slug: str, *, user):
    # The rule of POST /flows/{slug}/runs (agentrunner.api.ModelPermissions): the same 404 whether the flow is
    # missing or the user may not see it, since running it shows its tasks' inputs.
    version = FlowVersion.objects.filter(flow__slug=slug).select_related("flow").order_by("-number").first()
    if version is None or not may_see(user, Flow):
        raise FlowNotFound(f"No flow {slug!r}.")
    return version


class IdempotencyConflict(RunError):
    """This idempotency key was already used for a different agent, flow or input."""

    status_code = 409
    code = "idempotency_conflict"


class RunDetailApi(APIView):
    def get_run(self, request, run_id) -> Run:
        return get_object_or_404(selectors.run_list(user=request.user), pk=run_id)

    @extend_schema(
        operation_id="runs_retrieve",
        summary="Get a run",
        responses={200: RunOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
        tags=["runs"],
    )
    def get(self, request, run_id):
        return Response(RunOutputSerializer(self.get_run(request, run_id)).data)

    @extend_schema(
        operation_id="runs_cancel",
        summary="Cancel a run",
        description="Steps not yet running are cancelled at once (the run is CANCELLED in the response); "
        "a running step stops within about a second and the run then becomes CANCELLED.",
        responses={202: RunOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND, 409: RUN_FINISHED_ERR},
        tags=["runs"],
    )
    def delete(self, request, run_id):
        run = services.run_cancel(run_id=self.get_run(request, run_id).pk)
        return Response(RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class RunStepsApi(APIView):
    @extend_schema(
        operation_id="runs_steps",
        summary="A run's step timeline",
        description="Every step with every attempt: start, end, status, output or error.",
        responses={200: StepOutputSerializer(many=True), 401: UNAUTHORIZED, 404: NOT_FOUND},
        tags=["runs"],
    )
    def get(self, request, run_id):
        run = get_object_or_404(selectors.run_list(user=request.user), pk=run_id)
        return Response(StepOutputSerializer(selectors.run_steps(run=run), many=True).data)


class RunRetryApi(APIView):
    @extend_schema(
        operation_id="runs_retry",
        summary="Resume a failed flow run from its failed step",
        description="Earlier steps' outputs are kept; the failed task runs again as a new step.",
        request=None,
        responses={
            202: RunOutputSerializer,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: error_response(
                "Not a FAILED flow run.",
                "Run ... is COMPLETED: only a FAILED flow run can be resumed.",
                "not_resumable",
            ),
        },
        tags=["runs"],
    )
    def post(self, request, run_id):
        run = get_object_or_404(selectors.run_list(user=request.user), pk=run_id)
        return Response(RunOutputSerializer(services.run_resume(run_id=run.pk)).data, status=status.HTTP_202_ACCEPTED)


RunMetricsSerializer = inline_serializer(
    name="RunMetrics",
    fields={
        "run_id": serializers.UUIDField(),
        "total": serializers.DictField(
            help_text="calls, failed_calls, refused_calls, prompt/completion/total tokens, cost_usd (a decimal "
            "string), llm_latency_ms and duration_ms for the whole run."
        ),
        "steps": serializers.ListField(
            child=serializers.DictField(), help_text="The same figures per step, with each attempt's duration."
        ),
    },
)


class RunMetricsApi(APIView):
    @extend_schema(
        operation_id="runs_metrics",
        summary="A run's LLM tokens, cost and durations",
        description="Per step and in total: LLM calls (retries included), tokens, cost in USD from the LLM_PRICES "
        "setting, time waiting for providers, and the steps' durations.",
        responses={200: RunMetricsSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
        examples=[
            OpenApiExample(
                "one llm step",
                value={
                    "run_id": EXAMPLE_RUN_ID,
                    "total": {"calls": 1, "total_tokens": 512, "cost_usd": "0.000154", "duration_ms": 1830},
                    "steps": [{"name": "llm", "calls": 1, "total_tokens": 512, "cost_usd": "0.000154"}],
                },
            )
        ],
        tags=["runs"],
    )
    def get(self, request, run_id):
        run = get_object_or_404(selectors.run_list(user=request.user), pk=run_id)
        return Response(selectors.run_metrics(run))
