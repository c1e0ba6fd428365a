"""Flow runs stepped through the engine in one process (claim/finish by hand): semantics, slots, resume."""

import pytest
from django.test import TestCase
from django.utils import timezone

from flows import services as flow_services
from runs import engine, services
from runs.exceptions import AgentBusy
from runs.models import Run, RunStatus, Slot, Step, StepStatus
from tests.conftest import team_named
from tests.flows.factories import chain, flow

pytestmark = pytest.mark.django_db


def start(definition=None, input=None, slug="test-flow"):
    f = flow(slug=slug, definition=definition)
    run, _ = services.flow_run_create(version=f.current_version, input=input or {})
    return run


def step_once(run, *, output=None, error=None):
    """Act as a worker for the run's current QUEUED step: claim it and finish it as told (or run its agent)."""
    step = Step.objects.get(run=run, status=StepStatus.QUEUED)
    with TestCase.captureOnCommitCallbacks(execute=True):
        if output is None and error is None:
            engine.step_execute(step_id=step.id)
        else:
            claim = engine.step_claim(step_id=step.id, worker_id="w")
            engine.step_finish(claim=claim, output=output, error=error)
    return step


def drive(run, limit=20):
    """Execute queued steps until the run is finished."""
    for _ in range(limit):
        run.refresh_from_db()
        if run.is_finished or not Step.objects.filter(run=run, status=StepStatus.QUEUED).exists():
            return run
        step_once(run)
    raise AssertionError("flow did not finish")


FAIL = {"message": "boom", "code": "non_retryable_error", "retryable": False}


def test_success_path_runs_every_task_and_keeps_each_output():
    run = drive(
        start(chain(("a", "pass", {"x": 1}), ("b", "pass", {"y": "{{ steps.a.output.x }}"}), ("c", "pass", {})))
    )
    assert run.status == RunStatus.COMPLETED
    assert run.result["path"] == ["a", "b", "c"]
    assert run.result["execution_history"] == {
        "a": {"status": "success", "data": {"x": 1}},
        "b": {"status": "success", "data": {"y": 1}},
        "c": {"status": "success", "data": {}},
    }
    assert run.result["output"] == {}


def test_failure_goes_to_end_and_fails_the_run():
    run = start(chain(("a", "pass", {}), ("b", "pass", {})))
    step_once(run, error=FAIL)
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.FAILED, "boom")
    assert run.result["execution_history"] == {"a": {"status": "failure", "data": {"error": "boom"}}}
    assert Step.objects.filter(run=run).count() == 1


def test_a_task_without_condition_ends_the_flow():
    run = drive(start(chain(("a", "pass", {}), ("b", "pass", {}), conditions=[])))
    assert run.status == RunStatus.COMPLETED and run.result["path"] == ["a"]


def test_outcome_failure_routes_a_failed_task_onwards_and_the_run_can_complete():
    conditions = [
        {"name": "on-fail", "source_task": "a", "outcome": "failure", "target_task_success": "recover"},
    ]
    run = start(chain(("a", "pass", {}), ("recover", "pass", {"ok": True}), conditions=conditions))
    step_once(run, error=FAIL)
    run = drive(run)
    assert run.status == RunStatus.COMPLETED
    assert run.result["path"] == ["a", "recover"]
    assert run.result["execution_history"]["a"]["status"] == "failure"


@pytest.mark.parametrize("decision,route", [("approved", "accepted"), ("rejected", "manual_review")])
def test_when_branches_on_the_output(decision, route):
    conditions = [
        {
            "name": "approved?",
            "source_task": "check",
            "when": 'output.decision == "approved"',
            "target_task_success": "accepted",
            "target_task_failure": "manual_review",
        }
    ]
    definition = chain(
        ("check", "pass", {"decision": "{{ input.decision }}"}),
        ("accepted", "pass", {}),
        ("manual_review", "pass", {}),
        conditions=conditions,
    )
    run = drive(start(definition, input={"decision": decision}))
    assert run.result["path"] == ["check", route]


def test_loops_are_allowed_and_max_steps_stops_a_runaway_flow():
    conditions = [{"name": "again", "source_task": "a", "outcome": "success", "target_task_success": "a"}]
    run = drive(start(chain(("a", "pass", {}), conditions=conditions, max_steps=4)))
    assert (run.status, run.error_code) == (RunStatus.FAILED, "max_steps")
    assert Step.objects.filter(run=run).count() == 4


