"""Retention: old finished runs go with their steps, attempts and decisions; what points at them stays."""

import threading
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from agentrunner.llm.retention import llm_calls_purge
from agentrunner.models import LLMCall, LLMOutcome, Team
from digests.models import DigestDelivery
from runs import engine, retention, services
from runs.exceptions import RunNotFound
from runs.models import DeletedRuns, Run, RunDecision, RunStatus, Step, StepAttempt
from schedules.models import ScheduleFire
from tests.agentrunner.test_metrics import llm_call, scrape, value
from tests.conftest import wait_for
from tests.digests.factories import digest
from tests.runs.factories import make_run
from tests.runs.test_dead_letters_races import postgres_only, someone_waits_for_a_lock
from tests.schedules.factories import schedule

pytestmark = pytest.mark.django_db

DAYS = 30


def aged(run: Run, *, created_days: float, finished_days: float | None = None) -> Run:
    """Move `run` into the past: created `created_days` ago, finished `finished_days` ago (default: the same)."""
    now = timezone.now()
    fields = {"created_at": now - timedelta(days=created_days)}
    if run.finished_at is not None:
        fields["finished_at"] = now - timedelta(days=created_days if finished_days is None else finished_days)
    Run.objects.filter(pk=run.pk).update(**fields)
    run.refresh_from_db()
    return run


def old_run(status=RunStatus.COMPLETED, *, days=DAYS + 10, **fields) -> Run:
    return aged(make_run(status, **fields), created_days=days)


def call_of(run: Run | None, *, days: float = 0, step=None, outcome=LLMOutcome.SUCCESS) -> LLMCall:
    """An LLM call of `run` (20 + 10 tokens, $0.50) made `days` ago."""
    call = llm_call("openai", "gpt-test", outcome, prompt=20, completion=10, cost="0.5", team=run.team if run else None)
    LLMCall.objects.filter(pk=call.pk).update(run=run, step=step, created_at=timezone.now() - timedelta(days=days))
    call.refresh_from_db()
    return call


def cutoff():
    return retention.retention_cutoff(now=timezone.now(), days=DAYS)


def exists(run: Run) -> bool:
    return Run.objects.filter(pk=run.pk).exists()


@pytest.fixture(autouse=True)
def fresh_check(monkeypatch):
    monkeypatch.setattr(retention, "_next_check", 0.0)
    monkeypatch.setattr(retention, "_last_full_team", 0)


def test_purge__old_finished_runs_go_with_steps_attempts_and_decisions_the_rest_stays():
    completed, failed = old_run(), old_run(RunStatus.FAILED, agent_type="pass", error_code="boom")
    services.run_dismiss(run_id=failed.pk, reason="seen")
    recent = make_run(RunStatus.COMPLETED)
    running_for_long = old_run(RunStatus.RUNNING)  # not finished: never deleted, however old
    resumed_lately = aged(make_run(RunStatus.FAILED), created_days=DAYS + 10, finished_days=1)
    gone_steps = list(Step.objects.filter(run__in=[completed, failed]).values_list("pk", flat=True))

    assert retention.runs_purge(before=cutoff()) == 2

    assert not exists(completed) and not exists(failed)
    assert all(exists(r) for r in (recent, running_for_long, resumed_lately))
    assert not Step.objects.filter(pk__in=gone_steps).exists()
    assert not StepAttempt.objects.filter(step_id__in=gone_steps).exists()
    assert not RunDecision.objects.exists()
    assert Step.objects.filter(run__in=[recent, running_for_long, resumed_lately]).count() == 3


def test_purge__what_points_at_a_deleted_run_stays_with_an_empty_reference_but_its_per_run_email():
    old = old_run()
    step = old.steps.get()
    call = call_of(old, step=step)
    every_10_min = schedule()
    fire = ScheduleFire.objects.create(schedule=every_10_min, intended_at=old.created_at, status="started", run=old)
    rerun = make_run(RunStatus.COMPLETED, rerun_of=old)
    per_run = digest(schedule=every_10_min, period="after_run")
    mailed, daily = (
        DigestDelivery.objects.create(
            subscription=per_run, period_key=key, period_start=old.finished_at, period_end=old.finished_at, run=run
        )
        for key, run in ((f"run:{old.pk}", old), ("2026-11-01T08:00:00+00:00", None))
    )

    assert retention.runs_purge(before=cutoff()) == 1

    call.refresh_from_db()
    fire.refresh_from_db()
    rerun.refresh_from_db()
    assert (call.run_id, call.step_id, call.team_id, call.total_tokens) == (None, None, old.team_id, 30)
    assert fire.run_id is None and fire.status == "started"
    assert rerun.rerun_of_id is None
    # A per-run email's delivery goes with its run: emptied, it would read as a period's (run IS NULL).
    assert list(DigestDelivery.objects.values_list("pk", flat=True)) == [daily.pk]


