"""Reads for the dashboard's panels: each a few queries whatever the number of rows, and no write.

Every function returns plain data (dicts, lists, model instances with only the fields shown); what a viewer
may see is decided by the caller (dashboard/panels.py), panel by panel. The LLM providers' breakers are
agentrunner.llm.selectors.breaker_states, as the health report gives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Count, F, Sum, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from agentrunner.health import running_clusters
from agentrunner.llm.budgets import month_bounds
from agentrunner.models import LLMCall, OwnerBudget
from runs.models import STEP_ACTIVE, ConcurrencyKey, Run, RunStatus, Slot, Step, StepStatus
from runs.selectors import agent_list
from schedules.models import Schedule
from schedules.selectors import schedule_next_fire_times

RECENT_HOURS = 24
RECENT_FAILURES = 8
HOLDERS_SHOWN = 5  # per concurrency group; the slots page lists them all
NEXT_FIRES = 6
TOP_BUDGET_USERS = 6
SCHEDULE_FIELDS = ("id", "name", "flow", "agent_type", "kind", "cron", "interval_seconds", "timezone", "enabled")
FAILED = (RunStatus.FAILED, RunStatus.BUDGET_EXCEEDED)
# django-q2's cluster states that mean "on its way out": the health report's workers check ignores them too.


# --- runs ----------------------------------------------------------------------------------------


def run_counts_since(since: datetime) -> dict[str, int]:
    """How many runs were created since `since`, by status (every status, zeros included)."""
    rows = Run.objects.filter(created_at__gte=since).order_by().values("status").annotate(n=Count("pk"))
    counts = {status.value: 0 for status in RunStatus}
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def recent_failures(limit: int = RECENT_FAILURES) -> list[Run]:
    """The newest failed runs (failed or over budget), with what the run page's header shows, never the bodies."""
    return list(
        Run.objects.filter(status__in=FAILED)
        .select_related("flow_version__flow")
        .only(
            "id",
            "agent_type",
            "status",
            "error",
            "error_code",
            "created_at",
            "finished_at",
            "flow_version__id",
            "flow_version__number",
            "flow_version__digest",
            "flow_version__flow__id",
            "flow_version__flow__slug",
        )
        .order_by("-created_at")[:limit]
    )


# --- agents at work ------------------------------------------------------------------------------


@dataclass
class AgentActivity:
    """One agent type's steps that have not finished, and the limit in effect for it."""

    agent_type: str
    running: int = 0
    waiting: int = 0  # for a concurrency slot
    queued: int = 0  # for a worker
    retrying: int = 0  # waiting for their next attempt
    limit: int | None = None  # None: no limit (or an agent no longer installed)
    installed: bool = True


@dataclass
class SlotGroup:
    """A concurrency group (an agent's or a flow's) with the slots held and the first few holders."""

    key: str
    limit: int | None
    used: int
    holders: list[Slot] = field(default_factory=list)

    @property
    def more(self) -> int:
        return self.used - len(self.holders)


def agent_activity() -> list[AgentActivity]:
    """Every agent type with a step not finished, busiest first, with the limit in effect."""
    # Through the unfinished runs (the run_status_created index): every unfinished step belongs to one, and
    # the steps table, which holds every step ever run, has no index on status alone.
    rows = (
        Step.objects.filter(run__status__in=[RunStatus.PENDING, RunStatus.RUNNING], status__in=STEP_ACTIVE)
        .order_by()
        .values("agent_type", "status")
        .annotate(n=Count("pk"))
    )
    by_agent: dict[str, AgentActivity] = {}
    attribute = {
        StepStatus.RUNNING: "running",
        StepStatus.WAITING: "waiting",
        StepStatus.QUEUED: "queued",
        StepStatus.RETRYING: "retrying",
    }
    for row in rows:
        activity = by_agent.setdefault(row["agent_type"], AgentActivity(row["agent_type"]))
        setattr(activity, attribute[row["status"]], getattr(activity, attribute[row["status"]]) + row["n"])
    if not by_agent:
        return []
    policies = {agent["agent_type"]: agent["concurrency"] for agent in agent_list()}
    for activity in by_agent.values():
        policy = policies.get(activity.agent_type)
        activity.installed = policy is not None
        activity.limit = policy["limit"] if policy else None
    return sorted(by_agent.values(), key=lambda a: (-(a.running + a.waiting + a.queued + a.retrying), a.agent_type))


