"""Writes: start, cancel and re-run runs; change an agent type's concurrency policy."""

from __future__ import annotations

import hashlib
import uuid
from contextlib import nullcontext
from typing import Any

import structlog
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from agentrunner.agents import ConcurrencyPolicy, InvalidAgentInput, OnBusy, all_agents, get_agent
from agentrunner.agents.registry import UnknownAgentType
from agentrunner.db import counts_add
from agentrunner.metrics import run_agent_label
from agentrunner.models import Team
from agentrunner.teams.services import team_or_default
from flows.definition import ReferenceNotFound, concurrency_key_value
from flows.exceptions import FlowDisabled, RunNotResumable
from flows.models import FlowVersion
from runs import engine
from runs.engine import fastpath, finish, slots
from runs.engine.queue import (
    broker_in_this_database,
    slots_pump,
    slots_pump_on_commit,
    start_deadline,
    step_enqueue,
    steps_dispatch_on_commit,
)
from runs.exceptions import (
    AgentBusy,
    InvalidFields,
    RunAlreadyDecided,
    RunAlreadyFinished,
    RunError,
    RunNotFailed,
    RunNotFound,
)
from runs.models import (
    RUN_FINISHED,
    WAITING_QUEUE,
    AgentPolicy,
    DecisionKind,
    DeletedRuns,
    Run,
    RunDecision,
    RunStatus,
    Slot,
    Step,
    StepStatus,
)
from runs.selectors import agent_policy_get

log = structlog.get_logger("agentrunner.runs")

# A flow's per-input concurrency key value longer than this is hashed (the key column holds 200).
MAX_KEY_VALUE_CHARS = 80


def run_create(
    *,
    agent_type: str,
    input: dict[str, Any] | None,
    user_id: uuid.UUID | None = None,
    created_by=None,
    idempotency_key: str = "",
    rerun_of: Run | None = None,
    token_budget: int | None = None,
    team: Team | None = None,
    request_id: str = "",
) -> tuple[Run, bool]:
    """Validate and start a run of an agent; return (run, created). Raise AgentBusy on a `reject` agent at its limit.

    The run belongs to `team` (the default team if None: code outside a request, tests). `request_id` is the API
    request's that starts it: the worker's log lines for the run carry it.
    """
    try:
        agent = get_agent(agent_type)
    except UnknownAgentType:
        log.warning("invalid_agent_type", agent_type=agent_type, user_id=str(user_id) if user_id else None)
        raise
    data = agent.validate_input(input)
    fields = {
        "agent_type": agent_type,
        "input": data,
        "user_id": user_id,
        "rerun_of": rerun_of,
        "token_budget": token_budget,
        "created_by_id": getattr(created_by, "pk", None),
        "idempotency_key": idempotency_key,
        "team": team_or_default(team),
        "request_id": request_id,
    }

    def first_step(run: Run, *, key: str = "") -> Step:
        now = timezone.now()
        return Step(
            run=run,
            sequence=0,
            name=agent_type,
            agent_type=agent_type,
            input=data,
            max_attempts=agent.max_attempts,
            backoff_seconds=agent.backoff_seconds,
            max_backoff_seconds=agent.max_backoff_seconds,
            concurrency_key=key,
            queued_at=now,
            dispatched_at=None if key else now,
        )

    def insert_fast() -> Run | None:
        # The common case (no concurrency limit) in one statement; None if an operator's override sets one.
        run = Run(**fields)
        step = first_step(run)
        with transaction.atomic() if broker_in_this_database() else nullcontext():
            if not fastpath.run_insert(run=run, step=step):
                return None
            steps_dispatch_on_commit([step.pk])
        return run

    def insert() -> Run:
        policy = agent_policy_get(agent_type=agent_type)
        key = slots.agent_key(agent_type) if policy.limit else ""
        with transaction.atomic():
            run = Run.objects.create(concurrency_key=key, **fields)
            step = first_step(run, key=key)
            step.save(force_insert=True)
            if not key:
                steps_dispatch_on_commit([step.id])
            else:
                if policy.on_busy == OnBusy.REJECT:
                    _take_slot_or_reject(key=key, limit=policy.limit, step=step, run=run)
                step_enqueue(step=step, run=run)
        return run

    started = None
    if not agent.concurrency.limit and fastpath.enabled():
        started = _run_insert(
            created_by_id=fields["created_by_id"], idempotency_key=idempotency_key, insert=insert_fast
        )
    if started is None:
        started = _run_insert(created_by_id=fields["created_by_id"], idempotency_key=idempotency_key, insert=insert)
    run, created = started
    if created:
        log.info("run_created", run_id=str(run.id), agent_type=agent_type, user_id=str(user_id) if user_id else None)
    return run, created


