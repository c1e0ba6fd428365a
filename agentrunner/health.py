"""Health: the full report (GET /api/v1/health) and the two probes (GET /health/live, /health/ready).

The report is computed at most once per HEALTH_CACHE_SECONDS in each web process (default 2 s): a probe or
a dashboard polling it many times a second costs one set of checks, not one per request.

The probes are for orchestrators, by role: `/health/live` says only that this process answers (restart it
when it does not), `/health/ready` that it can serve (database and broker answer; the worker clusters too
with `?workers=1`). A web server whose workers are down is alive and ready: restarting it would not help.
"""

import threading
import time
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.status import Stat
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.cachekeys import TASK_QUEUE_UNJAMMED
from agentrunner.llm import breaker_states

CheckSerializer = inline_serializer(
    name="HealthCheck", fields={"ok": serializers.BooleanField(), "detail": serializers.CharField()}
)
HealthSerializer = inline_serializer(
    name="Health",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "checked_at": serializers.DateTimeField(
            help_text="When the checks ran: the report is reused for HEALTH_CACHE_SECONDS (default 2 s)."
        ),
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
    "checked_at": "2026-12-03T09:30:00.123456Z",
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


def _broker_ping() -> str:
    broker = get_broker()
    if not broker.ping():
        raise ConnectionError("broker did not answer")
    return broker.__class__.__name__


STOPPED = ("Stopped", "Stopping")
# django-q2 keeps a cluster's status for 3 s, renewed by its sentinel every half second; a sentinel busy for
# longer (replacing a killed worker on a loaded machine) lets it lapse although the workers run. A cluster this
# process saw running is still counted for this long after its status lapsed; one that said it stops is not.
STATUS_LAPSE_SECONDS = 6.0
_last_seen_running: dict[str, float] = {}  # cluster id -> _clock() when it was last seen running
_clock = time.monotonic


def running_clusters(stats: list[Stat] | None = None) -> list[Stat]:
    """The worker clusters django-q2 reports as running now (not stopping or stopped)."""
    return [stat for stat in (Stat.get_all() if stats is None else stats) if stat.status not in STOPPED]


def _lapsed_clusters(stats: list[Stat]) -> list[str]:
    """Remember the running clusters in `stats`; return those seen running lately whose status has lapsed."""
    now = _clock()
    reported = set()
    for stat in stats:
        reported.add(str(stat.cluster_id))
        if stat.status in STOPPED:
            _last_seen_running.pop(str(stat.cluster_id), None)
        else:
            _last_seen_running[str(stat.cluster_id)] = now
    for cluster_id, seen in list(_last_seen_running.items()):
        if now - seen > STATUS_LAPSE_SECONDS:
            _last_seen_running.pop(cluster_id, None)
    return [cluster_id for cluster_id in _last_seen_running if cluster_id not in reported]


def _workers() -> str:
    stats = Stat.get_all()
    clusters = running_clusters(stats)
    lapsed = _lapsed_clusters(stats)
    if clusters:
        workers = sum(len(s.workers) for s in clusters)
        detail = f"{len(clusters)} cluster(s) running, {workers} worker(s)"
        short = [
            f"{s.cluster_id}: {len(s.workers)} of {Conf.WORKERS}" for s in clusters if len(s.workers) < Conf.WORKERS
        ]
        if short:
            detail += f"; fewer workers than configured ({', '.join(short)})"
    elif lapsed:
        detail = f"{len(lapsed)} cluster(s) running a few seconds ago, whose status has lapsed (a busy sentinel)"
    else:
        raise RuntimeError("no worker cluster is running (start: python manage.py worker)")
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
        body = _report()
        return Response(body, status=200 if body["status"] == "ok" else 503)


def checks() -> dict:
    """Database, broker and workers, checked now (uncached)."""
    return {"database": _check(_database), "broker": _check(_broker), "workers": _check(_workers)}


_cached: tuple[float, dict] | None = None
_lock = threading.Lock()


def _report() -> dict:
    """The health report, computed at most once per HEALTH_CACHE_SECONDS in this process (0: every time)."""
    global _cached
    ttl = settings.HEALTH_CACHE_SECONDS
    with _lock:  # one thread computes; the others of this process wait for its answer
        if _cached is not None and time.monotonic() - _cached[0] < ttl:
            return _cached[1]
        started = time.monotonic()
        checked = checks()
        try:
            providers = breaker_states()
        except Exception:  # the database check above reports why
            providers = []
        body = {
            "status": "ok" if all(c["ok"] for c in checked.values()) else "unavailable",
            "checked_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "checks": checked,
            "llm_providers": providers,
        }
        _cached = (started, body)
        return body


# Plain Django views, outside the API (no authentication, throttling or schema): a probe must stay cheap.
@never_cache
@require_GET
def live(request):
    """GET /health/live: 200 whenever this process answers; nothing else is checked (no database query)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request):
    """GET /health/ready: 200 when the database and the broker answer (and a worker cluster runs, if `?workers=1`)."""
    checked = {"database": _check(_database), "broker": _check(_broker_ping)}
    if request.GET.get("workers") in ("1", "true", "yes"):
        checked["workers"] = _check(_workers)
    ok = all(c["ok"] for c in checked.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checked}, status=200 if ok else 503)
