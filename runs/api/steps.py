"""A run's step timeline (`/runs/{id}/steps`) and its LLM figures (`/runs/{id}/metrics`)."""

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    inline_serializer,
)
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import (
    NOT_FOUND,
    UNAUTHORIZED,
)
from runs import selectors
from runs.api.examples import EXAMPLE_RUN_ID
from runs.api.runs import run_get
from runs.models import Step


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


class RunStepsApi(generics.ListAPIView):
    serializer_class = StepOutputSerializer

    queryset = Step.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.run_steps(run=run_get(self.request, self.kwargs["run_id"]))

    @extend_schema(
        operation_id="runs_steps",
        summary="A run's step timeline",
        description="Every step with every attempt: start, end, status, output or error.",
        responses={200: StepOutputSerializer(many=True), 401: UNAUTHORIZED, 404: NOT_FOUND},
        tags=["runs"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


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
        run = run_get(request, run_id)
        return Response(selectors.run_metrics(run))
