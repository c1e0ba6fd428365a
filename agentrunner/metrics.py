"""GET /metrics: the Prometheus text format, for every web and worker process at once.

Two kinds of series, each correct with any number of gunicorn workers and `qcluster` processes:

- **From the database, at scrape time** (`DatabaseCollector`): runs, steps, queues, LLM calls, breakers,
  budgets and live workers are read with a few aggregate queries when Prometheus scrapes. The database is
  the record every process writes, so any web process answers for all of them, and a worker that dies
  loses nothing. Counters (`*_total`) count rows, and never go down: deleted runs (retention, the admin) and
  LLM calls (retention) are counted on from `runs.DeletedRuns` and `DeletedLLMCalls`, written with the
  delete. Rows deleted outside the product still read as a counter reset. Duration histograms cover only what started
  in the last METRICS_WINDOW_SECONDS (bounded cost): they are windowed, so read them as they stand
  (`histogram_quantile(0.95, sum by (le) (agent_run_duration_seconds_bucket))`), not through `rate()`.
- **HTTP, per request** (`MetricsMiddleware`): counted in the process that served the request. Under
  gunicorn, prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py) keeps
  each worker's values in a file and /metrics sums the files of all workers, dead ones included, so one
  scrape of any worker is the whole server. Without it (runserver, tests) the values are this process's.

Access (`metrics_view`): with METRICS_TOKEN set, `Authorization: Bearer <token>`; unset, loopback clients only.
"""

from __future__ import annotations

import hmac
import os
import time
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

# Runs and steps: from a tenth of a second (a fake agent) to an hour (STEP_MAX_SECONDS).
RUN_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# One LLM request: LLM_TIMEOUT_SECONDS is 60 s by default.
LLM_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
HTTP_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# runs.models.RUN_FINISHED and the step states, by value: agentrunner imports no app (a test checks they agree).
RUN_FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED")
STEP_QUEUED, STEP_WAITING, STEP_RUNNING = "QUEUED", "WAITING", "RUNNING"
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
NO_VIEW = "unresolved"  # a request no URL pattern matched (a 404, or a static file served by whitenoise)
LOOPBACK = ("127.0.0.1", "::1")

# The HTTP series live in a registry of their own: /metrics exposes them next to the database series,
# from this process (the registry) or from every process (the multiprocess files).
HTTP_REGISTRY = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter(
    "http_requests", "HTTP requests answered, by URL name and status.", ["view", "status"], registry=HTTP_REGISTRY
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request (to its headers when streamed), by URL name.",
    ["view"],
    buckets=HTTP_BUCKETS_SECONDS,
    registry=HTTP_REGISTRY,
)


class MetricsMiddleware:
    """Count and time every request, labelled by its URL pattern's name (bounded), never its path."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match is not None else NO_VIEW
        HTTP_REQUESTS.labels(view=view, status=str(response.status_code)).inc()
        HTTP_DURATION.labels(view=view).observe(time.perf_counter() - started)
        return response


def _span(start: str, end: str):
    return ExpressionWrapper(F(end) - F(start), output_field=DurationField())


def _bucket_counts(field: str, bounds, to_value) -> dict:
    """Aggregates: one conditional count per bucket (cumulative, as Prometheus wants), the count and the sum."""
    counts = {f"le{i}": Count("pk", filter=Q(**{f"{field}__lte": to_value(b)})) for i, b in enumerate(bounds)}
    return {**counts, "n": Count("pk"), "total": Sum(field)}


def _histogram(family: HistogramMetricFamily, labels: list[str], row: dict, bounds, seconds) -> None:
    buckets = [(str(float(b)), row[f"le{i}"]) for i, b in enumerate(bounds)] + [("+Inf", row["n"])]
    family.add_metric(labels, buckets, sum_value=seconds(row["total"]))


def run_agent_label(row: dict) -> str:
    """A run's `agent` label: its agent type, or `flow:<slug>` for a flow run (`flow:inline` from /flow/execute)."""
    if row["agent_type"]:
        return row["agent_type"]
    return f"flow:{row['flow_version__flow__slug'] or 'inline'}"


def _added_up(rows, key) -> dict:
    """Rows of bucket counts added up by `key(row)`."""
    added: dict = {}
    for row in rows:
        counts = {name: value for name, value in row.items() if name == "n" or name == "total" or name.startswith("le")}
        if (k := key(row)) in added:
            counts = {name: (added[k][name] or 0) + (value or 0) for name, value in counts.items()}
        added[k] = counts
    return added


def _as_seconds(value) -> float:
    if value is None:
        return 0.0
    return value.total_seconds() if isinstance(value, timedelta) else float(value) / 1e6  # SQLite: microseconds


