"""Token budgets: a run's (Run.token_budget) and its owner's per calendar month (UTC).

Before a request the gateway estimates its size (prompt characters / 4 + max_tokens) and refuses it if
that would take a budget past its limit. Afterwards it counts the real usage: a call that crossed a limit
still returns its answer (the tokens are spent), and the next call is refused. Concurrent calls of one
owner are not serialised: each checks the usage recorded so far, so together they may overshoot a limit
by the calls in flight; the next call is then refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Sum
from django.utils import timezone

from agentrunner.models import LLMCall, OwnerBudget

log = structlog.get_logger("agentrunner.llm")

RUN = "run"
OWNER_MONTHLY = "owner_monthly"


@dataclass(frozen=True)
class Budget:
    kind: str  # RUN or OWNER_MONTHLY
    limit: int
    used: int  # tokens recorded before this request


def month_bounds(month: date | datetime | None = None) -> tuple[datetime, datetime]:
    """Return [start, end) of the calendar month (UTC) holding `month` (default: now)."""
    if month is None:
        month = timezone.now()
    if isinstance(month, datetime) and month.tzinfo is not None:
        month = month.astimezone(UTC)
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def owner_monthly_limit(owner_id: int) -> tuple[int, str]:
    """Return (limit, source): the user's own limit if set, else LLM_MONTHLY_TOKEN_BUDGET; 0 = unlimited."""
    own = OwnerBudget.objects.filter(user_id=owner_id).values_list("monthly_token_limit", flat=True).first()
    if own is not None:
        return int(own), "user"
    return int(settings.LLM_MONTHLY_TOKEN_BUDGET), "default"


def run_tokens_used(run_id) -> int:
    return LLMCall.objects.filter(run_id=run_id).aggregate(used=Sum("total_tokens", default=0))["used"]


def owner_tokens_used(owner_id: int, *, since: datetime) -> int:
    calls = LLMCall.objects.filter(owner_id=owner_id, created_at__gte=since)
    return calls.aggregate(used=Sum("total_tokens", default=0))["used"]


def budgets_applying(*, run_id, owner_id, token_budget: int | None) -> list[Budget]:
    """Return the budgets with a limit that apply to a request, with the tokens used so far."""
    budgets = []
    if token_budget is not None and run_id is not None:
        budgets.append(Budget(RUN, int(token_budget), run_tokens_used(run_id)))
    if owner_id is not None:
        limit, _ = owner_monthly_limit(owner_id)
        if limit > 0:
            start, _ = month_bounds()
            budgets.append(Budget(OWNER_MONTHLY, limit, owner_tokens_used(owner_id, since=start)))
    return budgets


def first_refusal(budgets: list[Budget], estimate: int) -> Budget | None:
    for budget in budgets:
        if budget.used + estimate > budget.limit:
            return budget
    return None


def refusal_message(budget: Budget, *, estimate: int, run_id, owner_id) -> str:
    if budget.kind == RUN:
        subject = f"The run's token budget ({budget.limit:,} tokens, run {run_id})"
    else:
        username = get_user_model().objects.filter(pk=owner_id).values_list("username", flat=True).first()
        month = month_bounds()[0].strftime("%Y-%m")
        subject = f"The monthly token budget of user {username or owner_id} ({budget.limit:,} tokens in {month} UTC)"
    return (
        f"{subject} does not allow this LLM call: {budget.used:,} of {budget.limit:,} tokens used, "
        f"the call may need up to {estimate:,} more."
    )


def warn_on_crossing(budgets: list[Budget], *, spent: int, run_id, owner_id) -> None:
    """Log `llm_budget_warning` when this request's tokens took a budget across the warning ratio (once)."""
    ratio = float(settings.LLM_BUDGET_WARNING_RATIO)
    for budget in budgets:
        if budget.limit <= 0:  # a zero budget refuses every call: nothing was spent to warn about
            continue
        before, after = budget.used / budget.limit, (budget.used + spent) / budget.limit
        fields = {
            "budget": budget.kind,
            "run_id": str(run_id) if run_id else None,
            "owner_id": owner_id,
            "used": budget.used + spent,
            "limit": budget.limit,
        }
        if before < ratio <= after:
            log.warning("llm_budget_warning", ratio=ratio, used_ratio=round(after, 4), **fields)
        if before < 1 <= after:
            log.warning("llm_budget_exhausted", **fields)