def _run_insert(*, created_by_id, idempotency_key: str, insert) -> tuple[Run, bool] | None:
    """Insert a run with `insert()`; an idempotency key already used returns its run. None if insert() declined."""

    def existing() -> Run | None:
        if not idempotency_key:
            return None
        return Run.objects.filter(created_by_id=created_by_id, idempotency_key=idempotency_key).first()

    if found := existing():
        return found, False
    try:
        run = insert()
    except IntegrityError:
        if found := existing():  # a concurrent request with the same key won the race
            return found, False
        raise
    return None if run is None else (run, True)


def _take_slot_or_reject(*, key: str, limit: int, step: Step, run: Run) -> None:
    # The slot is taken in the transaction that creates the run, so two concurrent
    # requests can never both be accepted; its expiry is the start deadline.
    locked = slots.key_lock(key=key, limit=limit)
    if slots.slot_try_take(key=locked, step=step, expires_at=start_deadline()) is None:
        holders = [str(r) for r in Slot.objects.filter(key=locked).values_list("run_id", flat=True)]
        log.warning("agent_busy", agent_type=run.agent_type, user_id=str(run.user_id) if run.user_id else None)
        raise AgentBusy(
            f"Agent {run.agent_type!r} is already running at its concurrency limit ({limit}); "
            "try again when the current run has finished.",
            running=holders,
            limit=limit,
        )


def run_cancel(*, run_id: uuid.UUID) -> Run:
    """Cancel a run: steps not yet running stop now; a running step stops within the cancel-poll interval."""
    with transaction.atomic():
        # Lock order as in the engine: the run's step rows first (they serialise changes to the run).
        steps = list(Step.objects.select_for_update(of=("self",)).filter(run_id=run_id).order_by("sequence"))
        run = Run.objects.filter(pk=run_id).first()
        if run is None:
            raise RunNotFound()
        if run.is_finished:
            raise RunAlreadyFinished(f"Run {run.id} has already finished ({run.status}); nothing to cancel.")
        now = timezone.now()
        run.cancel_requested_at = run.cancel_requested_at or now
        Run.objects.filter(pk=run.pk).update(cancel_requested_at=run.cancel_requested_at)
        running = False
        for step in steps:
            if step.status not in (StepStatus.QUEUED, StepStatus.WAITING, StepStatus.RETRYING, StepStatus.RUNNING):
                continue
            if step.status == StepStatus.RUNNING:
                running = True  # its worker sees cancel_requested_at and stops the agent
            else:
                engine.step_end(step=step, run=run, status=StepStatus.CANCELLED, now=now)
        if not running:
            Run.objects.filter(pk=run.pk).exclude(status__in=[RunStatus.CANCELLED]).filter(
                finished_at__isnull=True
            ).update(status=RunStatus.CANCELLED, error="Cancelled.", finished_at=now)
    log.info("run_cancel_requested", run_id=str(run.id), running=running)
    run.refresh_from_db()
    return run


def run_rerun(*, run: Run, created_by=None, request_id: str = "") -> Run:
    """Start a new run with the same agent (or flow version) and input; `request_id` is the request's that asks.

    Raise RunNotFound if the run is gone (retention deleted it), or what starting a run raises.
    """
    with transaction.atomic():
        # The source run's row is held until the new run (rerun_of) is written: retention skips a held run, and
        # one it deleted first is RunNotFound here rather than a broken reference at commit.
        if not Run.objects.select_for_update(no_key=True).filter(pk=run.pk).exists():
            raise RunNotFound()
        common = {
            "request_id": request_id,
            "input": run.input,
            "user_id": run.user_id,
            "created_by": created_by,
            "rerun_of": run,
            "token_budget": run.token_budget,
            "team": run.team,
        }
        if run.flow_version_id:
            new_run, _ = flow_run_create(version=run.flow_version, **common)
        else:
            new_run, _ = run_create(agent_type=run.agent_type, **common)
    return new_run


