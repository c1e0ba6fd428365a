"""Token budgets: a run's (Run.token_budget), and its owner's and its team's per calendar month (UTC).

Every budget that applies must allow a request: the strictest decides. A team's budget counts the calls
of all its runs, whoever started them; an owner's, the calls of all their runs, in whichever team.

A request reserves before it calls and settles after (`budget_reserve`):

1. Reserve, in one short transaction: lock what serialises each budget that applies, always in this
   order: the Run row, then the owner's user row, then the team's row (on PostgreSQL `SELECT ... FOR NO
   KEY UPDATE`, which does not block inserts referencing those rows, e.g. LLM calls and steps; SQLite
   serialises whole transactions). Then read what is used: the tokens of the LLMCall rows plus those
   held by the reservations of requests in progress. If used + the request's estimate (prompt characters / 4 +
   max_tokens) exceeds a limit, the request is refused; else an LLMReservation row holds the estimate.
   Concurrent requests therefore take turns at the check, and each sees the others' reservations:
   together they cannot pass a limit on their estimates.
2. Settle: the answer's LLMCall row (its real usage) is written and the reservation deleted in one
   transaction, so that a check sees one or the other, never both nor neither. A request that gets no
   answer (or fails, or is cancelled) deletes its reservation (`reservation_release`).

A reservation counts until its `expires_at`: the longest its request can take (every try on every
provider timing out, with the longest waits between them) plus a margin. One left behind by a process
that died stops counting then, so it cannot block a budget for ever; such rows are harmless and are
deleted with their run.

The real usage may exceed the estimate (the server's token count differs from characters / 4): a
request that crossed a limit that way still returns its answer (the tokens are spent), and the next
request is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import structlog
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from agentrunner.models import LLMCall, LLMReservation, OwnerBudget, Team

log = structlog.get_logger("agentrunner.llm")

RUN = "run"
OWNER_MONTHLY = "owner_monthly"
TEAM_MONTHLY = "team_monthly"


@dataclass(frozen=True)
class Budget:
    kind: str  # RUN, OWNER_MONTHLY or TEAM_MONTHLY
    limit: int
    used: int  # tokens recorded, plus those reserved by requests in progress, before this request
    reserved: int = 0  # the part of `used` held by requests in progress


@dataclass(frozen=True)
class Reservation:
    """What `budget_reserve` decided."""

    budgets: list[Budget] = field(default_factory=list)  # those with a limit, as they stood before the request
    refused: Budget | None = None  # the budget that does not allow the request: nothing was reserved
    reservation_id: int | None = None  # the LLMReservation row; None when refused or no budget applies


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


def team_monthly_limit(team_id: int) -> tuple[int, str]:
    """Return (limit, source): the team's own limit if set, else TEAM_MONTHLY_TOKEN_BUDGET; 0 = unlimited."""
    own = Team.objects.filter(pk=team_id).values_list("monthly_token_limit", flat=True).first()
    if own is not None:
        return int(own), "team"
    return int(settings.TEAM_MONTHLY_TOKEN_BUDGET), "default"