def test_purge__a_batch_at_a_time_oldest_first():
    runs = [old_run(days=DAYS + 10 - i) for i in range(5)]  # runs[0] is the oldest

    assert retention.runs_purge(before=cutoff(), batch=2) == 2
    assert [exists(r) for r in runs] == [False, False, True, True, True]
    assert retention.runs_purge(before=cutoff(), batch=2) == 2
    assert retention.runs_purge(before=cutoff(), batch=2) == 1
    assert retention.runs_purge(before=cutoff(), batch=2) == 0


def test_purge__agent_runs_total_never_goes_down():
    for status in (RunStatus.COMPLETED, RunStatus.COMPLETED, RunStatus.FAILED):
        old_run(status, agent_type="pass")
    make_run(RunStatus.COMPLETED, agent_type="pass")
    before = scrape()

    assert retention.runs_purge(before=cutoff()) == 3
    old_run(RunStatus.COMPLETED, agent_type="pass")
    assert retention.runs_purge(before=cutoff()) == 1  # the second batch adds to the same row

    after = scrape()
    assert value(before, "agent_runs_total", agent="pass", status="COMPLETED") == 3
    assert value(after, "agent_runs_total", agent="pass", status="COMPLETED") == 4
    assert value(after, "agent_runs_total", agent="pass", status="FAILED") == 1
    assert value(before, "agent_runs_deleted_total") == 0
    assert value(after, "agent_runs_deleted_total") == 4
    assert dict(DeletedRuns.objects.values_list("status", "count")) == {"COMPLETED": 3, "FAILED": 1}


def test_tick__purges_only_when_retention_is_set(settings, monkeypatch):
    old = old_run()

    settings.RUN_RETENTION_DAYS = 0
    assert "runs_purged" not in engine.engine_tick(worker_id="t", force=True)
    assert exists(old)

    settings.RUN_RETENTION_DAYS = DAYS
    monkeypatch.setattr(retention, "_next_check", 0.0)  # a minute later
    assert engine.engine_tick(worker_id="t", force=True)["runs_purged"] == 1
    assert not exists(old)


def team(*, run_retention_days, slug=None):
    slug = slug or {10: "short", None: "forever", 0: "keeps-all"}[run_retention_days]
    return Team.objects.create(name=slug.title(), slug=slug, run_retention_days=run_retention_days)


def test_purge__each_team_keeps_runs_as_long_as_it_says_else_the_default(settings):
    settings.RUN_RETENTION_DAYS = DAYS
    teams = {"short": team(run_retention_days=10), "default": None, "keeps-all": team(run_retention_days=0)}
    runs = {(slug, age): old_run(days=age, team=t) for slug, t in teams.items() for age in (20, DAYS + 10)}

    engine.engine_tick(worker_id="t", force=True)

    assert {key for key, run in runs.items() if exists(run)} == {
        ("default", 20),
        ("keeps-all", 20),
        ("keeps-all", DAYS + 10),
    }


def test_tick__a_teams_old_schedule_fires_go_too_but_a_queued_one_waits(settings):
    settings.RUN_RETENTION_DAYS = DAYS
    ours, forever_team = schedule(), team(run_retention_days=0)
    theirs = schedule(name="theirs", team=forever_team)
    now = timezone.now()

    def fire(on, days, status="started"):
        return ScheduleFire.objects.create(schedule=on, intended_at=now - timedelta(days=days), status=status)

    old, queued, recent, kept = fire(ours, 40), fire(ours, 41, "queued"), fire(ours, 1), fire(theirs, 40)

    summary = engine.engine_tick(worker_id="t", force=True)

    assert summary["history_purged"] == 1
    assert set(ScheduleFire.objects.values_list("pk", flat=True)) == {queued.pk, recent.pk, kept.pk}
    assert not ScheduleFire.objects.filter(pk=old.pk).exists()


def test_tick__teams_take_turns_so_a_backlog_keeps_no_other_team_waiting(settings, monkeypatch):
    settings.RUN_RETENTION_DAYS = DAYS
    monkeypatch.setattr(retention, "BATCH", 2)
    backlog = [old_run() for _ in range(6)]  # the default team, first in team order
    other = old_run(team=team(run_retention_days=10))

    engine.engine_tick(worker_id="t", force=True)  # the default team fills the batch
    engine.engine_tick(worker_id="t", force=True)  # then the teams after it come first

    assert not exists(other)
    assert sum(exists(r) for r in backlog) == 3


