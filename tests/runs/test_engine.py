"""Engine state changes in one process: every transition is guarded (both databases; PostgreSQL takes the fast path)."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from runs import engine, services
from runs.models import AttemptStatus, Run, RunStatus, Slot, Step, StepStatus

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["fastpath", "orm"])
def engine_variant(request, settings):
    """Every test runs both implementations of claim and finish on PostgreSQL (SQLite has only the ORM's)."""
    if request.param == "fastpath" and connection.vendor != "postgresql":
        pytest.skip("the fast path is PostgreSQL's")
    settings.ENGINE_FASTPATH = request.param == "fastpath"
    return request.param


def new_run(agent_type="pass", **input):
    run, _ = services.run_create(agent_type=agent_type, input=input)
    return run, run.steps.get()


def test_claim__second_claim_of_the_same_step_gets_nothing():
    run, step = new_run()
    first = engine.step_claim(step_id=step.id, worker_id="w1")
    assert first is not None and first.attempt == 1
    assert engine.step_claim(step_id=step.id, worker_id="w2") is None
    step.refresh_from_db()
    assert (step.status, step.worker_id, step.attempts) == (StepStatus.RUNNING, "w1", 1)
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING
    assert step.attempt_set.get().status == AttemptStatus.RUNNING


def test_finish__completes_step_attempt_and_run():
    run, step = new_run(a=1)
    claim = engine.step_claim(step_id=step.id, worker_id="w1")
    assert engine.step_finish(claim=claim, output={"a": 1})
    run.refresh_from_db()
    assert (run.status, run.result) == (RunStatus.COMPLETED, {"a": 1})
    assert run.started_at <= run.finished_at
    assert step.attempt_set.get().status == AttemptStatus.SUCCESS


def test_finish__by_a_worker_that_lost_the_step_is_discarded():
    run, step = new_run()
    claim = engine.step_claim(step_id=step.id, worker_id="w1")
    Step.objects.filter(pk=step.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1), max_attempts=1)
    assert engine.steps_reap() == 1  # worker lost; one attempt allowed: the run fails
    assert engine.step_finish(claim=claim, output={"late": True}) is False
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error_code == "worker_lost"
    assert run.result is None


def test_claim__of_a_run_with_a_cancel_request_cancels_instead():
    run, step = new_run()
    Run.objects.filter(pk=run.pk).update(cancel_requested_at=timezone.now())  # the request raced the message
    assert engine.step_claim(step_id=step.id, worker_id="w1") is None
    assert Step.objects.get(pk=step.pk).status == StepStatus.CANCELLED
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_finish__after_a_cancel_request_ends_cancelled_not_completed():
    run, step = new_run()
    claim = engine.step_claim(step_id=step.id, worker_id="w1")
    services.run_cancel(run_id=run.pk)
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING  # a running step stops cooperatively
    assert engine.step_finish(claim=claim, output={"x": 1})
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.result is None
    assert step.attempt_set.get().status == AttemptStatus.CANCELLED


def test_non_retryable_error_fails_at_once_and_frees_the_slot():
    run, step = new_run("policy-checker")
    claim = engine.step_claim(step_id=step.id, worker_id="w1")
    assert Slot.objects.get(step=step).holder == "w1"
    engine.step_finish(claim=claim, error={"message": "bad", "code": "non_retryable_error", "retryable": False})
    run.refresh_from_db()
    assert (run.status, run.error, run.error_code) == (RunStatus.FAILED, "bad", "non_retryable_error")
    assert Slot.objects.count() == 0


def test_retryable_error_waits_holding_no_slot_then_queues_again():
    services.agent_policy_update(agent_type="test-flaky", limit=1, on_busy="queue")
    run, step = new_run("test-flaky", succeed_on=2)
    claim = engine.step_claim(step_id=step.id, worker_id="w1")
    engine.step_finish(claim=claim, error={"message": "later", "code": "retryable_error", "retryable": True})
    step.refresh_from_db()
    assert step.status == StepStatus.RETRYING and step.next_attempt_at > timezone.now()
    assert Slot.objects.count() == 0
    other, other_step = new_run("test-flaky")  # the free slot goes to the next run meanwhile
    assert Slot.objects.get().step_id == other_step.id
    Step.objects.filter(pk=step.pk).update(next_attempt_at=timezone.now())
    engine.steps_retry_due()
    assert Step.objects.get(pk=step.pk).status == StepStatus.WAITING  # back in the queue, behind the holder


