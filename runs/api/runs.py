"""Runs: list, start, read, cancel them; retry or dismiss failed ones (`/runs`, `/runs/{id}`, `/runs/{id}/retry`,
`/runs/{id}/dismiss`)."""

import django_filters
from django_filters.widgets import BooleanWidget
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import (
    NOT_FOUND,
    RATE_LIMITED,
    RETRY_AFTER,
    UNAUTHORIZED,
    CachedFieldsMixin,
    ErrorSerializer,
    IdFilter,
    IsoDateTimeFilter,
    JSONObjectField,
    error_response,
)
from agentrunner.logging import current_request_id
from agentrunner.models import Role
from agentrunner.ratelimit import RunStartThrottle
from agentrunner.validators import INT32_MAX
from runs import selectors, services
from runs.api.examples import BAD_RUN_REQUEST, BUSY, EXAMPLE_RUN_ID, RUN_FINISHED_ERR
from runs.exceptions import IdempotencyConflict
from runs.models import DecisionKind, Run, RunStatus

NOT_FAILED_DETAIL = f"Run {EXAMPLE_RUN_ID} is COMPLETED: only a FAILED run can be retried or dismissed."
ALREADY_DECIDED_DETAIL = f"Run {EXAMPLE_RUN_ID}'s failure was already retried or dismissed."