def test_tick__an_apps_failing_history_clean_up_stops_nothing_else(settings, caplog):
    settings.RUN_RETENTION_DAYS = DAYS
    old = old_run()

    def broken(sender, team_id, before, **kwargs):
        raise RuntimeError("boom")

    retention.retention_work.connect(broken, dispatch_uid="test-broken")
    try:
        summary = engine.engine_tick(worker_id="t", force=True)
    finally:
        retention.retention_work.disconnect(dispatch_uid="test-broken")

    assert summary["runs_purged"] == 1 and not exists(old)
    assert "retention_work_failed" in caplog.text


def test_tick__a_look_that_fails_waits_its_minute_before_the_next(settings, monkeypatch, caplog):
    settings.RUN_RETENTION_DAYS = DAYS
    old = old_run()
    calls = []

    def broken(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("database gone")

    monkeypatch.setattr(retention, "runs_purge", broken)
    engine.engine_tick(worker_id="t", force=True)
    engine.engine_tick(worker_id="t", force=True)  # not again at once: no error log every tick

    assert len(calls) == 1 and exists(old)
    assert caplog.text.count("tick_work_failed") == 1


def test_tick__looks_again_at_once_after_a_full_batch_else_a_minute_later(settings, monkeypatch):
    settings.RUN_RETENTION_DAYS = DAYS
    monkeypatch.setattr(retention, "BATCH", 2)
    old_run(), old_run(), old_run(team=team(run_retention_days=10))

    assert engine.engine_tick(worker_id="t", force=True)["runs_purged"] == 2  # full: more may wait
    assert engine.engine_tick(worker_id="t", force=True)["runs_purged"] == 1  # the next team's
    old_run()
    assert "runs_purged" not in engine.engine_tick(worker_id="t", force=True)  # checked a moment ago
    assert Run.objects.count() == 1


def test_a_late_message_for_a_deleted_runs_step_does_nothing():
    old = old_run()
    step_id = old.steps.get().pk
    retention.runs_purge(before=cutoff())

    engine.step_execute(step_id=step_id)  # a duplicate delivery, long after

    assert not Run.objects.exists()


def test_rerun_of_a_deleted_run_is_run_not_found():
    old = old_run(agent_type="pass", input={"x": 1})
    retention.runs_purge(before=cutoff())

    with pytest.raises(RunNotFound):
        services.run_rerun(run=old)
    assert not Run.objects.exists()


def test_admin_run_list__says_how_long_runs_are_kept(admin_client, settings):
    def note() -> str:
        page = admin_client.get(reverse("admin:runs_run_changelist")).content.decode()
        return " ".join(page.split())

    settings.RUN_RETENTION_DAYS = 0
    assert "run-retention" not in note()

    settings.RUN_RETENTION_DAYS = 90
    assert "Finished runs are kept for 90 days, then deleted with their steps and attempts." in note()

    team(run_retention_days=10)  # a superuser sees every team's runs
    assert "Finished runs are kept as long as their team says (see Teams), then deleted" in note()


def test_admin_delete__counts_the_runs_on_and_goes_through_the_same_service(admin_client):
    done, other = make_run(RunStatus.COMPLETED, agent_type="pass"), make_run(RunStatus.FAILED, agent_type="pass")
    pending = make_run(RunStatus.PENDING, agent_type="pass")
    changelist = reverse("admin:runs_run_changelist")

    admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [done.pk], "post": "yes"})
    admin_client.post(reverse("admin:runs_run_delete", args=[other.pk]), {"post": "yes"})

    assert list(Run.objects.values_list("pk", flat=True)) == [pending.pk]
    assert dict(DeletedRuns.objects.values_list("status", "count")) == {"COMPLETED": 1, "FAILED": 1}
    assert value(scrape(), "agent_runs_total", agent="pass", status="COMPLETED") == 1


# --- manage.py purge_runs ------------------------------------------------------------------------


def test_command__dry_run_counts_and_deletes_nothing(capsys):
    runs = [old_run() for _ in range(3)]

    call_command("purge_runs", "--days", str(DAYS), "--dry-run")

    out = capsys.readouterr().out
    assert f"default: 3 runs finished before {cutoff():%Y-%m-%d}" in out and "Would delete 3 runs." in out
    assert all(exists(r) for r in runs)


