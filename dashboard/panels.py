"""The dashboard's panels for one request: each only if the viewer may see what it shows, as the admin decides
(the model admin's view permission), with the values its template shows (templates/admin/dashboard/).

Every figure counts only the viewer's teams (every team for a superuser): the ids of `team_ids_for(request)`
go to every selector."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.admin import AdminSite
from django.contrib.admin.exceptions import NotRegistered
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django_q.conf import Conf

from agentrunner.admin import BREAKER_COLOURS, BREAKER_SHORT, usage_bar
from agentrunner.adminkit import GREEN, GREY, RED, badge, choice_label, clock, human_duration, team_ids_for, when
from agentrunner.llm.selectors import breaker_states
from agentrunner.models import BreakerState, LLMCall, OwnerBudget, ProviderBreaker
from dashboard import selectors
from flows.models import Flow
from runs.admin.display import RUN_COLOURS, flow_version_link, run_link
from runs.engine.slots import agent_key, is_flow_key
from runs.models import Run, RunStatus, Slot
from schedules.admin.display import cron_words, timing_words
from schedules.models import Schedule, ScheduleKind

# The order of the runs panel's figures: what needs attention first.
STATUS_ORDER = [
    RunStatus.RUNNING,
    RunStatus.PENDING,
    RunStatus.FAILED,
    RunStatus.BUDGET_EXCEEDED,
    RunStatus.CANCELLED,
    RunStatus.COMPLETED,
]


def _model_admin(site: AdminSite, model):
    try:
        return site.get_model_admin(model)
    except NotRegistered:
        return None


def _may_view(site: AdminSite, request, model) -> bool:
    model_admin = _model_admin(site, model)
    return model_admin is not None and model_admin.has_view_or_change_permission(request)


def _changelist(model, **filters) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def build(site: AdminSite, request) -> dict:
    """Every panel the viewer may see, by name; a panel they may not see is absent."""
    models = (Run, Slot, Schedule, ProviderBreaker, OwnerBudget, LLMCall)
    may = {model: _may_view(site, request, model) for model in models}
    teams = team_ids_for(request)
    panels: dict = {"actions": actions(site, request), "workers": workers()}
    if may[Run]:
        since = timezone.now() - timedelta(hours=selectors.RECENT_HOURS)
        panels["runs"] = runs_by_status(since=since, team_ids=teams)
        panels["agents"] = agents(slots_url=may[Slot], team_ids=teams)
        panels["failures"] = failures(team_ids=teams)
    if may[Schedule]:
        can_add = _model_admin(site, Schedule).has_add_permission(request)
        panels["schedules"] = schedules(can_add=can_add, team_ids=teams)
    if may[ProviderBreaker]:
        panels["providers"] = providers()
    if may[OwnerBudget] or may[LLMCall]:
        panels["budgets"] = budgets(team_ids=teams, per_user_budgets=may[OwnerBudget])
    return panels


def actions(site: AdminSite, request) -> list[dict]:
    """The big buttons at the top: start a run, make a flow (each if the viewer may)."""
    buttons = []
    run_admin = _model_admin(site, Run)
    if run_admin is not None and run_admin.has_operate_permission(request):
        buttons.append({"label": "Start a run", "url": reverse("admin:runs_run_start"), "primary": True})
    flow_admin = _model_admin(site, Flow)
    if flow_admin is not None and flow_admin.has_add_permission(request):
        buttons.append({"label": "New flow", "url": reverse("admin:flows_flow_add"), "primary": False})
    return buttons


def runs_by_status(*, since: datetime, team_ids: selectors.TeamIds) -> dict:
    counts = selectors.run_counts_since(since, team_ids=team_ids)
    total = sum(counts.values())
    created = {"created_at__gte": since.isoformat()}
    rows = [
        {
            "label": choice_label(RunStatus, status),
            "count": counts[status],
            "badge": badge(choice_label(RunStatus, status), RUN_COLOURS.get(status, GREY)),
            "colour": RUN_COLOURS.get(status, GREY),
            "share": round(100 * counts[status] / total, 1) if total else 0,
            "url": _changelist(Run, status=status.value, **created),
        }
        for status in STATUS_ORDER
    ]
    return {"total": total, "rows": rows, "url": _changelist(Run, **created), "hours": selectors.RECENT_HOURS}


def _limit_words(limit: int | None) -> str:
    return f"{limit} at once" if limit else "no limit"


def _holders(group: selectors.SlotGroup | None) -> list[dict]:
    if group is None:
        return []
    return [
        {"link": run_link(slot.run_id), "worker": slot.holder or "reserved: no worker has started it yet"}
        for slot in group.holders
    ]


def agents(*, slots_url: bool, team_ids: selectors.TeamIds) -> dict:
    activity = {a.agent_type: a for a in selectors.agent_activity(team_ids=team_ids)}
    groups = {g.key: g for g in selectors.slot_groups(team_ids=team_ids)}
    # An agent whose slots are held though none of its steps is unfinished (a slot the engine will free) shows too.
    for agent_type in _agents_holding(groups) - set(activity):
        activity[agent_type] = selectors.AgentActivity(agent_type, limit=groups[agent_key(agent_type)].limit)

    def slot_columns(group: selectors.SlotGroup | None) -> dict:
        return {
            "slots_used": group.used if group else None,
            "holders": _holders(group),
            "more": group.more if group else 0,
            "slots_url": _changelist(Slot, key__key__exact=group.key) if group and slots_url else None,
        }

    rows = [
        {
            "agent_type": item.agent_type,
            "running": item.running,
            "waiting": item.waiting,
            "queued": item.queued,
            "retrying": item.retrying,
            "limit": _limit_words(item.limit) if item.installed else "no longer installed",
            **slot_columns(groups.get(agent_key(item.agent_type))),
        }
        for item in activity.values()
    ]
    flows = [
        {"key": key, "name": _flow_group_name(key), "limit": _limit_words(group.limit), **slot_columns(group)}
        for key, group in groups.items()
        if is_flow_key(key)
    ]
    return {"rows": rows, "flows": flows}


def _agents_holding(groups: dict) -> set[str]:
    """The agent types whose concurrency group has a slot held."""
    prefix = agent_key("")
    return {key.removeprefix(prefix) for key in groups if key.startswith(prefix)}


def _flow_group_name(key: str) -> str:
    """ "claim-intake" for `flow:ops/claim-intake` (team ops); "claim-intake, for customer-7" for a limit per
    input value."""
    _, slug, *value = key.split(":", 2)
    slug = slug.split("/", 1)[-1]  # the team's slug: the flow's own is what people know
    return f"{slug}, for {value[0]}" if value else slug


def _what(run: Run):
    """What ran, as the runs list says it: "flow claim-intake v2" (linked) or the agent's name."""
    if run.flow_version_id:
        return format_html("flow {}", flow_version_link(run.flow_version))
    return run.agent_type


