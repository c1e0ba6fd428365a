"""Retention on PostgreSQL: how fast old runs (and LLM calls) are deleted, against bare SQL deleting the same rows.

    .venv/bin/python bench/retention_bench.py [--runs 10000] [--rounds 2]

Each round writes --runs finished runs from 100 days ago, each with a step, an attempt and an LLM call, then
deletes them twice over, timed (the rows are written again in between):

- retention: `runs.retention.runs_purge` (a batch of runs.retention.BATCH runs per transaction: locks, the
  DeletedRuns tally, Django's cascade), then `agentrunner.llm.retention.llm_calls_purge` for the calls it left
  without a run;
- bare: the same batches in plain SQL, one transaction each: DELETE the attempts, the steps and the runs,
  with the calls' run and step set to NULL, then DELETE the calls, with no lock, tally or ORM.

Prints runs (and calls) deleted per second and the ratio; asserts nothing. Its own database, dropped at the
end, on the server DATABASE_URL names.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import engine_bench as eb  # noqa: E402

DAYS_AGO = 100
KEEP_DAYS = 30


def write_old_runs(n: int) -> None:
    """`n` finished runs of DAYS_AGO days ago, each with a step, an attempt and an LLM call."""
    import uuid
    from decimal import Decimal

    from django.utils import timezone

    from agentrunner.models import LLMCall
    from agentrunner.teams.services import team_default
    from runs.models import Run, RunStatus, Step, StepAttempt

    team, old = team_default(), timezone.now() - timedelta(days=DAYS_AGO)
    runs = Run.objects.bulk_create(
        [
            Run(
                agent_type="pass",
                status=RunStatus.COMPLETED,
                input={"i": i},
                result={"i": i},
                team=team,
                started_at=old,
                finished_at=old,
            )  # fmt: skip
            for i in range(n)
        ],
        batch_size=2000,
    )
    Run.objects.update(created_at=old)
    steps = Step.objects.bulk_create(
        [Step(run=r, name="pass", agent_type="pass", status="SUCCESS", input={}, queued_at=old) for r in runs],
        batch_size=2000,
    )
    StepAttempt.objects.bulk_create(
        [
            StepAttempt(step=s, number=1, status="SUCCESS", worker_id="w", started_at=old, finished_at=old)
            for s in steps
        ],
        batch_size=2000,
    )
    LLMCall.objects.bulk_create(
        [
            LLMCall(
                request_id=uuid.uuid4(),
                provider="openai",
                model="gpt-test",
                outcome="success",
                prompt_tokens=20,
                completion_tokens=10,
                total_tokens=30,
                cost_usd=Decimal("0.001"),
                run=s.run,
                step=s,
                team=team,
                created_at=old,
            )  # fmt: skip
            for s in steps
        ],
        batch_size=2000,
    )


def purge_with_retention() -> tuple[int, float, int, float]:
    from django.utils import timezone

    from agentrunner.llm.retention import llm_calls_purge
    from runs.retention import retention_cutoff, runs_purge

    before = retention_cutoff(now=timezone.now(), days=KEEP_DAYS)
    started, runs = time.perf_counter(), 0
    while deleted := runs_purge(before=before):
        runs += deleted
    runs_seconds = time.perf_counter() - started
    started, calls = time.perf_counter(), 0
    while deleted := llm_calls_purge(before=before):
        calls += deleted
    return runs, runs_seconds, calls, time.perf_counter() - started


def purge_bare() -> tuple[int, float, int, float]:
    from django.db import connection, transaction
    from django.utils import timezone

    from runs.retention import BATCH

    before = timezone.now() - timedelta(days=KEEP_DAYS)
    started, runs = time.perf_counter(), 0
    with connection.cursor() as cursor:
        while True:
            with transaction.atomic():
                cursor.execute(
                    "SELECT id FROM runs_run WHERE created_at < %s AND finished_at < %s ORDER BY created_at LIMIT %s",
                    [before, before, BATCH],
                )
                ids = [row[0] for row in cursor.fetchall()]
                if not ids:
                    break
                cursor.execute(
                    "UPDATE agentrunner_llmcall SET run_id = NULL, step_id = NULL WHERE run_id = ANY(%s)", [ids]
                )
                cursor.execute(
                    "DELETE FROM runs_stepattempt WHERE step_id IN (SELECT id FROM runs_step WHERE run_id = ANY(%s))",
                    [ids],
                )
                cursor.execute("DELETE FROM runs_step WHERE run_id = ANY(%s)", [ids])
                cursor.execute("DELETE FROM runs_run WHERE id = ANY(%s)", [ids])
                runs += len(ids)
        runs_seconds = time.perf_counter() - started
        started, calls = time.perf_counter(), 0
        while True:
            cursor.execute(
                "DELETE FROM agentrunner_llmcall WHERE id IN (SELECT id FROM agentrunner_llmcall WHERE run_id IS NULL "
                "AND created_at < %s ORDER BY created_at LIMIT 1000)",
                [before],
            )
            if not cursor.rowcount:
                break
            calls += cursor.rowcount
    return runs, runs_seconds, calls, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10000, help="old runs written before each measure")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, retention and bare alternating")
    args = parser.parse_args()
    server, note = eb.server_params()
    print(f"Retention bench: database {eb.BENCH_DB} on {server['host']}:{server['port']}. {note}", flush=True)
    eb.recreate_database(server, name=eb.BENCH_DB)
    eb.configure_environment(eb.bench_url(server), "")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, interactive=False)
    figures: dict[str, list[tuple[float, float]]] = {"retention": [], "bare": []}
    try:
        for _ in range(args.rounds):
            for name, purge in (("retention", purge_with_retention), ("bare", purge_bare)):
                write_old_runs(args.runs)
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE")
                runs, runs_seconds, calls, calls_seconds = purge()
                assert runs == args.runs and calls == args.runs, (name, runs, calls)
                figures[name].append((runs / runs_seconds, calls / calls_seconds))
    finally:
        connection.close()
        eb.recreate_database(server, name=eb.BENCH_DB, drop_only=True)
    best = {name: (max(r for r, _ in rows), max(c for _, c in rows)) for name, rows in figures.items()}
    print(f"  {args.runs:,} old runs (a step, an attempt, an LLM call each), best of {args.rounds} rounds:")
    print(f"  {'':28}{'retention':>12}{'bare SQL':>12}{'ratio':>8}")
    for i, label in enumerate(("runs deleted per second", "LLM calls deleted per second")):
        ours, bare = best["retention"][i], best["bare"][i]
        print(f"  {label:28}{ours:>12,.0f}{bare:>12,.0f}{ours / bare:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