def budget_reserve(
    *,
    run_id,
    owner_id: int | None,
    token_budget: int | None,
    estimate: int,
    request_id,
    hold_seconds: float,
    team_id: int | None = None,
) -> Reservation:
    """Check the run's, the owner's and the team's budgets for `estimate` tokens and reserve them (module docstring).

    `hold_seconds`: how long the reservation counts at most (the longest the request can take, and a margin).
    """
    # By the app registry, as LLMCall's foreign key names it: agentrunner imports no app's code.
    Run = apps.get_model("runs", "Run")  # noqa: N806

    run_limited = token_budget is not None and run_id is not None
    owner_limit = owner_monthly_limit(owner_id)[0] if owner_id is not None else 0
    team_limit = team_monthly_limit(team_id)[0] if team_id is not None else 0
    if not run_limited and owner_limit <= 0 and team_limit <= 0:
        return Reservation()
    now = timezone.now()
    month_start = month_bounds(now)[0]
    with transaction.atomic():
        # The locks make requests against one budget take turns from here to the commit, so that each
        # sees the reservations of those before it. Run, then user, then team, always: no deadlock between two.
        if run_limited:
            list(Run.objects.select_for_update(no_key=True).filter(pk=run_id).order_by().values_list("pk"))
        User = get_user_model()
        if owner_limit > 0:
            list(User.objects.select_for_update(no_key=True).filter(pk=owner_id).order_by().values_list("pk"))
        if team_limit > 0:
            list(Team.objects.select_for_update(no_key=True).filter(pk=team_id).order_by().values_list("pk"))
        budgets = []
        if run_limited:
            recorded, reserved = _usage(Run, run_id, by="run_id", since=None, now=now)
            budgets.append(Budget(RUN, int(token_budget), recorded + reserved, reserved))
        if owner_limit > 0:
            recorded, reserved = _usage(User, owner_id, by="owner_id", since=month_start, now=now)
            budgets.append(Budget(OWNER_MONTHLY, owner_limit, recorded + reserved, reserved))
        if team_limit > 0:
            recorded, reserved = _usage(Team, team_id, by="team_id", since=month_start, now=now)
            budgets.append(Budget(TEAM_MONTHLY, team_limit, recorded + reserved, reserved))
        refused = first_refusal(budgets, estimate)
        if refused is not None:
            return Reservation(budgets, refused=refused)
        held = LLMReservation.objects.create(
            run_id=run_id,
            owner_id=owner_id,
            team_id=team_id,
            request_id=request_id,
            tokens=estimate,
            expires_at=now + timedelta(seconds=hold_seconds),
        )
    return Reservation(budgets, reservation_id=held.pk)


def _usage(model, pk, *, by: str, since: datetime | None, now: datetime) -> tuple[int, int]:
    """Return (tokens recorded, tokens reserved) of one run, user or team: `by` names the LLMCall field to it.

    In one statement, hence from one snapshot (PostgreSQL's READ COMMITTED takes one per statement): a
    request settling meanwhile, its reservation swapped for its call row, is counted exactly once. And
    after the lock, not with it: a snapshot taken before the lock was granted would miss what the
    transaction holding it committed.
    """
    calls = LLMCall.objects.filter(**{by: OuterRef("pk")})
    if since is not None:
        calls = calls.filter(created_at__gte=since)
    held = LLMReservation.objects.filter(**{by: OuterRef("pk")}, expires_at__gt=now)
    rows = (
        model.objects.filter(pk=pk)
        .order_by()
        .values_list(_total(calls, by, "total_tokens"), _total(held, by, "tokens"))
    )
    return next(iter(rows), (0, 0))


def _total(rows: QuerySet, scope: str, tokens: str):
    summed = rows.order_by().values(scope).annotate(total=Sum(tokens)).values("total")
    return Coalesce(Subquery(summed), Value(0))


def reservation_release(*, reservation_id: int) -> None:
    """End a reservation: its request has ended, and its real usage, if any, is recorded."""
    LLMReservation.objects.filter(pk=reservation_id).delete()


def first_refusal(budgets: list[Budget], estimate: int) -> Budget | None:
    for budget in budgets:
        if budget.used + estimate > budget.limit:
            return budget
    return None


def refusal_message(budget: Budget, *, estimate: int, run_id, owner_id, team_id=None) -> str:
    month = month_bounds()[0].strftime("%Y-%m")
    if budget.kind == RUN:
        subject = f"The run's token budget ({budget.limit:,} tokens, run {run_id})"
    elif budget.kind == TEAM_MONTHLY:
        slug = Team.objects.filter(pk=team_id).values_list("slug", flat=True).first()
        subject = f"The monthly token budget of team {slug or team_id} ({budget.limit:,} tokens in {month} UTC)"
    else:
        username = get_user_model().objects.filter(pk=owner_id).values_list("username", flat=True).first()
        subject = f"The monthly token budget of user {username or owner_id} ({budget.limit:,} tokens in {month} UTC)"
    held = f" ({budget.reserved:,} of them reserved by requests in progress)" if budget.reserved else ""
    return (
        f"{subject} does not allow this LLM call: {budget.used:,} of {budget.limit:,} tokens used{held}, "
        f"the call may need up to {estimate:,} more."
    )


def warn_on_crossing(budgets: list[Budget], *, spent: int, run_id, owner_id, team_id=None) -> None:
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
            "team_id": team_id,
            "used": budget.used + spent,
            "limit": budget.limit,
        }
        if before < ratio <= after:
            log.warning("llm_budget_warning", ratio=ratio, used_ratio=round(after, 4), **fields)
        if before < 1 <= after:
            log.warning("llm_budget_exhausted", **fields)
