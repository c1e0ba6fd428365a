"""Reads for the API, the health check and the admin: run metrics, monthly usage, breaker states.

Every function returns plain JSON-serialisable data. Money is a string with 8 decimal places
("0.00012345", as DRF renders decimals): exact, unlike a float.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Q, Sum

from agentrunner.llm.budgets import month_bounds, owner_monthly_limit
from agentrunner.llm.providers import configured_providers
from agentrunner.models import BreakerState, LLMCall, LLMOutcome, ProviderBreaker

SENT = (LLMOutcome.SUCCESS, LLMOutcome.ERROR)


def money(value: Decimal | None) -> str:
    """USD as a string with 8 decimal places, e.g. "0.00012000" (never "0E-8")."""
    return format((value or Decimal(0)).quantize(Decimal("0.00000001")), "f")


def _llm_aggregates() -> dict:
    """The LLM figures every metrics block carries, as aggregate expressions over LLMCall rows."""
    return {
        "calls": Count("id", filter=Q(outcome__in=SENT)),
        "failed_calls": Count("id", filter=Q(outcome=LLMOutcome.ERROR)),
        "refused_calls": Count("id", filter=Q(outcome=LLMOutcome.REFUSED_BUDGET)),
        "prompt_tokens": Sum("prompt_tokens", default=0),
        "completion_tokens": Sum("completion_tokens", default=0),
        "total_tokens": Sum("total_tokens", default=0),
        "cost_usd": Sum("cost_usd", default=Decimal(0)),
        "llm_latency_ms": Sum("latency_ms", default=0),
    }


def _llm_block(row: dict | None) -> dict:
    row = row or {}
    return {
        "calls": row.get("calls", 0),
        "failed_calls": row.get("failed_calls", 0),
        "refused_calls": row.get("refused_calls", 0),
        "prompt_tokens": row.get("prompt_tokens", 0),
        "completion_tokens": row.get("completion_tokens", 0),
        "total_tokens": row.get("total_tokens", 0),
        "cost_usd": money(row.get("cost_usd")),
        "llm_latency_ms": row.get("llm_latency_ms", 0),
    }


def _ms(delta: timedelta | None) -> int | None:
    return None if delta is None else round(delta.total_seconds() * 1000)


def run_metrics(run) -> dict:
    """Return a run's LLM usage and cost, per step and in total, with each step's duration from its attempts.

    `calls` counts the requests sent to providers (retries included), `failed_calls` those that failed,
    `refused_calls` those a budget refused. A step's `duration_ms` adds up its finished attempts. Three
    queries whatever the number of steps and calls.
    """
    from runs.models import Step  # runs depends on nothing of ours; imported here to keep it that way

    per_step = {
        row["step_id"]: row
        for row in LLMCall.objects.filter(run=run).values("step_id").order_by().annotate(**_llm_aggregates())
    }
    steps = []
    totals = {key: 0 for key in ("calls", "failed_calls", "refused_calls", "prompt_tokens", "completion_tokens")}
    totals.update(total_tokens=0, llm_latency_ms=0, cost_usd=Decimal(0))
    for row in per_step.values():
        for key in totals:
            totals[key] += row[key]
    run_duration_ms = 0
    for step in Step.objects.filter(run=run).prefetch_related("attempt_set").order_by("sequence"):
        attempts = [
            {"number": a.number, "status": a.status, "duration_ms": _ms(a.duration)}
            for a in sorted(step.attempt_set.all(), key=lambda a: a.number)
        ]
        duration_ms = sum(a["duration_ms"] for a in attempts if a["duration_ms"] is not None)
        run_duration_ms += duration_ms
        steps.append(
            {
                "step_id": step.pk,
                "name": step.name,
                "sequence": step.sequence,
                "agent_type": step.agent_type,
                "status": step.status,
                "duration_ms": duration_ms,
                "attempts": attempts,
                **_llm_block(per_step.get(step.pk)),
            }
        )
    return {
        "run_id": str(run.pk),
        "total": {**_llm_block(totals), "duration_ms": run_duration_ms},
        "steps": steps,
    }


def owner_usage(user, month: date | datetime | None = None) -> dict:
    """Return a user's LLM usage in a calendar month (UTC; default: this month) against their monthly limit."""
    owner_id = getattr(user, "pk", user)
    start, end = month_bounds(month)
    aggregated = LLMCall.objects.filter(owner_id=owner_id, created_at__gte=start, created_at__lt=end).aggregate(
        **_llm_aggregates()
    )
    limit, source = owner_monthly_limit(owner_id)
    used = aggregated["total_tokens"]
    return {
        "owner_id": owner_id,
        "month": start.strftime("%Y-%m"),
        "limit": limit,  # 0 = unlimited
        "limit_source": source,  # "user" (their own limit) or "default" (LLM_MONTHLY_TOKEN_BUDGET)
        "used_tokens": used,
        "remaining_tokens": None if limit == 0 else max(limit - used, 0),
        "used_ratio": None if limit == 0 else round(used / limit, 4),
        **{k: v for k, v in _llm_block(aggregated).items() if k != "total_tokens"},
    }


def breaker_states() -> list[dict]:
    """Return every provider's breaker: those configured, in failover order, then any others on record."""
    rows = {row.provider: row for row in ProviderBreaker.objects.all()}
    configured = [p.name for p in configured_providers()]
    reset = timedelta(seconds=float(settings.LLM_BREAKER_RESET_SECONDS))
    states = []
    for name in configured + sorted(set(rows) - set(configured)):
        row = rows.get(name)
        state = row.state if row else BreakerState.CLOSED
        opened_at = row.opened_at if row else None
        states.append(
            {
                "provider": name,
                "configured": name in configured,
                "state": str(state),
                "consecutive_failures": row.consecutive_failures if row else 0,
                "opened_at": opened_at.isoformat() if opened_at else None,
                "probe_due_at": (opened_at + reset).isoformat() if opened_at and state == BreakerState.OPEN else None,
                "updated_at": row.updated_at.isoformat() if row else None,
            }
        )
    return states