def agent_policies_sync() -> None:
    """Make sure every registered agent type has its row (operators edit these in the admin)."""
    AgentPolicy.objects.bulk_create(
        [
            AgentPolicy(agent_type=name, concurrency_limit=cls.concurrency.limit, on_busy=str(cls.concurrency.on_busy))
            for name, cls in all_agents().items()
        ],
        ignore_conflicts=True,
    )


def agent_policy_update(
    *, agent_type: str, limit: int | None, on_busy: str, override: bool = True
) -> ConcurrencyPolicy:
    """Store an operator's concurrency policy for an agent type (or go back to the default); applies to the next run."""
    agent = get_agent(agent_type)  # raises UnknownAgentType
    if not override:
        limit, on_busy = agent.concurrency.limit, str(agent.concurrency.on_busy)
    with transaction.atomic():
        AgentPolicy.objects.update_or_create(
            agent_type=agent_type, defaults={"override": override, "concurrency_limit": limit, "on_busy": on_busy}
        )
        key_name = slots.agent_key(agent_type)
        if limit:
            # Waiting steps may now fit: hand out any new slots at once.
            slots.key_lock(key=key_name, limit=limit)
            slots_pump(key=key_name)
        else:
            # No limit any more: everyone waiting goes now, without a slot.
            waiting = list(Step.objects.filter(WAITING_QUEUE, concurrency_key=key_name).values_list("id", flat=True))
            Step.objects.filter(pk__in=waiting, status=StepStatus.WAITING).update(
                status=StepStatus.QUEUED, concurrency_key="", dispatched_at=timezone.now()
            )
            steps_dispatch_on_commit(waiting)
    log.info("agent_policy_updated", agent_type=agent_type, limit=limit, on_busy=on_busy)
    return agent_policy_get(agent_type=agent_type)


def flow_run_create(
    *,
    version: FlowVersion,
    input: dict[str, Any] | None,
    user_id: uuid.UUID | None = None,
    created_by=None,
    idempotency_key: str = "",
    rerun_of: Run | None = None,
    token_budget: int | None = None,
    team: Team | None = None,
    request_id: str = "",
) -> tuple[Run, bool]:
    """Start a run of a flow version; return (run, created). Raise AgentBusy on a `reject` flow at its limit.

    The run's token budget is the request's, else the flow's `budget.max_tokens`. The run belongs to the flow's
    team; a run of an inline version (no flow) to `team` (the default team if None). `request_id`: as run_create's.
    """
    if version.flow is not None and not version.flow.enabled:
        raise FlowDisabled(f"Flow {version.flow.slug!r} is disabled; enable it to start runs.")
    team = version.flow.team if version.flow is not None else team_or_default(team)
    definition = finish.definition_of(version.pk)
    run_input = input or {}
    key = ""
    if definition.concurrency:
        try:
            value = concurrency_key_value(definition, run_input)
        except ReferenceNotFound as exc:
            raise InvalidAgentInput({"input": [f"The flow's concurrency key needs it: {exc}"]}) from None
        name = version.flow.slug if version.flow else f"inline-{version.digest[:12]}"
        if value is not None and len(value) > MAX_KEY_VALUE_CHARS:
            value = "sha256-" + hashlib.sha256(value.encode()).hexdigest()
        # Flows are per team (slugs too), so are their slots.
        key = f"{slots.FLOW_PREFIX}{team.slug}/{name}" + (f":{value}" if value is not None else "")

    def start(run: Run) -> None:
        if key:
            locked = slots.key_lock(key=key, limit=definition.concurrency.limit)
            # A flow slot belongs to the run: the step passed only names the run.
            if definition.concurrency.on_busy == OnBusy.REJECT and not (
                not slots.has_waiters(key=locked)
                and slots.slot_try_take(key=locked, step=Step(run=run), expires_at=None)
            ):
                raise AgentBusy(
                    f"Flow {name!r} is already running at its concurrency limit "
                    f"({definition.concurrency.limit}) for this key; try again when a run has finished.",
                    limit=definition.concurrency.limit,
                )
        freed = finish.step_start_task(
            run=run, definition=definition, task_name=definition.start_task, sequence=0, now=timezone.now()
        )
        slots_pump_on_commit(freed)
        first = run.steps.get(sequence=0)
        if first.status == StepStatus.FAILED and first.error_code == "invalid_input":
            # The caller's input does not fit the first task: refuse the run rather than record a failure.
            raise InvalidAgentInput({"input": [first.error]})

    def insert() -> Run:
        with transaction.atomic():
            run = Run.objects.create(
                flow_version=version,
                input=run_input,
                user_id=user_id,
                concurrency_key=key,
                rerun_of=rerun_of,
                token_budget=token_budget or definition.token_budget,
                created_by_id=created_by_id,
                idempotency_key=idempotency_key,
                team=team,
                request_id=request_id,
            )
            start(run)
        return run

    created_by_id = getattr(created_by, "pk", None)
    run, created = _run_insert(created_by_id=created_by_id, idempotency_key=idempotency_key, insert=insert)
    if created:
        log.info("run_created", run_id=str(run.id), flow=key or str(version), user_id=str(user_id) if user_id else None)
    return run, created


