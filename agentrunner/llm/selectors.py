"""Reads for the API, the health check and the admin: LLM usage figures, monthly usage, breaker states.

Every function returns plain JSON-serialisable data. Money is a string with 8 decimal places
("0.00012345", as DRF renders decimals): exact, unlike a float.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Q, Sum

from agentrunner.llm.budgets import month_bounds, owner_monthly_limit, team_monthly_limit
from agentrunner.llm.providers import configured_providers
from agentrunner.models import BreakerState, LLMCall, LLMOutcome, ProviderBreaker

SENT = (LLMOutcome.SUCCESS, LLMOutcome.ERROR)


def money(value: Decimal | None) -> str:
    """USD as a string with 8 decimal places, e.g. "0.00012000" (never "0E-8")."""
    return format((value or Decimal(0)).quantize(Decimal("0.00000001")), "f")


def llm_aggregates() -> dict:
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


def llm_block(row: dict | None) -> dict:
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


def _usage(calls, month, *, limit: int, source: str, **who) -> dict:
    start, end = month_bounds(month)
    aggregated = calls.filter(created_at__gte=start, created_at__lt=end).aggregate(**llm_aggregates())
    used = aggregated["total_tokens"]
    return {
        **who,
        "month": start.strftime("%Y-%m"),
        "limit": limit,  # 0 = unlimited
        "limit_source": source,
        "used_tokens": used,
        "remaining_tokens": None if limit == 0 else max(limit - used, 0),
        "used_ratio": None if limit == 0 else round(used / limit, 4),
        **{k: v for k, v in llm_block(aggregated).items() if k != "total_tokens"},
    }


def owner_usage(user, month: date | datetime | None = None) -> dict:
    """Return a user's LLM usage in a calendar month (UTC; default: this month) against their monthly limit.

    `limit_source`: "user" (their own limit) or "default" (LLM_MONTHLY_TOKEN_BUDGET).
    """
    owner_id = getattr(user, "pk", user)
    limit, source = owner_monthly_limit(owner_id)
    return _usage(LLMCall.objects.filter(owner_id=owner_id), month, limit=limit, source=source, owner_id=owner_id)


def team_usage(team, month: date | datetime | None = None) -> dict:
    """Return a team's LLM usage in a calendar month (UTC; default: this month) against its monthly limit.

    `limit_source`: "team" (its own limit) or "default" (TEAM_MONTHLY_TOKEN_BUDGET).
    """
    team_id = getattr(team, "pk", team)
    limit, source = team_monthly_limit(team_id)
    return _usage(LLMCall.objects.filter(team_id=team_id), month, limit=limit, source=source, team_id=team_id)


def team_usage_by_member(team, month: date | datetime | None = None) -> list[dict]:
    """Each account's share of a team's LLM usage in a calendar month (UTC), most tokens first.

    `username` is None for calls whose account was deleted since.
    """
    start, end = month_bounds(month)
    rows = (
        LLMCall.objects.filter(team_id=getattr(team, "pk", team), created_at__gte=start, created_at__lt=end)
        .values("owner__username")
        .annotate(**llm_aggregates())
        .order_by("-total_tokens", "owner__username")
    )
    return [{"username": row["owner__username"], **llm_block(row)} for row in rows]


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