class DatabaseCollector:
    """The series computed from the database at scrape time (module docstring)."""

    def collect(self):
        now = timezone.now()
        since = now - timedelta(seconds=float(settings.METRICS_WINDOW_SECONDS))
        yield from self._runs(since)
        yield from self._steps(now, since)
        yield from self._llm(since)
        yield from self._breakers_and_budgets(now)
        yield self._workers()

    def _runs(self, since):
        Run = apps.get_model("runs", "Run")  # noqa: N806
        finished = Run.objects.filter(status__in=RUN_FINISHED).order_by()
        total = CounterMetricFamily(
            "agent_runs", "Runs finished, by agent (or flow:<slug>) and final status.", labels=["agent", "status"]
        )
        counts: dict[tuple[str, str], int] = {}
        for row in finished.values("agent_type", "flow_version__flow__slug", "status").annotate(n=Count("pk")):
            key = (run_agent_label(row), row["status"])
            counts[key] = counts.get(key, 0) + row["n"]
        deleted = CounterMetricFamily(
            "agent_runs_deleted", "Finished runs deleted (retention, the admin), still counted in agent_runs."
        )
        deleted_sum = 0
        for agent, status, n in apps.get_model("runs", "DeletedRuns").objects.values_list("agent", "status", "count"):
            counts[(agent, status)] = counts.get((agent, status), 0) + n
            deleted_sum += n
        deleted.add_metric([], deleted_sum)
        for key, n in sorted(counts.items()):
            total.add_metric(list(key), n)
        yield total
        yield deleted

        durations = HistogramMetricFamily(
            "agent_run_duration_seconds",
            "Start to end of finished runs created in the last METRICS_WINDOW_SECONDS.",
            labels=["agent", "status"],
        )
        rows = (
            finished.filter(created_at__gte=since, started_at__isnull=False, finished_at__isnull=False)
            .alias(span=_span("started_at", "finished_at"))
            .values("agent_type", "flow_version__flow__slug", "status")
            .annotate(**_bucket_counts("span", RUN_BUCKETS_SECONDS, lambda b: timedelta(seconds=b)))
        )
        # Two rows may share labels (a flow slug used by two teams): added up first.
        for key, row in sorted(_added_up(rows, lambda r: (run_agent_label(r), r["status"])).items()):
            _histogram(durations, list(key), row, RUN_BUCKETS_SECONDS, _as_seconds)
        yield durations

    def _steps(self, now, since):
        Step = apps.get_model("runs", "Step")  # noqa: N806
        steps = Step.objects.order_by()
        durations = HistogramMetricFamily(
            "agent_step_duration_seconds",
            "Start to end of finished steps of runs created in the last METRICS_WINDOW_SECONDS.",
            labels=["agent"],
        )
        rows = (
            steps.filter(run__created_at__gte=since, started_at__isnull=False, finished_at__isnull=False)
            .alias(span=_span("started_at", "finished_at"))
            .values("agent_type")
            .annotate(**_bucket_counts("span", RUN_BUCKETS_SECONDS, lambda b: timedelta(seconds=b)))
        )
        for row in sorted(rows, key=lambda r: r["agent_type"]):
            _histogram(durations, [row["agent_type"]], row, RUN_BUCKETS_SECONDS, _as_seconds)
        yield durations

        # Each condition is that of a partial index of Step (step_queued_dispatched, step_waiting_fifo,
        # step_running_lease), so these counts read those small indexes, never the whole table.
        queued = Q(status=STEP_QUEUED, dispatched_at__isnull=False)
        waiting = Q(status=STEP_WAITING, queued_at__isnull=False)
        running = Q(status=STEP_RUNNING, lease_expires_at__isnull=False)
        depth = GaugeMetricFamily(
            "agent_queue_depth",
            "Steps waiting: queued (sent to the broker, not yet claimed) or waiting (for a concurrency slot).",
            labels=["agent", "state"],
        )
        for state, condition in (("queued", queued), ("waiting", waiting)):
            for row in steps.filter(condition).values("agent_type").annotate(n=Count("pk")).order_by("agent_type"):
                depth.add_metric([row["agent_type"], state], row["n"])
        yield depth
        in_flight = GaugeMetricFamily("agent_steps_in_flight", "Steps running now, by agent.", labels=["agent"])
        for row in steps.filter(running).values("agent_type").annotate(n=Count("pk")).order_by("agent_type"):
            in_flight.add_metric([row["agent_type"]], row["n"])
        yield in_flight
        oldest = steps.filter(queued).aggregate(at=Min("dispatched_at"))["at"]
        yield GaugeMetricFamily(
            "agent_queue_lag_seconds",
            "Age of the oldest step sent to the broker and not yet claimed by a worker (0 when none).",
            value=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        )

    def _llm(self, since):
        LLMCall = apps.get_model("agentrunner", "LLMCall")  # noqa: N806
        calls = LLMCall.objects.order_by()
        requests = CounterMetricFamily(
            "llm_requests",
            "LLM gateway call attempts, by provider (`gateway` when a budget refused it before any provider), "
            "model and outcome (success, error, refused_budget, breaker_open).",
            labels=["provider", "model", "outcome"],
        )
        tokens = CounterMetricFamily(
            "llm_tokens", "LLM tokens used, by provider and kind.", labels=["provider", "kind"]
        )
        cost = CounterMetricFamily("llm_cost_usd", "LLM cost in USD (LLM_PRICES), by provider.", labels=["provider"])
        live = calls.values_list("provider", "model", "outcome").annotate(
            Count("pk"), Sum("prompt_tokens"), Sum("completion_tokens"), Sum("cost_usd")
        )
        deleted = apps.get_model("agentrunner", "DeletedLLMCalls").objects.values_list(  # counted on (retention)
            "provider", "model", "outcome", "count", "prompt_tokens", "completion_tokens", "cost_usd"
        )
        counts: dict[tuple[str, str, str], int] = {}
        by_provider: dict[str, list] = {}
        for provider, model, outcome, n, prompt, completion, usd in [*live, *deleted]:
            provider = provider or "gateway"
            counts[(provider, model, outcome)] = counts.get((provider, model, outcome), 0) + n
            sums = by_provider.setdefault(provider, [0, 0, 0.0])
            sums[0] += prompt or 0
            sums[1] += completion or 0
            sums[2] += float(usd or 0)
        for labels, n in sorted(counts.items()):
            requests.add_metric(list(labels), n)
        for provider, (prompt, completion, usd) in by_provider.items():
            tokens.add_metric([provider, "prompt"], prompt)
            tokens.add_metric([provider, "completion"], completion)
            cost.add_metric([provider], usd)
        yield from (requests, tokens, cost)

        durations = HistogramMetricFamily(
            "llm_request_duration_seconds",
            "Time waiting for a provider (LLMCall.latency_ms), calls sent in the last METRICS_WINDOW_SECONDS.",
            labels=["provider"],
        )
        rows = (
            calls.filter(created_at__gte=since, outcome__in=("success", "error"))
            .values("provider")
            .annotate(**_bucket_counts("latency_ms", LLM_BUCKETS_SECONDS, lambda b: int(b * 1000)))
        )
        for row in sorted(rows, key=lambda r: r["provider"]):
            _histogram(durations, [row["provider"]], row, LLM_BUCKETS_SECONDS, lambda ms: (ms or 0) / 1000)
        yield durations

    def _breakers_and_budgets(self, now):
        from agentrunner.llm.budgets import month_bounds
        from agentrunner.llm.selectors import breaker_states

        breakers = GaugeMetricFamily("llm_circuit_breaker_state", "0 closed, 1 half-open, 2 open.", labels=["provider"])
        for row in breaker_states():
            breakers.add_metric([row["provider"]], BREAKER_VALUES.get(row["state"], 0))
        yield breakers

        LLMCall = apps.get_model("agentrunner", "LLMCall")  # noqa: N806
        Team = apps.get_model("agentrunner", "Team")  # noqa: N806
        OwnerBudget = apps.get_model("agentrunner", "OwnerBudget")  # noqa: N806
        month = LLMCall.objects.filter(created_at__gte=month_bounds(now)[0]).order_by()
        ratio = GaugeMetricFamily(
            "llm_budget_used_ratio",
            "Tokens used this month (UTC) over the monthly limit, of the most-used team (scope=team) and of the "
            "most-used account (scope=owner) that have a limit; 0 when none has one. 1 or more: exceeded.",
            labels=["scope"],
        )
        for scope, field, model, key, default in (
            ("team", "team_id", Team, "pk", settings.TEAM_MONTHLY_TOKEN_BUDGET),
            ("owner", "owner_id", OwnerBudget, "user_id", settings.LLM_MONTHLY_TOKEN_BUDGET),
        ):
            used = dict(month.filter(**{f"{field}__isnull": False}).values_list(field).annotate(n=Sum("total_tokens")))
            own = dict(
                model.objects.filter(**{f"{key}__in": list(used), "monthly_token_limit__isnull": False})
                .order_by()
                .values_list(key, "monthly_token_limit")
            )
            ratios = [tokens / limit for pk, tokens in used.items() if (limit := int(own.get(pk, default))) > 0]
            ratio.add_metric([scope], max(ratios, default=0.0))
        yield ratio

    def _workers(self):
        from agentrunner.health import running_clusters

        alive = sum(len(stat.workers) for stat in running_clusters())
        return GaugeMetricFamily(
            "workers_alive", "Worker processes of the running qcluster processes (all machines).", value=alive
        )


class _Source:
    """Expose another registry's series through this one (no collect at registration: auto_describe off)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()


def registry() -> CollectorRegistry:
    """The series of one scrape: the database's, and HTTP of every web process (multiprocess) or of this one."""
    scraped = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(scraped)
    else:
        scraped.register(_Source(HTTP_REGISTRY))
    scraped.register(DatabaseCollector())
    return scraped


def _refusal(request) -> HttpResponse | None:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        refused = HttpResponse("Authorization: Bearer <METRICS_TOKEN> required.\n", status=401)
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    if request.META.get("REMOTE_ADDR") in LOOPBACK:
        return None
    return HttpResponse("/metrics answers loopback clients only unless METRICS_TOKEN is set.\n", status=403)


@require_GET
def metrics_view(request):
    """The Prometheus exposition of every series (module docstring)."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(
        generate_latest(registry()), content_type=CONTENT_TYPE_PLAIN_0_0_4
    )  # the text format every Prometheus reads