def failures(*, team_ids: selectors.TeamIds) -> dict:
    rows = [
        {
            "link": run_link(run.pk),
            "what": _what(run),
            "badge": badge(choice_label(RunStatus, run.status), RUN_COLOURS.get(run.status, GREY)),
            "error": run.error,
            "at": when(run.finished_at or run.created_at),
        }
        for run in selectors.recent_failures(team_ids=team_ids)
    ]
    return {"rows": rows, "url": _changelist(Run, status=RunStatus.FAILED.value)}


def workers() -> dict:
    try:
        clusters = selectors.live_clusters()
    except Exception:  # the cache or Redis is down: the page still opens and says so  # noqa: BLE001
        return {"known": False}
    now = timezone.now()
    return {
        "known": True,
        "badge": badge("Running", GREEN) if clusters else badge("No workers", RED),
        "count": sum(c.workers for c in clusters),
        "configured": Conf.WORKERS,
        "clusters": [
            {
                "host": c.host,
                "workers": c.workers,
                "short": c.workers < Conf.WORKERS,
                "started_at": when(c.started_at),
                "up_for": human_duration(now - c.started_at) if c.started_at else None,
            }
            for c in clusters
        ],
    }


def providers() -> dict:
    rows = []
    for state in breaker_states():
        probe = state["probe_due_at"]
        rows.append(
            {
                "provider": state["provider"],
                "configured": state["configured"],
                "badge": badge(
                    BREAKER_SHORT.get(state["state"], state["state"]), BREAKER_COLOURS.get(state["state"], GREY)
                ),
                "failures": state["consecutive_failures"],
                "open": state["state"] == BreakerState.OPEN,
                "probe_at": clock(datetime.fromisoformat(probe)) if probe else None,
            }
        )
    return {"rows": rows, "url": _changelist(ProviderBreaker)}


def dollars(amount: Decimal | None) -> str:
    """ "$12.35"; "less than $0.01" for a smaller cost (the LLM calls page has every cost to the cent's fraction)."""
    amount = amount or Decimal(0)
    if 0 < amount < Decimal("0.01"):
        return "less than $0.01"
    return f"${amount.quantize(Decimal('0.01')):,}"


def budgets(*, team_ids: selectors.TeamIds, per_user_budgets: bool) -> dict:
    """This month's LLM use of the teams; a team's staff also see each team's use of its monthly limit."""
    usage = selectors.month_usage(default_limit=int(settings.LLM_MONTHLY_TOKEN_BUDGET), team_ids=team_ids)
    teams = []
    if team_ids is not None:
        default = int(settings.TEAM_MONTHLY_TOKEN_BUDGET)
        teams = [
            {
                "name": use.team,
                "tokens": f"{use.tokens:,}",
                "limit": f"{use.limit:,}" if use.limit else None,
                "bar": usage_bar(use.tokens, use.limit) if use.limit else None,
            }
            for use in selectors.team_month_usage(team_ids=team_ids, default_limit=default)
        ]
    rows = [
        {
            "username": use.username,
            "tokens": f"{use.tokens:,}",
            "limit": f"{use.limit:,}" if use.limit else None,
            "bar": usage_bar(use.tokens, use.limit) if use.limit else None,
        }
        for use in usage.top
    ]
    return {
        "month": usage.start.strftime("%B %Y"),
        "tokens": f"{usage.tokens:,}",
        "calls": usage.calls,
        "cost": dollars(usage.cost_usd),
        "rows": rows,
        "teams": teams,
        # Per-user budgets are the service's settings (superusers); a team's staff go to its LLM calls.
        "url": _changelist(OwnerBudget) if per_user_budgets else _changelist(LLMCall),
        "link": "Monthly budgets" if per_user_budgets else "LLM calls",
    }


def schedules(*, can_add: bool, team_ids: selectors.TeamIds) -> dict:
    now = timezone.now()
    rows = [
        {
            "at": when(moment),
            "in": human_duration(moment - now),
            "name": schedule.name,
            "url": reverse("admin:schedules_schedule_change", args=[schedule.pk]),
            "target": f"flow {schedule.flow.slug}" if schedule.flow_id else schedule.agent_type,
            "timing": (cron_words(schedule.cron) if schedule.kind == ScheduleKind.CRON else None)
            or timing_words(schedule),
        }
        for moment, schedule in selectors.next_fires(now=now, team_ids=team_ids)
    ]
    return {
        "rows": rows,
        "url": _changelist(Schedule),
        "add_url": reverse("admin:schedules_schedule_add") if can_add else None,
    }