def test_command__deletes_every_batch(settings, capsys):
    settings.RUN_RETENTION_DAYS = DAYS
    for _ in range(5):
        old_run()
    kept = make_run(RunStatus.COMPLETED)

    call_command("purge_runs", "--batch", "2")

    assert "Deleted 5 runs." in capsys.readouterr().out
    assert list(Run.objects.values_list("pk", flat=True)) == [kept.pk]


def test_command__without_retention_anywhere_says_so_and_deletes_nothing(settings, capsys):
    settings.RUN_RETENTION_DAYS = 0
    old = old_run()

    call_command("purge_runs")

    assert "Nothing to delete: every team keeps its runs" in capsys.readouterr().out
    assert exists(old)


def test_command__each_team_as_it_keeps_runs_or_one_team_with_days(settings, capsys):
    settings.RUN_RETENTION_DAYS = 0
    short, forever = team(run_retention_days=10), team(run_retention_days=None)
    runs = {t.slug: old_run(days=20, team=t) for t in (short, forever)}

    call_command("purge_runs")
    assert not exists(runs["short"]) and exists(runs["forever"])

    call_command("purge_runs", "--team", "forever", "--days", "15")
    assert not exists(runs["forever"])
    assert "forever: 1 runs finished before" in capsys.readouterr().out.splitlines()[-2]


@pytest.mark.parametrize(
    "args",
    [["--days", "0"], ["--days", "5", "--batch", "0"], ["--days", "99999999"], ["--team", "nope", "--days", "9"]],
)
def test_command__refuses_what_it_cannot_do(settings, args):
    settings.RUN_RETENTION_DAYS = 0
    old = old_run()

    with pytest.raises(CommandError):
        call_command("purge_runs", *args)
    assert exists(old)


# --- races on two PostgreSQL connections -----------------------------------------------------------


def hold(sql: str, params) -> tuple:
    """A second connection that takes a row lock and keeps it until `release()`."""
    other = connections.create_connection("default")
    other.set_autocommit(False)
    with other.cursor() as cursor:
        cursor.execute(sql, params)

    def release():
        other.rollback()
        other.close()

    return other, release


def paused(monkeypatch, owner, name: str) -> tuple[threading.Event, threading.Event]:
    """Make `owner.name` wait when called until the test says go on: (reached, go_on)."""
    reached, go_on = threading.Event(), threading.Event()
    real = getattr(owner, name)

    def pause_then_call(*args, **kwargs):
        reached.set()
        assert go_on.wait(10), "the other side never came"
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, pause_then_call)
    return reached, go_on


def in_thread(call) -> tuple[threading.Thread, list]:
    """Start `call` on a thread (its own database connection); the list gets its result or its exception."""
    outcome: list = []

    def target():
        try:
            outcome.append(call())
        except Exception as exc:  # noqa: BLE001 (the test reads it)
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 FROM runs_step WHERE run_id = %s FOR UPDATE",  # the engine, a cancel, a retry: steps first
        "SELECT 1 FROM runs_run WHERE id = %s FOR NO KEY UPDATE",  # a re-run holding its source run
    ],
)
def test_race__a_run_held_elsewhere_is_left_for_later_and_the_purge_does_not_wait(sql):
    held, free = old_run(), old_run()
    _, release = hold(sql, [held.pk])
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '5s'")  # a purge that waited would wait for this very test
    try:
        assert retention.runs_purge(before=cutoff()) == 1  # returns at once: SKIP LOCKED, no wait
    finally:
        release()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert exists(held) and not exists(free)
    assert retention.runs_purge(before=cutoff()) == 1
    assert not exists(held)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race__a_rerun_during_the_purge_waits_for_it_then_is_run_not_found(monkeypatch):
    old = old_run(agent_type="pass", input={"x": 1})
    # Paused where the purge holds the run's and its steps' rows, the delete not yet done.
    locked, go_on = paused(monkeypatch, services, "run_agent_label")
    purger, purged = in_thread(lambda: retention.runs_purge(before=cutoff()))
    try:
        assert locked.wait(10), "the purge never took its locks"
        rerunner, rerun = in_thread(lambda: services.run_rerun(run=old))
        wait_for(someone_waits_for_a_lock, timeout=10, message="the re-run waiting for the run's row")
    finally:
        go_on.set()
        purger.join(15)
    rerunner.join(15)

    assert purged == [1]
    assert [type(r) for r in rerun] == [RunNotFound]  # not a broken rerun_of at commit (an IntegrityError)
    assert not Run.objects.exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race__a_rerun_that_holds_its_run_first_keeps_it_until_the_new_run_is_written(monkeypatch):
    old = old_run(agent_type="pass", input={"x": 1})
    locked, go_on = paused(monkeypatch, services, "run_create")  # where the re-run holds its source run's row
    rerunner, rerun = in_thread(lambda: services.run_rerun(run=old))
    try:
        assert locked.wait(10), "the re-run never took its lock"
        assert retention.runs_purge(before=cutoff()) == 0  # skipped, not waited for
    finally:
        go_on.set()
        rerunner.join(15)

    (new_run,) = rerun
    assert Run.objects.get(pk=new_run.pk).rerun_of_id == old.pk
    assert retention.runs_purge(before=cutoff()) == 1  # next time round
    assert Run.objects.get(pk=new_run.pk).rerun_of_id is None


