"""The engine's statements find their rows by primary key, whatever PostgreSQL's statistics say.

Statistics lag behind a burst: they are taken when the tables hold no QUEUED step and no PENDING run,
then a thousand runs arrive. A guard such as `status = 'QUEUED'` that an index could serve then
looks more selective than the primary key, and each claim scans the whole burst (seen: drains of
1,000 runs got slower with every run). The partial work-list indexes must still serve the queries
that read the lists.
"""

import json

import pytest
from django.db import connection
from django.utils import timezone

from agentrunner.teams.services import team_default
from runs.engine import fastpath, recovery, slots
from runs.models import AttemptStatus, Run, RunStatus, Step, StepAttempt, StepStatus

pytestmark = [
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's planner"),
    pytest.mark.django_db,
]

BY_KEY = {
    "runs_step": {"runs_step_pkey", "step_run_sequence_unique"},  # (a run has a handful of steps)
    "runs_run": {"runs_run_pkey"},
    "runs_stepattempt": {"attempt_step_number_unique"},
}


def plan(sql: str, params, *, generic: bool = False) -> dict:
    """The plan for these values, or (generic) the plan a prepared statement reuses for any values."""
    if generic:
        with fastpath.prepared_cursor() as cursor:
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            cursor.cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params, prepare=True)
            value = cursor.fetchone()[0]
    else:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            value = cursor.fetchone()[0]
    return (json.loads(value) if isinstance(value, str) else value)[0]["Plan"]


def scans(node: dict):
    """Every node that reads a table (not the table an UPDATE or INSERT writes)."""
    if node.get("Relation Name") and node["Node Type"] != "ModifyTable":
        yield node["Relation Name"], node["Node Type"], node.get("Index Name")
    for child in node.get("Plans", []):
        yield from scans(child)


def assert_by_primary_key(sql: str, params, *, generic: bool = False) -> None:
    found = list(scans(plan(sql, params, generic=generic)))
    assert found, "no table read in the plan"
    for table, kind, index in found:
        if table in BY_KEY:
            assert kind in {"Index Scan", "Index Only Scan"} and index in BY_KEY[table], (table, kind, index)


def burst(*, analyze_before: bool, finished: int = 3000, new: int = 600) -> list[Step]:
    """Finished runs, then (with analyze_before, statistics taken now) a burst of new runs."""
    now = timezone.now()

    def runs_with_steps(n, run_status, step_status):
        runs = Run.objects.bulk_create(Run(agent_type="pass", status=run_status, team=team_default()) for _ in range(n))
        return Step.objects.bulk_create(
            Step(run=run, name="pass", agent_type="pass", status=step_status, queued_at=now, dispatched_at=now)
            for run in runs
        )

    done = runs_with_steps(finished, RunStatus.COMPLETED, StepStatus.SUCCESS)
    StepAttempt.objects.bulk_create(
        StepAttempt(step=step, number=1, status=AttemptStatus.SUCCESS, started_at=now, finished_at=now) for step in done
    )
    if analyze_before:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE runs_run; ANALYZE runs_step; ANALYZE runs_stepattempt")
    return runs_with_steps(new, RunStatus.PENDING, StepStatus.QUEUED)


@pytest.mark.parametrize("analyze_before", [True, False], ids=["stale-statistics", "statistics-as-they-are"])
def test_claim_finish_and_guarded_updates_go_by_key_in_a_burst(analyze_before):
    """Stale: the statistics say no step is QUEUED. As they are: none at all where autovacuum is off."""
    steps = burst(analyze_before=analyze_before)
    now = timezone.now()
    step = steps[len(steps) // 2]
    for generic in (False, True):  # as planned for these values, and as prepared (fastpath.prepared_cursor)
        assert_by_primary_key(
            fastpath.CLAIM_SQL,
            fastpath.claim_params(step_id=step.pk, worker_id="w", now=now, lease=now),
            generic=generic,
        )
        assert_by_primary_key(
            fastpath.FINISH_SQL,
            fastpath.finish_params(step_id=step.pk, attempt=1, worker_id="w", output={"ok": True}, now=now),
            generic=generic,
        )
    for queryset in [
        Step.objects.filter(pk=step.pk, status=StepStatus.QUEUED),  # step_move's guard
        Step.objects.filter(pk=step.pk, status=StepStatus.WAITING, concurrency_key="agent:x"),  # waiter_wake's
        Run.objects.filter(pk=step.run_id, started_at__isnull=True),  # the ORM claim's "not started yet"
    ]:
        assert_by_primary_key(*queryset.query.sql_with_params())


def test_work_lists_can_use_their_partial_index():
    """The engine's queries that read a work list state its index's condition (else it is never used)."""
    burst(analyze_before=True)
    now = timezone.now()
    work_lists = {
        "step_running_lease": recovery.steps_lease_expired(now=now),
        "step_retrying_due": recovery.steps_due_for_retry(now=now),
        "step_queued_dispatched": recovery.steps_dispatched_before(cutoff=now),
        "step_waiting_fifo": slots.steps_waiting(key=slots.agent_key("pass")),
    }
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # ask whether the index *can* serve, not whether it pays
    for index, queryset in work_lists.items():
        used = {found for _, _, found in scans(plan(*queryset.query.sql_with_params()))}
        assert index in used, (index, used)
