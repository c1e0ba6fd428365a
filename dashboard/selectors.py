"""Reads for the dashboard's panels: each a few queries whatever the number of rows, and no write.

Every function returns plain data (dicts, lists, model instances with only the fields shown) and counts only the
teams `team_ids` names (None: every team, for a superuser); which panels a viewer sees is decided by the caller
(dashboard/panels.py), panel by panel. The LLM providers' breakers are
agentrunner.llm.selectors.breaker_states, as the health report gives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Count, F, QuerySet, Sum, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from agentrunner.health import running_clusters
from agentrunner.llm.budgets import month_bounds
from agentrunner.models import LLMCall, OwnerBudget, Team
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


# The teams a viewer's panels count: their ids, or None for every team (a superuser).
TeamIds = list[int] | None


def _of_teams(queryset: QuerySet, team_ids: TeamIds, path: str = "team"):
    """`queryset` narrowed to the teams `team_ids` (through the lookup `path`); all of it for None."""
    return queryset if team_ids is None else queryset.filter(**{f"{path}__in": team_ids})


# --- runs ----------------------------------------------------------------------------------------


def run_counts_since(since: datetime, *, team_ids: TeamIds) -> dict[str, int]:
    """How many runs of the teams were created since `since`, by status (every status, zeros included)."""
    runs = _of_teams(Run.objects.filter(created_at__gte=since), team_ids)
    rows = runs.order_by().values("status").annotate(n=Count("pk"))
    counts = {status.value: 0 for status in RunStatus}
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def recent_failures(limit: int = RECENT_FAILURES, *, team_ids: TeamIds) -> list[Run]:
    """The teams' newest failed runs (failed or over budget), with what the run page's header shows, never the
    bodies."""
    return list(
        _of_teams(Run.objects.filter(status__in=FAILED), team_ids)
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


def agent_activity(*, team_ids: TeamIds) -> list[AgentActivity]:
    """Every agent type with a step of the teams not finished, busiest first, with the limit in effect."""
    # Through the unfinished runs (the run_status_created index): every unfinished step belongs to one, and
    # the steps table, which holds every step ever run, has no index on status alone.
    steps = Step.objects.filter(run__status__in=[RunStatus.PENDING, RunStatus.RUNNING], status__in=STEP_ACTIVE)
    rows = _of_teams(steps, team_ids, "run__team").order_by().values("agent_type", "status").annotate(n=Count("pk"))
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


def slot_groups(holders_shown: int = HOLDERS_SHOWN, *, team_ids: TeamIds) -> list[SlotGroup]:
    """Every concurrency group with a slot held by the teams' runs: those slots, the group's limit, and their
    `holders_shown` oldest holders. An agent's group is shared by every team: other teams' slots are not counted."""
    slots = _of_teams(Slot.objects.all(), team_ids, "run__team")
    used = dict(slots.order_by().values("key_id").annotate(n=Count("pk")).values_list("key_id", "n"))
    if not used:
        return []
    limits = dict(ConcurrencyKey.objects.filter(key__in=used).values_list("key", "limit"))
    first = Window(RowNumber(), partition_by=[F("key_id")], order_by=[F("acquired_at").asc(), F("pk").asc()])
    holders: dict[str, list[Slot]] = {key: [] for key in used}
    for slot in (
        slots.annotate(place=first)
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


@dataclass
class TeamUse:
    team: str
    tokens: int
    limit: int  # the team's own, else the default; 0: unlimited


def month_usage(top: int = TOP_BUDGET_USERS, *, default_limit: int, team_ids: TeamIds) -> MonthUsage:
    """This month's (UTC) LLM tokens of the teams in all and their `top` users by tokens, each with their
    monthly limit."""
    start, end = month_bounds()
    month = _of_teams(LLMCall.objects.filter(created_at__gte=start, created_at__lt=end), team_ids)
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


def team_month_usage(*, team_ids: list[int], default_limit: int) -> list[TeamUse]:
    """This month's (UTC) LLM tokens of each of the teams `team_ids`, with its monthly limit, by team name."""
    start, end = month_bounds()
    used = dict(
        LLMCall.objects.filter(team__in=team_ids, created_at__gte=start, created_at__lt=end)
        .order_by()
        .values("team_id")
        .annotate(tokens=Sum("total_tokens", default=0))
        .values_list("team_id", "tokens")
    )
    teams = Team.objects.filter(pk__in=team_ids).only("pk", "name", "monthly_token_limit").order_by("name")
    return [
        TeamUse(
            team=team.name,
            tokens=used.get(team.pk, 0),
            limit=int(team.monthly_token_limit if team.monthly_token_limit is not None else default_limit),
        )
        for team in teams
    ]


# --- schedules -----------------------------------------------------------------------------------


def next_fires(
    count: int = NEXT_FIRES, *, team_ids: TeamIds, now: datetime | None = None
) -> list[tuple[datetime, Schedule]]:
    """The next `count` fire times of the teams' active schedules, soonest first, each with its schedule."""
    now = now or timezone.now()
    upcoming = []
    schedules = (
        _of_teams(Schedule.objects.filter(enabled=True), team_ids)
        .select_related("flow")
        .only(*SCHEDULE_FIELDS, "flow__id", "flow__slug")  # never the input, which can be large
        .order_by("name")
    )
    for schedule in schedules:
        for moment in schedule_next_fire_times(schedule, 1, now=now):
            upcoming.append((moment, schedule))
    upcoming.sort(key=lambda pair: (pair[0], pair[1].name))
    return upcoming[:count]