# --- real workers ----------------------------------------------------------------------------------


@pytest.mark.cluster
def test_cluster__the_workers_delete_old_runs_while_new_ones_complete(clusters):
    old = [old_run(agent_type="pass", input={"x": i}) for i in range(450)]  # more than two batches
    clusters(1, RUN_RETENTION_DAYS=DAYS)
    new = [services.run_create(agent_type="pass", input={"x": i})[0] for i in range(5)]

    wait_for(
        lambda: not Run.objects.filter(pk__in=[r.pk for r in old]).exists(),
        timeout=60,
        message="the old runs deleted by the engine tick",
    )
    wait_for(
        lambda: Run.objects.filter(pk__in=[r.pk for r in new], status=RunStatus.COMPLETED).count() == 5,
        timeout=30,
        message="the new runs completed",
    )
    assert DeletedRuns.objects.get(agent="pass", status=RunStatus.COMPLETED).count == 450
    assert Run.objects.count() == 5


# --- LLM calls ------------------------------------------------------------------------------------


def test_llm_calls__old_ones_go_once_their_run_is_gone_a_kept_run_keeps_its_own():
    kept_run = make_run(RunStatus.COMPLETED)
    old_of_kept, recent_runless = call_of(kept_run, days=60), call_of(None, days=10)
    old_runless, old_of_purged = call_of(None, days=60), call_of(old_run(), days=60)
    retention.runs_purge(before=cutoff())  # the second run goes; its call stays, without its run

    assert llm_calls_purge(before=timezone.now() - timedelta(days=40)) == 2

    assert set(LLMCall.objects.values_list("pk", flat=True)) == {old_of_kept.pk, recent_runless.pk}
    assert not LLMCall.objects.filter(pk__in=[old_runless.pk, old_of_purged.pk]).exists()


def test_llm_calls__the_counters_never_go_down():
    for outcome in (LLMOutcome.SUCCESS, LLMOutcome.SUCCESS, LLMOutcome.ERROR):
        call_of(None, days=60, outcome=outcome)
    call_of(None, days=1)
    before = scrape()

    assert llm_calls_purge(before=timezone.now() - timedelta(days=40), batch=2) == 2
    assert llm_calls_purge(before=timezone.now() - timedelta(days=40), batch=2) == 1
    assert LLMCall.objects.count() == 1

    after = scrape()
    for name, labels in [
        ("llm_requests_total", {"provider": "openai", "model": "gpt-test", "outcome": "success"}),
        ("llm_requests_total", {"provider": "openai", "model": "gpt-test", "outcome": "error"}),
        ("llm_tokens_total", {"provider": "openai", "kind": "prompt"}),
        ("llm_tokens_total", {"provider": "openai", "kind": "completion"}),
        ("llm_cost_usd_total", {"provider": "openai"}),
    ]:
        assert value(after, name, **labels) == value(before, name, **labels), (name, labels)
    assert value(after, "llm_requests_total", provider="openai", model="gpt-test", outcome="success") == 3
    assert value(after, "llm_cost_usd_total", provider="openai") == 2.0


def test_tick__deletes_old_runs_then_their_old_llm_calls(settings):
    settings.RUN_RETENTION_DAYS, settings.LLM_CALL_RETENTION_DAYS = DAYS, 40
    very_old, old = old_run(days=50), old_run(days=35)
    gone, stays = call_of(very_old, days=50), call_of(old, days=35)  # both runs go; one call is young enough

    summary = engine.engine_tick(worker_id="t", force=True)
    assert (summary["runs_purged"], summary["llm_calls_purged"]) == (2, 1)

    assert list(LLMCall.objects.values_list("pk", "run_id")) == [(stays.pk, None)]
    assert not LLMCall.objects.filter(pk=gone.pk).exists()