def test_a_reference_to_missing_input_refuses_the_run_at_start():
    f = flow(definition=chain(("a", "wait", {"seconds": "{{ input.seconds }}"})))
    with pytest.raises(Exception) as excinfo:
        services.flow_run_create(version=f.current_version, input={})
    assert "input.seconds" in str(excinfo.value)
    assert Run.objects.count() == 0


def test_a_later_step_whose_input_is_bad_fails_with_a_clear_error():
    definition = chain(("a", "pass", {"n": "x"}), ("b", "wait", {"seconds": "{{ steps.a.output.n }}"}))
    run = drive(start(definition))
    assert run.status == RunStatus.FAILED
    failed = Step.objects.get(run=run, name="b")
    assert failed.status == StepStatus.FAILED and "seconds" in failed.error


def test_version_pinning__editing_a_flow_does_not_change_a_started_run():
    f = flow(definition=chain(("a", "pass", {"v": 1}), ("b", "pass", {"v": 1})))
    run, _ = services.flow_run_create(version=f.current_version, input={})
    flow_services.flow_update(flow=f, definition=chain(("a", "pass", {"v": 2}), ("other", "pass", {})))
    assert f.versions.count() == 2
    run = drive(run)
    assert run.result["path"] == ["a", "b"]
    assert run.result["output"] == {"v": 1}
    new_run, _ = services.flow_run_create(version=f.current_version, input={})
    assert drive(new_run).result["path"] == ["a", "other"]


def test_flow_slot_stays_with_its_run_while_a_step_waits_to_retry_and_the_agent_slot_is_released():
    services.agent_policy_update(agent_type="test-flaky", limit=1, on_busy="queue")
    definition = chain(
        ("a", "test-flaky", {"succeed_on": 2}),
        concurrency={"limit": 1, "on_busy": "queue"},
    )
    definition["tasks"][0]["retry"] = {"max_attempts": 2, "backoff_seconds": 5}
    run = start(definition)
    step = Step.objects.get(run=run)
    assert Slot.objects.filter(run=run, step=None).count() == 1  # the flow slot
    assert Slot.objects.filter(step=step).count() == 1  # the agent slot
    step_once(run, error={"message": "later", "code": "retryable_error", "retryable": True})
    step.refresh_from_db()
    assert step.status == StepStatus.RETRYING
    assert Slot.objects.filter(run=run, step=None).count() == 1  # still the run's
    assert not Slot.objects.filter(step=step).exists()  # the agent's slot is free for others
    other, _ = services.run_create(agent_type="test-flaky", input={})
    assert Slot.objects.filter(step__run=other).count() == 1
    # A second run of the flow waits for the flow slot.
    second, _ = services.flow_run_create(version=run.flow_version, input={})
    assert Step.objects.get(run=second).status == StepStatus.WAITING
    # When the first run ends, the second gets the flow slot.
    with TestCase.captureOnCommitCallbacks(execute=True):
        services.run_cancel(run_id=run.id)
    assert Slot.objects.filter(run=second, step=None).count() == 1


def test_flow_concurrency_reject__second_run_is_refused():
    f = flow(definition=chain(("a", "pass", {}), concurrency={"limit": 1, "on_busy": "reject"}))
    services.flow_run_create(version=f.current_version, input={})
    with pytest.raises(AgentBusy):
        services.flow_run_create(version=f.current_version, input={})


def test_flow_concurrency__a_flows_slots_count_per_team():
    """Two teams' flows of the same slug are two flows: one team at its limit does not hold back the other."""
    busy = {"limit": 1, "on_busy": "reject"}
    ours = flow(slug="intake", definition=chain(("a", "pass", {}), concurrency=busy))
    theirs = flow(slug="intake", definition=chain(("a", "pass", {}), concurrency=busy), team=team_named("other"))
    mine, _ = services.flow_run_create(version=ours.current_version, input={})
    other, _ = services.flow_run_create(version=theirs.current_version, input={})
    assert (mine.team, other.team) == (ours.team, theirs.team)
    assert mine.concurrency_key != other.concurrency_key
    with pytest.raises(AgentBusy):
        services.flow_run_create(version=ours.current_version, input={})
    with pytest.raises(AgentBusy):
        services.flow_run_create(version=theirs.current_version, input={})


