"""Reads: effective agent policies, run lists, why a run waits, a run's metrics."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import (
    CharField,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    Window,
)
from django.db.models.functions import Coalesce, Concat, Rank

from agentrunner.agents import ConcurrencyPolicy, OnBusy, UnknownAgentType, all_agents
from agentrunner.llm.selectors import llm_aggregates, llm_block
from agentrunner.models import LLMCall, Team
from flows.exceptions import FlowNotFound
from flows.models import FlowVersion
from runs.exceptions import RunNotFound
from runs.models import (
    WAITING_QUEUE,
    AgentPolicy,
    ConcurrencyKey,
    Run,
    RunDecision,
    RunStatus,
    Slot,
    Step,
    StepAttempt,
)


def agent_policy_in_effect(*, agent_type: str, override: tuple[int | None, str] | None) -> ConcurrencyPolicy | None:
    """The effective concurrency policy: the operator's override if stored, else the agent's default.

    `override` is the stored (limit, on_busy) when an operator overrides the default, else None. None for an
    agent that is no longer installed and has no override. Every reader of a policy goes through here.
    """
    if override is not None:
        limit, on_busy = override
        return ConcurrencyPolicy(limit=limit, on_busy=OnBusy(on_busy))
    agent = all_agents().get(agent_type)
    return None if agent is None else agent.concurrency


def agent_policy_of(policy: AgentPolicy) -> ConcurrencyPolicy | None:
    """The policy in effect for an agent type's row (None if the agent is no longer installed)."""
    override = (policy.concurrency_limit, policy.on_busy) if policy.override else None
    return agent_policy_in_effect(agent_type=policy.agent_type, override=override)


def agent_policy_get(*, agent_type: str) -> ConcurrencyPolicy:
    """The policy in effect for an agent type; raises UnknownAgentType for one that is not installed."""
    # On every run start and every queued step: one indexed lookup, no model instance.
    override = (
        AgentPolicy.objects.filter(agent_type=agent_type, override=True)
        .values_list("concurrency_limit", "on_busy")
        .first()
    )
    policy = agent_policy_in_effect(agent_type=agent_type, override=override)
    if policy is None:
        raise UnknownAgentType(agent_type)
    return policy