def slot_groups(holders_shown: int = HOLDERS_SHOWN) -> list[SlotGroup]:
    """Every concurrency group with a slot held: slots used, its limit, and its `holders_shown` oldest holders."""
    used = dict(Slot.objects.order_by().values("key_id").annotate(n=Count("pk")).values_list("key_id", "n"))
    if not used:
        return []
    limits = dict(ConcurrencyKey.objects.filter(key__in=used).values_list("key", "limit"))
    first = Window(RowNumber(), partition_by=[F("key_id")], order_by=[F("acquired_at").asc(), F("pk").asc()])
    holders: dict[str, list[Slot]] = {key: [] for key in used}
    for slot in (
        Slot.objects.annotate(place=first)
        .filter(place__lte=holders_shown)
        .select_related("run")
        .only("id", "key_id", "number", "holder", "acquired_at", "run__id", "run__status", "run__agent_type")
        .order_by("key_id", "place")
    ):
        holders[slot.key_id].append(slot)
    return [SlotGroup(key, limits.get(key), used[key], holders[key]) for key in sorted(used)]


# --- workers -------------------------------------------------------------------------------------


@dataclass
class Cluster:
    host: str
    cluster_id: str
    workers: int
    started_at: datetime | None


def live_clusters() -> list[Cluster]:
    """The worker clusters running now, as django-q2 reports them (the health report's source)."""
    clusters = []
    for stat in running_clusters():
        clusters.append(Cluster(stat.host, str(stat.cluster_id), len(stat.workers), stat.tob))
    return sorted(clusters, key=lambda c: (c.host, c.cluster_id))


# --- LLM providers and budgets -------------------------------------------------------------------


@dataclass
class BudgetUse:
    user_id: int
    username: str
    tokens: int
    limit: int  # the user's own, else the default; 0: unlimited


@dataclass
class MonthUsage:
    start: datetime
    tokens: int
    cost_usd: Decimal | None
    calls: int
    top: list[BudgetUse]


def month_usage(top: int = TOP_BUDGET_USERS, *, default_limit: int) -> MonthUsage:
    """This month's (UTC) LLM tokens in all and the `top` users by tokens, each with their monthly limit."""
    start, end = month_bounds()
    month = LLMCall.objects.filter(created_at__gte=start, created_at__lt=end)
    total = month.aggregate(tokens=Sum("total_tokens", default=0), cost=Sum("cost_usd"), calls=Count("pk"))
    users = list(
        month.filter(owner__isnull=False)
        .order_by()
        .values("owner_id")
        .annotate(tokens=Sum("total_tokens", default=0))
        .order_by("-tokens", "owner_id")[:top]
    )
    ids = [row["owner_id"] for row in users]
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", get_user_model().USERNAME_FIELD))
    own = dict(
        OwnerBudget.objects.filter(user__in=ids, monthly_token_limit__isnull=False).values_list(
            "user_id", "monthly_token_limit"
        )
    )
    return MonthUsage(
        start=start,
        tokens=total["tokens"],
        cost_usd=total["cost"],
        calls=total["calls"],
        top=[
            BudgetUse(
                user_id=row["owner_id"],
                username=names.get(row["owner_id"], str(row["owner_id"])),
                tokens=row["tokens"],
                limit=int(own.get(row["owner_id"], default_limit)),
            )
            for row in users
        ],
    )


# --- schedules -----------------------------------------------------------------------------------


def next_fires(count: int = NEXT_FIRES, *, now: datetime | None = None) -> list[tuple[datetime, Schedule]]:
    """The next `count` fire times of all active schedules, soonest first, each with its schedule."""
    now = now or timezone.now()
    upcoming = []
    schedules = (
        Schedule.objects.filter(enabled=True)
        .select_related("flow")
        .only(*SCHEDULE_FIELDS, "flow__id", "flow__slug")  # never the input, which can be large
        .order_by("name")
    )
    for schedule in schedules:
        for moment in schedule_next_fire_times(schedule, 1, now=now):
            upcoming.append((moment, schedule))
    upcoming.sort(key=lambda pair: (pair[0], pair[1].name))
    return upcoming[:count]