def test_flow_concurrency_per_input_key():
    f = flow(
        definition=chain(("a", "pass", {}), concurrency={"limit": 1, "key": "input.customer", "on_busy": "reject"})
    )
    services.flow_run_create(version=f.current_version, input={"customer": "acme"})
    services.flow_run_create(version=f.current_version, input={"customer": "globex"})
    with pytest.raises(AgentBusy):
        services.flow_run_create(version=f.current_version, input={"customer": "acme"})


def test_resume_continues_from_the_failed_step_keeping_earlier_outputs(tmp_path):
    gate = tmp_path / "gate"
    run = drive(start(chain(("a", "pass", {"kept": True}), ("b", "test-gate", {"path": str(gate)}), ("c", "pass", {}))))
    assert run.status == RunStatus.FAILED and "gate closed" in run.error
    gate.write_text("open")
    with TestCase.captureOnCommitCallbacks(execute=True):
        services.run_resume(run_id=run.id)
    run = drive(run)
    assert run.status == RunStatus.COMPLETED
    assert run.result["path"] == ["a", "b", "b", "c"]
    assert run.result["execution_history"]["a"]["data"] == {"kept": True}
    assert Step.objects.filter(run=run, name="a").count() == 1  # not run again


def test_resume_refuses_runs_that_did_not_fail():
    run = drive(start())
    with pytest.raises(Exception, match="only a FAILED flow run"):
        services.run_resume(run_id=run.id)


def test_cancel_of_a_waiting_flow_run_frees_nothing_it_does_not_hold():
    f = flow(definition=chain(("a", "pass", {}), concurrency={"limit": 1, "on_busy": "queue"}))
    first, _ = services.flow_run_create(version=f.current_version, input={})
    second, _ = services.flow_run_create(version=f.current_version, input={})
    services.run_cancel(run_id=second.id)
    assert Run.objects.get(pk=second.pk).status == RunStatus.CANCELLED
    assert Slot.objects.filter(run=first, step=None).exists()
    assert timezone.now()


def costly_flow(when: str) -> dict:
    return chain(
        ("check", "pass", {"items": "{{ input.items }}"}),
        ("next", "pass", {}),
        conditions=[
            {
                "name": "costly",
                "source_task": "check",
                "when": when,
                "target_task_success": "next",
                "target_task_failure": "end",
            }
        ],
    )


def test_a_condition_over_its_evaluation_budget_fails_the_run_with_a_clear_error():
    """Short, statically fine, but costly on this input: 5,000 x 5,000 pairs. It stops within its budget."""
    when = "input.items.map(a, input.items.map(b, a + b)).size() > 0"
    started = timezone.now()
    run = drive(start(costly_flow(when), input={"items": list(range(5000))}))
    assert run.status == RunStatus.FAILED and run.error_code == "condition_too_costly"
    assert "'costly'" in run.error and "too costly to evaluate" in run.error
    assert run.result["path"] == ["check"]
    assert (timezone.now() - started).total_seconds() < 10


@pytest.mark.django_db(transaction=True)
def test_a_workers_finish_evaluates_conditions_outside_any_transaction(monkeypatch):
    """No row lock is held while user-written CEL runs (the step's, the run's or a slot's)."""
    from django.db import connection

    from flows import definition as flow_definition

    seen = []
    real = flow_definition.evaluate

    def recording(text, variables):
        seen.append(connection.in_atomic_block)
        return real(text, variables)

    monkeypatch.setattr(flow_definition, "evaluate", recording)
    run = drive(start(costly_flow("size(output.items) > 1"), input={"items": [1, 2]}))
    assert run.status == RunStatus.COMPLETED and run.result["path"] == ["check", "next"]
    assert seen == [False]


def test_the_route_decided_before_the_transaction_sees_this_step_as_stored():
    """Conditions read `steps.<this task>` and integer-keyed output as they will read once stored."""
    definition = chain(
        ("check", "pass", {"n": "{{ input.n }}"}),
        ("next", "pass", {}),
        conditions=[
            {
                "name": "self",
                "source_task": "check",
                "when": 'steps.check.status == "success" && steps.check.output.n == 2',
                "target_task_success": "next",
                "target_task_failure": "end",
            }
        ],
    )
    run = drive(start(definition, input={"n": 2}))
    assert run.result["path"] == ["check", "next"]
