"""GET /api/v1/health: database, broker and worker-cluster liveness."""

from django.core.cache import cache
from django.db import connection
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.status import Stat
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.llm import breaker_states

TASK_QUEUE_UNJAMMED = "agentrunner:task-queue-unjammed"  # written by runs.engine.unjam

CheckSerializer = inline_serializer(
    name="HealthCheck", fields={"ok": serializers.BooleanField(), "detail": serializers.CharField()}
)
HealthSerializer = inline_serializer(
    name="Health",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "llm_providers": serializers.ListField(
            child=serializers.DictField(),
            help_text="Each LLM provider's circuit breaker (closed, open, half_open); informational, an open "
            "breaker does not make the service unavailable (the gateway fails over).",
        ),
        "checks": inline_serializer(
            name="HealthChecks",
            fields={"database": CheckSerializer, "broker": CheckSerializer, "workers": CheckSerializer},
        ),
    },
)
HEALTHY = {
    "status": "ok",
    "checks": {
        "database": {"ok": True, "detail": "postgresql"},
        "broker": {"ok": True, "detail": "ORM broker, 0 queued"},
        "workers": {"ok": True, "detail": "1 cluster(s) running, 2 worker(s)"},
    },
}


def _check(fn) -> dict:
    try:
        return {"ok": True, "detail": fn()}
    except Exception as exc:  # a health check reports failures, it does not raise them
        return {"ok": False, "detail": f"{exc.__class__.__name__}: {exc}"[:300]}


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.vendor


def _broker() -> str:
    broker = get_broker()
    if not broker.ping():
        raise ConnectionError("broker did not answer")
    return f"{broker.__class__.__name__}, {broker.queue_size()} queued"


def _workers() -> str:
    clusters = [s for s in Stat.get_all() if s.status not in ("Stopped", "Stopping")]
    if not clusters:
        raise RuntimeError("no worker cluster is running (start: python manage.py worker)")
    workers = sum(len(s.workers) for s in clusters)
    detail = f"{len(clusters)} cluster(s) running, {workers} worker(s)"
    short = [f"{s.cluster_id}: {len(s.workers)} of {Conf.WORKERS}" for s in clusters if len(s.workers) < Conf.WORKERS]
    if short:
        detail += f"; fewer workers than configured ({', '.join(short)})"
    # A cluster stuck behind a killed idle worker (django-q2 issue #23) is freed by its workers (runs/engine/unjam.py).
    unjammed = cache.get(TASK_QUEUE_UNJAMMED)
    if unjammed:
        detail += f"; last freed a task queue stuck behind a killed worker at {unjammed['at']} on {unjammed['host']}"
    return detail


class HealthApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(
        operation_id="health",
        summary="Liveness of database, broker and workers",
        description="200 when all three are up, 503 otherwise. No authentication.",
        responses={
            200: OpenApiResponse(HealthSerializer, examples=[OpenApiExample("healthy", value=HEALTHY)]),
            503: OpenApiResponse(HealthSerializer, description="At least one check failed."),
        },
        tags=["health"],
    )
    def get(self, request):
        checks = {"database": _check(_database), "broker": _check(_broker), "workers": _check(_workers)}
        ok = all(c["ok"] for c in checks.values())
        try:
            providers = breaker_states()
        except Exception:  # the database check above reports why
            providers = []
        body = {"status": "ok" if ok else "unavailable", "checks": checks, "llm_providers": providers}
        return Response(body, status=200 if ok else 503)