def run_resume(*, run_id: uuid.UUID) -> Run:
    """Resume a FAILED flow run from its failed step; earlier steps' outputs are kept."""
    with transaction.atomic():
        steps = list(Step.objects.select_for_update(of=("self",)).filter(run_id=run_id).order_by("sequence"))
        run = Run.objects.filter(pk=run_id).first()
        if run is None:
            raise RunNotFound()
        if run.status != RunStatus.FAILED or run.flow_version_id is None or not steps:
            raise RunNotResumable(f"Run {run.id} is {run.status}: only a FAILED flow run can be resumed.")
        failed = steps[-1]
        Run.objects.filter(pk=run.pk, status=RunStatus.FAILED).update(
            status=RunStatus.RUNNING, error="", error_code="", result=None, finished_at=None
        )
        run.refresh_from_db()
        retry = Step.objects.create(
            run=run,
            sequence=failed.sequence + 1,
            name=failed.name,
            agent_type=failed.agent_type,
            input=failed.input,
            max_attempts=failed.max_attempts,
            backoff_seconds=failed.backoff_seconds,
            max_backoff_seconds=failed.max_backoff_seconds,
            timeout_seconds=failed.timeout_seconds,
            queued_at=timezone.now(),
        )
        step_enqueue(step=retry, run=run)
    log.info("run_resumed", run_id=str(run.id), step=failed.name)
    return run


# -- the failed-run queue: every retry or dismissal of a FAILED run is a RunDecision
# (These errors belong in runs/exceptions.py; they are here while that file is not this change's.)


def _failed_run_lock(*, run_id: uuid.UUID, not_failed: type[RunError]) -> Run:
    """The FAILED, undecided run `run_id`, its steps and its row locked until the transaction ends."""
    # Lock order as in the engine and run_cancel: the run's step rows first, then the run. The run's row lock
    # makes a second decision on the same failure wait for the first and then see it (PostgreSQL); the unique
    # (run, failed_at) index refuses it everywhere (SQLite has no row locks).
    list(Step.objects.select_for_update(of=("self",)).filter(run_id=run_id).values_list("pk", flat=True))
    run = Run.objects.select_for_update(of=("self",)).filter(pk=run_id).first()
    if run is None:
        raise RunNotFound()
    if run.status != RunStatus.FAILED:
        raise not_failed(f"Run {run.id} is {run.status}: only a FAILED run can be retried or dismissed.")
    if RunDecision.objects.filter(run=run, failed_at=_failed_at(run)).exists():
        raise RunAlreadyDecided(f"Run {run.id}'s failure was already retried or dismissed.")
    return run


def _failed_at(run: Run):
    # Every path that fails a run sets finished_at (engine.finish.run_end); the creation time stands in for a
    # row written by hand without one, as the "needs attention" selector does.
    return run.finished_at or run.created_at


def _decide(*, run_id: uuid.UUID, act, not_failed: type[RunError]) -> RunDecision:
    try:
        with transaction.atomic():
            run = _failed_run_lock(run_id=run_id, not_failed=not_failed)
            return act(run)
    except IntegrityError:
        # A concurrent decision on the same failure committed first (the unique index; SQLite has no row lock).
        if RunDecision.objects.filter(run_id=run_id).exists():
            raise RunAlreadyDecided(f"Run {run_id}'s failure was already retried or dismissed.") from None
        raise