BlockedBySerializer = inline_serializer(
    name="BlockedBy",
    fields={
        "concurrency_key": serializers.CharField(),
        "runs": serializers.ListField(
            child=serializers.UUIDField(),
            help_text="Your team's runs holding the slots (an agent's slots are shared by every team: another "
            "team's runs count in `slots_used` but are not named).",
        ),
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


class RunResolutionSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=DecisionKind.choices,
        help_text="retry: retried (a flow run resumed in place, an agent run as `new_run`); dismiss: left as it is.",
    )
    reason = serializers.CharField(help_text="Why it was dismissed; empty for a retry.")
    decided_by = serializers.SerializerMethodField(help_text="Username of who decided; null if the account is gone.")
    decided_at = serializers.DateTimeField()
    failed_at = serializers.DateTimeField(help_text="The failure this answers (the run's finished time then).")
    error_code = serializers.CharField(help_text="The run's error code at that failure.")
    new_run = serializers.UUIDField(
        source="new_run_id", allow_null=True, help_text="The new run an agent run's retry started; else null."
    )

    class Meta:
        ref_name = "RunResolution"

    def get_decided_by(self, decision) -> str | None:
        return decision.decided_by.get_username() if decision.decided_by_id else None


class RunOutputSerializer(CachedFieldsMixin, serializers.ModelSerializer):
    flow = serializers.SerializerMethodField(
        help_text="The flow version this run executes (slug null for an inline flow); null for a single-agent run."
    )
    blocked_by = serializers.SerializerMethodField(
        help_text="While the run waits for a concurrency slot: who holds it, slots used / limit and its "
        "place in the queue. Null otherwise."
    )
    error_class = serializers.SerializerMethodField(help_text=selectors.ERROR_CLASS_HELP)
    needs_attention = serializers.SerializerMethodField(
        help_text="True for a FAILED run that nobody retried or dismissed since it (last) failed: the failed-run "
        "queue (`?status=FAILED&unresolved=1`)."
    )
    resolution = serializers.SerializerMethodField(
        help_text="The decision that answers this run (retried or dismissed, by whom, when, why); null when "
        "none does, e.g. a retried flow run that failed again."
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
            "error_class",
            "needs_attention",
            "resolution",
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

    def _latest_decision(self, run):
        page = self.context.get("resolutions")  # a list reads its whole page's decisions at once
        if page is not None:
            return page.get(run.pk)
        read = self.context.setdefault("resolution_read", {})  # one run: read once for the two fields
        if run.pk not in read:
            read[run.pk] = selectors.run_resolutions(runs=[run]).get(run.pk)
        return read[run.pk]

    def get_error_class(self, run) -> str:
        return selectors.error_class(run.error_code)

    def get_needs_attention(self, run) -> bool:
        return selectors.run_needs_attention(run=run, latest=self._latest_decision(run))

    @extend_schema_field(RunResolutionSerializer(allow_null=True))
    def get_resolution(self, run):
        decision = selectors.run_resolution(run=run, latest=self._latest_decision(run))
        return None if decision is None else RunResolutionSerializer(decision).data

    @extend_schema_field(BlockedBySerializer)
    def get_blocked_by(self, run):
        page = self.context.get("blocked_by")  # a list computes it for its whole page at once
        return page.get(run.pk) if page is not None else selectors.run_blocked_by(run=run)


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


class RunFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=RunStatus.choices)
    agent_type = django_filters.CharFilter()
    flow = django_filters.CharFilter(field_name="flow_version__flow__slug", help_text="A flow's slug.")
    user_id = django_filters.UUIDFilter()
    schedule = IdFilter(field_name="schedule_id", help_text="A schedule's id: the runs it started.")
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    unresolved = django_filters.BooleanFilter(
        method="filter_unresolved",
        widget=BooleanWidget,  # 1/0 and true/false (Django's own widget reads "1" as unknown)
        help_text="1/true: only the failed-run queue, FAILED runs nobody retried or dismissed since they (last) "
        "failed; 0/false: every other run.",
    )

    class Meta:
        model = Run
        fields = [
            "status",
            "agent_type",
            "flow",
            "user_id",
            "schedule",
            "created_after",
            "created_before",
            "unresolved",
        ]

    def filter_unresolved(self, queryset, name, value):
        if value is None:
            return queryset
        return selectors.runs_needing_attention(queryset) if value else selectors.runs_not_needing_attention(queryset)


class RunListApi(generics.ListAPIView):
    serializer_class = RunOutputSerializer
    filterset_class = RunFilter

    queryset = Run.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.run_list(team=self.request.acting.team)

    def get_serializer(self, *args, **kwargs):
        if kwargs.get("many") and args:  # a page of runs: why each waits and its decision, in a few queries for all
            context = kwargs.setdefault("context", self.get_serializer_context())
            context["blocked_by"] = selectors.runs_blocked_by(runs=args[0])
            context["resolutions"] = selectors.run_resolutions(runs=args[0])
        return super().get_serializer(*args, **kwargs)

    @extend_schema(
        operation_id="runs_list",
        summary="List runs",
        description="The team's runs, newest first: every member of a team sees all its runs. "
        "`?status=FAILED&unresolved=1` is the failed-run queue: the failures nobody retried or dismissed yet "
        "(`POST /runs/{id}/retry`, `POST /runs/{id}/dismiss`), each with its `error_code` and `error_class`.",
        responses={
            200: RunOutputSerializer(many=True),
            400: error_response("Bad filter.", "Invalid request.", "invalid"),
            401: UNAUTHORIZED,
        },
        tags=["runs"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def is_idempotent_replay(request) -> bool:
    """Whether the request's `idempotency_key` names a run its user already started: answering it starts nothing.

    RunStartThrottle neither counts nor refuses such a request (the unique (created_by, idempotency_key) index
    answers this).
    """
    data = request.data
    key = data.get("idempotency_key") if hasattr(data, "get") else None
    if not isinstance(key, str) or not key:
        return False
    return selectors.run_idempotency_key_used(user=request.user, key=key)


class RunStartApi(APIView):
    throttle_classes = [RunStartThrottle]
    write_role = Role.RUNNER

    def is_replay(self, request) -> bool:
        return is_idempotent_replay(request)

    @extend_schema(
        operation_id="runs_create",
        summary="Start a run",
        description="202 with the new run. With an `idempotency_key` already used by you, 200 with that run "
        "(409 if the agent, input or team differ). Needs the runner role; `flow` is a slug of the team's flows. "
        "Counts against the run-start limits of the team and of you (429 over either), except a reused "
        "`idempotency_key`.",
        request=RunCreateInputSerializer,
        parameters=[RETRY_AFTER],
        responses={
            202: RunOutputSerializer,
            200: OpenApiResponse(RunOutputSerializer, description="Existing run for this idempotency key."),
            400: BAD_RUN_REQUEST,
            401: UNAUTHORIZED,
            404: error_response(
                "No flow with that slug, or one you may not see.", "No flow 'claim-intake'.", "not_found"
            ),
            409: BUSY,
            429: RATE_LIMITED,
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
            "team": request.acting.team,
            "request_id": current_request_id(),
        }
        if "flow" in values:
            version = selectors.flow_version_current(values["flow"], team=request.acting.team)
            run, created = services.flow_run_create(version=version, **common)
            same = run.flow_version_id is not None and run.flow_version.flow_id == version.flow_id
        else:
            run, created = services.run_create(agent_type=values["agent_type"], **common)
            same = run.agent_type == values["agent_type"]
        if not created and (not same or run.input != values["input"] or run.team_id != request.acting.team.pk):
            raise IdempotencyConflict()
        return Response(
            RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        )


def run_get(request, run_id) -> Run:
    """The run, if it is the acting team's; the same 404 otherwise."""
    return selectors.run_get(team=request.acting.team, run_id=run_id)


class RunDetailApi(APIView):
    @extend_schema(
        operation_id="runs_retrieve",
        summary="Get a run",
        responses={200: RunOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
        tags=["runs"],
    )
    def get(self, request, run_id):
        return Response(RunOutputSerializer(run_get(request, run_id)).data)


class RunCancelApi(APIView):
    write_role = Role.RUNNER

    @extend_schema(
        operation_id="runs_cancel",
        summary="Cancel a run",
        description="Steps not yet running are cancelled at once (the run is CANCELLED in the response); "
        "a running step stops within about a second and the run then becomes CANCELLED.",
        responses={202: RunOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND, 409: RUN_FINISHED_ERR},
        tags=["runs"],
    )
    def delete(self, request, run_id):
        run = services.run_cancel(run_id=run_get(request, run_id).pk)
        return Response(RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class RunRetryApi(APIView):
    throttle_classes = [RunStartThrottle]  # a retry starts work again, as a start does
    write_role = Role.RUNNER

    @extend_schema(
        operation_id="runs_retry",
        summary="Retry a failed run",
        description="A FAILED flow run resumes from its failed step (earlier steps' outputs are kept; the failed "
        "task runs again as a new step). A FAILED agent run starts again as a new run with the same agent, input, "
        "user and token budget, whose `rerun_of` is this run; the failed run keeps its error and attempts as they "
        "were. Either way the decision is kept (the failed run's `resolution`) and the run leaves the failed-run "
        "queue; a resumed flow run that fails again, or the new run failing, is back in it. The answer is the run "
        "to follow: the same run (flow) or the new one (agent). Needs the runner role in the run's team; counts "
        "against the run-start limits.",
        request=None,
        parameters=[RETRY_AFTER],
        responses={
            202: OpenApiResponse(
                RunOutputSerializer, description="The run carrying the retry: the resumed flow run, or the new run."
            ),
            400: BAD_RUN_REQUEST,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: OpenApiResponse(
                ErrorSerializer,
                description="Not FAILED (`not_resumable`), already retried or dismissed (`already_decided`), or "
                "the agent is at its concurrency limit (`agent_busy`). Nothing was started or decided.",
                examples=[
                    OpenApiExample(
                        "not failed",
                        value={"detail": NOT_FAILED_DETAIL, "code": "not_resumable"},
                        response_only=True,
                        status_codes=["409"],
                    ),
                    OpenApiExample(
                        "already decided",
                        value={"detail": ALREADY_DECIDED_DETAIL, "code": "already_decided"},
                        response_only=True,
                        status_codes=["409"],
                    ),
                ],
            ),
            429: RATE_LIMITED,
        },
        tags=["runs"],
    )
    def post(self, request, run_id):
        decision = services.run_retry(
            run_id=run_get(request, run_id).pk, decided_by=request.user, request_id=current_request_id()
        )
        carrier = decision.new_run if decision.new_run_id else decision.run
        carrier.refresh_from_db()
        return Response(RunOutputSerializer(carrier).data, status=status.HTTP_202_ACCEPTED)


class RunDismissInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=2000, help_text="Why nobody will retry it (kept with the decision, shown on the run)."
    )

    class Meta:
        ref_name = "RunDismissRequest"


class RunDismissApi(APIView):
    write_role = Role.RUNNER

    @extend_schema(
        operation_id="runs_dismiss",
        summary="Dismiss a failed run",
        description="Take a FAILED run out of the failed-run queue without retrying it, saying why. The decision "
        "is kept (the run's `resolution`: who, when, why); the run itself is not changed. Needs the runner role in "
        "the run's team.",
        request=RunDismissInputSerializer,
        responses={
            200: RunOutputSerializer,
            400: error_response(
                "No reason, or an empty one.",
                "Invalid input: reason: This field is required.",
                "invalid",
                {"reason": ["This field is required."]},
            ),
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: OpenApiResponse(
                ErrorSerializer,
                description="Not FAILED (`not_failed`), or already retried or dismissed (`already_decided`).",
                examples=[
                    OpenApiExample(
                        "not failed",
                        value={"detail": NOT_FAILED_DETAIL, "code": "not_failed"},
                        response_only=True,
                        status_codes=["409"],
                    ),
                    OpenApiExample(
                        "already decided",
                        value={"detail": ALREADY_DECIDED_DETAIL, "code": "already_decided"},
                        response_only=True,
                        status_codes=["409"],
                    ),
                ],
            ),
        },
        examples=[
            OpenApiExample(
                "a known outage",
                request_only=True,
                value={"reason": "The insurer's API was down on 3 Dec; the claim was entered by hand."},
            )
        ],
        tags=["runs"],
    )
    def post(self, request, run_id):
        run = run_get(request, run_id)
        data = RunDismissInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.run_dismiss(run_id=run.pk, reason=data.validated_data["reason"], decided_by=request.user)
        run.refresh_from_db()
        return Response(RunOutputSerializer(run).data)
