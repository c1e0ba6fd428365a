"""Retention: finished runs older than their team's retention are deleted, a batch at a time.

- **How long:** a team's `run_retention_days`, else RUN_RETENTION_DAYS; 0 keeps every run (the default).
- **What goes:** a run that has finished (RUN_FINISHED) and was both created and finished before the cutoff
  (a flow run resumed last week stays for its new finish), with its steps, attempts, slots, retry/dismiss
  decisions and per-run digest deliveries. What else points at it stays, its reference emptied: LLM calls (the
  cost record and the monthly budgets), schedule fires, re-runs and retries. Other apps delete a team's old
  history through `retention_work` receivers (schedules: old fires).
- **Where:** a batch in the elected engine tick (`retention_tick`) now and then, team after team, and at once
  again while batches come back full; `manage.py purge_runs` for a backlog or a one-off clean-up. The same
  tick deletes old LLM calls whose run is gone (LLM_CALL_RETENTION_DAYS, agentrunner.llm.retention).
- **Counted:** each batch adds its runs to `DeletedRuns` in the delete's transaction (runs_delete), so
  Prometheus' `agent_runs_total` never goes down.
- **Races:** `runs.services.runs_delete` (the admin's deletes too) locks a batch's step rows, then its runs
  (the engine's order), with SKIP LOCKED: a run that a retry, resume, re-run or late message holds is left for
  a later batch, and the purge never waits for anyone; a run deleted first is RunNotFound to them (run_rerun
  holds its source run's row for that). On SQLite every transaction is IMMEDIATE: one writer at a time.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db.models import Q
from django.dispatch import Signal

from agentrunner.llm import retention as llm_retention
from agentrunner.models import Team
from runs.models import RUN_FINISHED, Run
from runs.services import runs_delete

log = structlog.get_logger("agentrunner.retention")

BATCH = 200  # runs per transaction: their steps and attempts go with them
CHECK_EVERY_SECONDS = 60.0  # between two looks for old runs in one process, unless the last batch was full
OTHER_BATCH = 500  # rows of another app's history (`retention_work`) per team and look

# Other apps' old rows of a team (schedule fires): a receiver takes `team_id` and `before`, deletes at most
# OTHER_BATCH of that team's rows older than `before`, and returns how many it deleted.
retention_work = Signal()


def retention_cutoff(*, now: datetime, days: int) -> datetime:
    """Runs created and finished before this moment are old enough to delete."""
    return now - timedelta(days=days)


def retention_plan(*, team_id: int | None = None) -> list[tuple[int, int]]:
    """(team id, days to keep) of every team (or of `team_id`) whose old runs are deleted, in team order."""
    default = settings.RUN_RETENTION_DAYS
    teams = Team.objects.order_by("pk").values_list("pk", "run_retention_days")
    if team_id is not None:
        teams = teams.filter(pk=team_id)
    elif not default:
        teams = teams.filter(run_retention_days__gt=0)
    plan = [(pk, default if own is None else own) for pk, own in teams]
    return [(pk, days) for pk, days in plan if days]


def runs_to_purge(*, before: datetime, team_id: int | None = None):
    """Finished runs created and finished before `before`, oldest first (through the team's or the created index)."""
    runs = Run.objects.filter(created_at__lt=before, finished_at__lt=before, status__in=RUN_FINISHED)
    if team_id is not None:
        runs = runs.filter(team_id=team_id)
    return runs.order_by("created_at")


def runs_purge(*, before: datetime, team_id: int | None = None, batch: int = BATCH) -> int:
    """Delete up to `batch` of the oldest runs that `runs_to_purge` names (runs_delete); return how many went."""
    candidates = list(runs_to_purge(before=before, team_id=team_id).values_list("pk", flat=True)[:batch])
    # The age again under the rows' locks: a run resumed since it was read has a new finish.
    return runs_delete(run_ids=candidates, condition=Q(created_at__lt=before, finished_at__lt=before))


_next_check = 0.0  # time.monotonic() of this process's next look for old runs
_last_full_team = 0  # the team whose runs filled the last batch: the next look starts after it


def retention_tick(sender, now, **kwargs):
    """`tick_work` receiver: now and then, a batch of each team's old runs and history, and of old LLM calls."""
    global _next_check, _last_full_team
    if time.monotonic() < _next_check:
        return None
    _next_check = time.monotonic() + CHECK_EVERY_SECONDS  # set first: a look that fails waits its minute too
    room, plan = BATCH, retention_plan()
    # Round robin: a look that filled its batch in one team starts the next one with the teams after it, so a
    # team's backlog does not keep the others waiting.
    turn = [t for t in plan if t[0] > _last_full_team] + [t for t in plan if t[0] <= _last_full_team]
    for team_id, days in turn:
        room -= runs_purge(before=retention_cutoff(now=now, days=days), team_id=team_id, batch=room)
        if room <= 0:
            _last_full_team = team_id
            break
    history, history_full = 0, False
    for team_id, days in plan:
        before = retention_cutoff(now=now, days=days)
        for receiver, result in retention_work.send_robust(sender=retention_tick, team_id=team_id, before=before):
            if isinstance(result, Exception):  # one app's failure must not stop the rest
                log.error("retention_work_failed", receiver=getattr(receiver, "__qualname__", ""), error=repr(result))
                continue
            history += result or 0
            history_full = history_full or (result or 0) >= OTHER_BATCH
    calls = 0
    if days := settings.LLM_CALL_RETENTION_DAYS:
        calls = llm_retention.llm_calls_purge(before=retention_cutoff(now=now, days=days), batch=llm_retention.BATCH)
    # A full batch means there may be more: the next tick goes on with them.
    if room <= 0 or calls >= llm_retention.BATCH or history_full:
        _next_check = 0.0
    done = {"runs_purged": BATCH - room, "llm_calls_purged": calls, "history_purged": history}
    return {k: v for k, v in done.items() if v} or None