def run_retry(*, run_id: uuid.UUID, decided_by=None, request_id: str = "") -> RunDecision:
    """Retry a FAILED run and keep the decision: a flow run resumes from its failed step, an agent run starts anew.

    An agent run's retry is a new run with the same agent, input, user and budget (`rerun_of` = the failed run),
    so the failed run keeps its error and attempts as they were. Raise RunNotResumable, RunAlreadyDecided, or what
    starting a run raises (AgentBusy, UnknownAgentType, InvalidAgentInput); then nothing is decided.
    """

    def act(run: Run) -> RunDecision:
        failed_at, error_code = _failed_at(run), run.error_code
        new_run = None
        if run.flow_version_id:
            run_resume(run_id=run.pk)
        else:
            new_run = run_rerun(run=run, created_by=decided_by, request_id=request_id)
        return RunDecision.objects.create(
            run=run,
            kind=DecisionKind.RETRY,
            failed_at=failed_at,
            error_code=error_code,
            decided_by=decided_by,
            new_run=new_run,
        )

    # `not_resumable`: the code this endpoint answered before agent runs could be retried too.
    decision = _decide(run_id=run_id, act=act, not_failed=RunNotResumable)
    log.info(
        "run_retried",
        run_id=str(run_id),
        new_run_id=str(decision.new_run_id) if decision.new_run_id else None,
        decided_by=getattr(decided_by, "pk", None),
    )
    return decision


def run_dismiss(*, run_id: uuid.UUID, reason: str, decided_by=None) -> RunDecision:
    """Dismiss a FAILED run with a reason (it no longer needs attention); raise RunNotFailed or RunAlreadyDecided."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidFields({"reason": ["Say why the run is dismissed."]})

    def act(run: Run) -> RunDecision:
        return RunDecision.objects.create(
            run=run,
            kind=DecisionKind.DISMISS,
            reason=reason,
            failed_at=_failed_at(run),
            error_code=run.error_code,
            decided_by=decided_by,
        )

    decision = _decide(run_id=run_id, act=act, not_failed=RunNotFailed)
    log.info("run_dismissed", run_id=str(run_id), decided_by=getattr(decided_by, "pk", None))
    return decision


def runs_delete(*, run_ids, condition: Q | None = None) -> int:
    """Delete the finished runs among `run_ids` (that also meet `condition`); return how many went.

    Each goes with its steps, attempts, slots, decisions and per-run digest deliveries, and is counted on in
    `DeletedRuns` (Prometheus' agent_runs_total never goes down). A run that has not finished, or whose row or
    step rows someone holds right now (a late message, a cancel, a retry, a resume, a re-run), is left as it is:
    the rows are locked in the engine's order (a run's steps, then the run) with SKIP LOCKED, so this never
    waits for anyone.
    """
    run_ids = list(run_ids)
    if not run_ids:
        return 0
    with transaction.atomic():
        steps = Step.objects.filter(run_id__in=run_ids)
        locked = set(steps.select_for_update(skip_locked=True).values_list("pk", flat=True))
        busy = {run_id for pk, run_id in steps.values_list("pk", "run_id") if pk not in locked}
        doomed = list(
            Run.objects.filter(pk__in=[pk for pk in run_ids if pk not in busy], status__in=RUN_FINISHED)
            .filter(condition or Q())
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        if not doomed:
            return 0
        labels = (
            Run.objects.filter(pk__in=doomed)
            .order_by()
            .values("agent_type", "flow_version__flow__slug", "status")
            .annotate(n=Count("pk"))
        )
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for row in labels:  # two flows of two teams may share a slug: one label
            added = counts.setdefault((run_agent_label(row), row["status"]), {"count": 0})
            added["count"] += row["n"]
        counts_add(DeletedRuns, counts, keys=("agent", "status"))
        _, by_model = Run.objects.filter(pk__in=doomed).delete()
    deleted = by_model.get(Run._meta.label, 0)
    log.info("runs_deleted", runs=deleted, steps=by_model.get(Step._meta.label, 0), asked=len(run_ids))
    return deleted