def test_output_that_is_not_json_fails_the_step(monkeypatch):
    run, step = new_run()
    monkeypatch.setattr("agentrunner.agents.builtin.passthrough.PassAgent.run", lambda self, ctx: {"x": float("nan")})
    engine.step_execute(step_id=step.id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error_code == "output_not_json"


def test_an_agent_bug_fails_its_step_with_the_exception_named(monkeypatch):
    def broken(self, ctx):
        raise KeyError("document")

    run, step = new_run()
    monkeypatch.setattr("agentrunner.agents.builtin.passthrough.PassAgent.run", broken)
    engine.step_execute(step_id=step.id)
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "agent_crashed")
    assert run.error == "KeyError: 'document'"


def test_a_retry_after_hint_delays_the_retry(monkeypatch):
    from agentrunner.agents import RetryableAgentError

    def busy(self, ctx):
        error = RetryableAgentError("503 from upstream")
        error.retry_after = 42
        raise error

    run, step = new_run("test-flaky")
    monkeypatch.setattr("tests.fake_agents.FlakyAgent.run", busy)
    before = timezone.now()
    engine.step_execute(step_id=step.id)
    step.refresh_from_db()
    assert step.status == StepStatus.RETRYING
    assert 41 <= (step.next_attempt_at - before).total_seconds() <= 44


@pytest.mark.parametrize("text,named", [("a\x00b", "NUL"), ("a\ud800b", "lone surrogate")])
def test_output_the_database_cannot_store_fails_the_step_instead_of_the_database_write(monkeypatch, text, named):
    """A lone surrogate passed the old check (NUL only); PostgreSQL then refused the finish, again and again."""
    run, step = new_run()
    monkeypatch.setattr("agentrunner.agents.builtin.passthrough.PassAgent.run", lambda self, ctx: {"x": [text]})
    engine.step_execute(step_id=step.id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error_code == "output_not_json"
    assert named in run.error and "x[0]" in run.error


def test_claim_and_finish__the_fast_path_takes_one_statement_each(engine_variant, django_assert_num_queries):
    if engine_variant != "fastpath":
        pytest.skip("the ORM variant takes several")
    run, step = new_run(a=1)
    with django_assert_num_queries(1):
        claim = engine.step_claim(step_id=step.id, worker_id="w1")
    with django_assert_num_queries(1):
        assert engine.step_finish(claim=claim, output={"a": 1})
    assert Run.objects.get(pk=run.pk).status == RunStatus.COMPLETED


def test_run_create__the_one_statement_insert_writes_what_the_orm_path_writes(engine_variant, settings):
    if engine_variant != "fastpath":
        pytest.skip("compares the two")
    from django.contrib.auth import get_user_model
    from django.test.utils import CaptureQueriesContext
    from django_q.models import OrmQ

    user = get_user_model().objects.create_user("owner")
    earlier, _ = new_run()
    start = {
        "agent_type": "pass",
        "input": {"a": [1, "x"], "b": None},
        "user_id": uuid.uuid4(),
        "created_by": user,
        "token_budget": 500,
        "rerun_of": earlier,
    }
    messages = OrmQ.objects.count()
    with CaptureQueriesContext(connection) as queries:
        fast, created = services.run_create(**start, idempotency_key="k1")
    assert created
    inserts = [q["sql"] for q in queries.captured_queries if "INSERT INTO" in q["sql"] and "runs_" in q["sql"]]
    assert len(inserts) == 1 and "runs_run" in inserts[0] and "runs_step" in inserts[0], inserts
    settings.ENGINE_FASTPATH = False
    slow, _ = services.run_create(**start, idempotency_key="k2")
    assert OrmQ.objects.count() == messages + 2  # one message each, in the run's own transaction

    def rows(run):
        skip = {"id", "run_id", "created_at", "queued_at", "dispatched_at", "idempotency_key"}
        run_row = {k: v for k, v in Run.objects.filter(pk=run.pk).values().get().items() if k not in skip}
        step_row = {k: v for k, v in Step.objects.filter(run=run).values().get().items() if k not in skip}
        return run_row, step_row

    assert rows(fast) == rows(slow)
    step = fast.steps.get()
    assert step.queued_at and step.dispatched_at and fast.created_at
    again, created = services.run_create(**start, idempotency_key="k1")  # the key is honoured on this path too
    assert again.pk == fast.pk and not created


def test_run_create__an_operator_limit_on_an_agent_without_one_takes_slots(engine_variant):
    services.agent_policy_update(agent_type="pass", limit=1, on_busy="queue")
    first, first_step = new_run()
    second, second_step = new_run()
    assert first_step.status == StepStatus.QUEUED and first_step.concurrency_key
    assert second_step.status == StepStatus.WAITING
    assert Slot.objects.filter(step=first_step).exists()