def agent_policy_list() -> QuerySet[AgentPolicy]:
    """Agent type rows with how many of their runs hold a slot (`running_count`) and wait for one (`waiting_count`)."""
    from runs.engine.slots import agent_key  # here: the engine's package imports this module

    key = Concat(Value(agent_key("")), OuterRef("agent_type"), output_field=CharField())
    running = (
        Slot.objects.filter(key_id=key)
        .exclude(holder="")
        .order_by()
        .values("key_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    waiting = (
        Step.objects.filter(WAITING_QUEUE, concurrency_key=key)
        .order_by()
        .values("concurrency_key")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return AgentPolicy.objects.annotate(
        running_count=Coalesce(Subquery(running, output_field=IntegerField()), 0),
        waiting_count=Coalesce(Subquery(waiting, output_field=IntegerField()), 0),
    )


def _agent_row(name: str, cls, override: tuple[int | None, str] | None) -> dict:
    return {
        "agent_type": name,
        "description": cls.description,
        "input_schema": cls.input_schema,
        "concurrency": agent_policy_in_effect(agent_type=name, override=override).as_dict(),
        "default_concurrency": cls.concurrency.as_dict(),
        "overridden": override is not None,
        "max_attempts": cls.max_attempts,
    }


def agent_list() -> list[dict]:
    """Every registered agent type with its input schema and effective policy (whether or not it has a row yet)."""
    overrides = {
        agent_type: (limit, on_busy)
        for agent_type, limit, on_busy in AgentPolicy.objects.filter(override=True).values_list(
            "agent_type", "concurrency_limit", "on_busy"
        )
    }
    return [_agent_row(name, cls, overrides.get(name)) for name, cls in all_agents().items()]


def agent_get(*, agent_type: str) -> dict:
    """One registered agent type as `agent_list` gives it; raises UnknownAgentType for one that is not."""
    cls = all_agents().get(agent_type)
    if cls is None:
        raise UnknownAgentType(agent_type)
    override = (
        AgentPolicy.objects.filter(agent_type=agent_type, override=True)
        .values_list("concurrency_limit", "on_busy")
        .first()
    )
    return _agent_row(agent_type, cls, override)


def run_list(*, team) -> QuerySet[Run]:
    """The runs of `team` (every member of a team sees all its runs)."""
    return Run.objects.select_related("flow_version__flow").filter(team=team)


def run_get(*, team, run_id) -> Run:
    """A run of `team`; RunNotFound for a run that does not exist or is another team's."""
    run = run_list(team=team).filter(pk=run_id).first()
    if run is None:
        raise RunNotFound()
    return run


# -- the failed-run queue ("needs attention")

# The coarse class of a run's error code: what kind of trouble it was, for sorting a queue of failures.
ERROR_CLASSES = {
    "worker": ("worker_lost", "worker_interrupted", "worker_shutdown", "lease_lost", "shutdown", "start_deadline"),
    "timeout": ("timeout",),
    "input": ("invalid_input", "unknown_agent_type"),
    "llm": ("llm_rate_limited", "rate_limited", "budget_exceeded"),  # and every code starting with llm_
    "flow": ("max_steps", "condition_too_costly", "invalid_definition"),
    "agent": ("retryable_error", "non_retryable_error", "run_error", "error"),
}
ERROR_CLASS_HELP = (
    "Coarse class of `error_code`: worker (the process running it was lost or stopped: a retry usually works), "
    "timeout, input (the input does not fit: a retry with the same input fails again), llm (a provider or a "
    "budget refused), flow (a flow limit), agent (the agent's own error), other; empty when the run has no error."
)
_CLASS_OF = {code: name for name, codes in ERROR_CLASSES.items() for code in codes}


def error_class(code: str) -> str:
    """The coarse class of an error code (`ERROR_CLASSES`); "" for no code, "other" for one not listed."""
    if not code:
        return ""
    if code in _CLASS_OF:
        return _CLASS_OF[code]
    return "llm" if code.startswith("llm_") else "other"


def _answered():
    """A decision answering the outer run's current failure (its finished time, or creation time if it has none)."""
    return RunDecision.objects.filter(
        run=OuterRef("pk"), failed_at=Coalesce(OuterRef("finished_at"), OuterRef("created_at"))
    )


def runs_needing_attention(runs: QuerySet[Run]) -> QuerySet[Run]:
    """The FAILED runs of `runs` that nobody retried or dismissed since they (last) failed."""
    return runs.filter(status=RunStatus.FAILED).filter(~Exists(_answered()))


def runs_not_needing_attention(runs: QuerySet[Run]) -> QuerySet[Run]:
    """The runs of `runs` that are not FAILED, or whose current failure someone retried or dismissed."""
    return runs.exclude(Q(status=RunStatus.FAILED), ~Exists(_answered()))


def runs_with_attention(runs: QuerySet[Run]) -> QuerySet[Run]:
    """`runs` annotated with `answered_as`: the kind of the decision answering the run's current failure, or None
    (the admin list)."""
    return runs.annotate(answered_as=Subquery(_answered().values("kind")[:1]))


def run_resolutions(*, runs) -> dict:
    """For each run of `runs` (a page): {run id: its latest decision}, in one query whatever their number.

    No query when none of them can have one (`run_may_have_decision`), as on the run-start path and for a page of
    runs that completed.
    """
    latest: dict = {}
    ids = [r.pk for r in runs if run_may_have_decision(r)]
    if not ids:
        return latest
    for decision in RunDecision.objects.filter(run_id__in=ids).select_related("decided_by"):
        if decision.run_id not in latest or decision.decided_at >= latest[decision.run_id].decided_at:
            latest[decision.run_id] = decision
    return latest


def run_may_have_decision(run: Run) -> bool:
    """Whether a decision (retry, dismissal) can exist for `run`: only a FAILED run is decided, and only a flow run
    leaves FAILED afterwards (a retry resumes it in place; an agent run's retry is a new run, the old one stays
    FAILED)."""
    return run.status == RunStatus.FAILED or (run.flow_version_id is not None and run.status != RunStatus.PENDING)


def run_resolution(*, run: Run, latest: RunDecision | None) -> RunDecision | None:
    """The decision that answers `run` now: its latest one, unless the run failed again after it (None then)."""
    if latest is None:
        return None
    if run.status == RunStatus.FAILED and latest.failed_at != (run.finished_at or run.created_at):
        return None
    return latest


def run_needs_attention(*, run: Run, latest: RunDecision | None) -> bool:
    """Whether `run` is FAILED and no decision answers its current failure (`runs_needing_attention` for one run)."""
    return run.status == RunStatus.FAILED and run_resolution(run=run, latest=latest) is None


def run_decisions(*, run: Run) -> QuerySet[RunDecision]:
    """Every decision on `run`, oldest first, with who made it and the run a retry started."""
    return run.decisions.select_related("decided_by", "new_run").order_by("decided_at")


def run_idempotency_key_used(*, user, key: str) -> bool:
    """Whether `user` already started a run with this idempotency key (the unique index answers it)."""
    return Run.objects.filter(created_by=user, idempotency_key=key).exists()


def run_steps(*, run: Run) -> QuerySet[Step]:
    return run.steps.prefetch_related(Prefetch("attempt_set", queryset=StepAttempt.objects.order_by("number")))


def run_blocked_by(*, run: Run) -> dict | None:
    """Why a run waits: the runs holding its slot, slots used / limit, and its place in the queue."""
    return runs_blocked_by(runs=[run]).get(run.pk)


def runs_blocked_by(*, runs) -> dict:
    """`run_blocked_by` for many runs in four queries, however many (a page of a list): {run id: why}."""
    unfinished = [r.pk for r in runs if not r.is_finished]  # only these can wait
    if not unfinished:
        return {}
    waiting = list(
        Step.objects.filter(WAITING_QUEUE, run_id__in=unfinished).values_list("pk", "run_id", "concurrency_key")
    )
    if not waiting:
        return {}
    keys = {key for _, _, key in waiting}
    limits = dict(ConcurrencyKey.objects.filter(key__in=keys).values_list("key", "limit"))
    # An agent's slots are shared by every team: a holder of another team counts, but is not named.
    teams = {r.pk: r.team_id for r in runs}
    used: dict[str, int] = dict.fromkeys(keys, 0)
    holders: dict[tuple[str, int], list[str]] = {}
    for key, run_id, team_id in Slot.objects.filter(key_id__in=keys).values_list("key_id", "run_id", "run__team_id"):
        used[key] += 1
        holders.setdefault((key, team_id), []).append(str(run_id))
    # Place in its key's queue: 1 + the steps that joined it earlier (ties share a place).
    place = Window(Rank(), partition_by=[F("concurrency_key")], order_by=F("queued_at").asc())
    positions = dict(
        Step.objects.filter(WAITING_QUEUE, concurrency_key__in=keys)
        .annotate(position=place)
        .filter(pk__in=[pk for pk, _, _ in waiting])
        .values_list("pk", "position")
    )
    return {
        run_id: {
            "concurrency_key": key,
            "runs": holders.get((key, teams[run_id]), []),
            "slots_used": used[key],
            "limit": limits.get(key),
            "position": positions.get(pk),
        }
        for pk, run_id, key in waiting
    }


def _ms(delta: timedelta | None) -> int | None:
    return None if delta is None else round(delta.total_seconds() * 1000)


def run_metrics(run) -> dict:
    """Return a run's LLM usage and cost, per step and in total, with each step's duration from its attempts.

    `calls` counts the requests sent to providers (retries included), `failed_calls` those that failed,
    `refused_calls` those a budget refused. A step's `duration_ms` adds up its finished attempts. Three
    queries whatever the number of steps and calls.
    """
    per_step = {
        row["step_id"]: row
        for row in LLMCall.objects.filter(run=run).values("step_id").order_by().annotate(**llm_aggregates())
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
                **llm_block(per_step.get(step.pk)),
            }
        )
    return {
        "run_id": str(run.pk),
        "total": {**llm_block(totals), "duration_ms": run_duration_ms},
        "steps": steps,
    }


def flow_version_current(slug: str, *, team) -> FlowVersion:
    """The current version of `team`'s flow `slug`; FlowNotFound otherwise (another team's flow too)."""
    version = (
        FlowVersion.objects.filter(flow__team=team, flow__slug=slug).select_related("flow").order_by("-number").first()
    )
    if version is None:
        raise FlowNotFound(f"No flow {slug!r}.")
    return version


def retention_days_of(*, team_ids: list[int] | None) -> set[int]:
    """The distinct days the teams `team_ids` (None: every team) keep finished runs for; 0 = forever."""
    teams = Team.objects.order_by()
    if team_ids is not None:
        teams = teams.filter(pk__in=team_ids)
    default = settings.RUN_RETENTION_DAYS
    return {default if own is None else own for own in teams.values_list("run_retention_days", flat=True).distinct()}
