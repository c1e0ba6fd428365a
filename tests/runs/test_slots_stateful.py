"""Property-based test of the slot logic: any interleaving keeps at most `limit` holders, and all slots free up."""

from datetime import timedelta

import pytest
from django.test import TestCase
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from runs import engine, services
from runs.exceptions import AgentBusy, RunAlreadyFinished
from runs.models import ConcurrencyKey, Run, Slot, Step, StepStatus

pytestmark = pytest.mark.django_db

LIMITS = {"test-flaky": 2, "pass": 1}  # test-flaky: queue policy, 3 attempts; pass: reject policy
PAST = timedelta(seconds=-3600)


def committed(rule_body):
    """Run a rule as if its transaction committed: waking waiters happens on commit."""

    def wrapper(*args, **kwargs):
        with TestCase.captureOnCommitCallbacks(execute=True):
            return rule_body(*args, **kwargs)

    wrapper.__name__ = rule_body.__name__
    wrapper.__doc__ = rule_body.__doc__
    return wrapper


class SlotMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        Run.objects.all().delete()
        ConcurrencyKey.objects.all().delete()
        services.agent_policy_update(agent_type="test-flaky", limit=LIMITS["test-flaky"], on_busy="queue")
        services.agent_policy_update(agent_type="pass", limit=LIMITS["pass"], on_busy="reject")
        self.claims: dict[int, engine.Claim] = {}
        self.workers = 0

    def _pick(self, items, index):
        return items[index % len(items)]

    def _queued(self):
        return list(Step.objects.filter(status=StepStatus.QUEUED).order_by("id"))

    @rule(agent=st.sampled_from(["test-flaky", "pass"]))
    @committed
    def create(self, agent):
        try:
            services.run_create(agent_type=agent, input={})
        except AgentBusy:
            assert agent == "pass"

    @precondition(lambda self: Step.objects.filter(status=StepStatus.QUEUED).exists())
    @rule(index=st.integers(0, 50), duplicate=st.booleans())
    @committed
    def claim(self, index, duplicate):
        step = self._pick(self._queued(), index)
        self.workers += 1
        claim = engine.step_claim(step_id=step.id, worker_id=f"w{self.workers}")
        if claim:
            self.claims[step.id] = claim
        if duplicate:  # a second delivery of the same message claims nothing
            assert engine.step_claim(step_id=step.id, worker_id="dup") is None

    @precondition(lambda self: self.claims)
    @rule(index=st.integers(0, 50))
    @committed
    def heartbeat(self, index):
        engine.step_heartbeat(claim=self._pick(list(self.claims.values()), index))

    @precondition(lambda self: self.claims)
    @rule(index=st.integers(0, 50), ok=st.booleans(), retryable=st.booleans())
    @committed
    def finish(self, index, ok, retryable):
        claim = self._pick(list(self.claims.values()), index)
        error = None if ok else {"message": "boom", "code": "x", "retryable": retryable}
        engine.step_finish(claim=claim, output={"ok": True} if ok else None, error=error)
        self.claims.pop(claim.step.id)

    @precondition(lambda self: self.claims)
    @rule(index=st.integers(0, 50))
    @committed
    def worker_dies(self, index):
        """The worker stops heart-beating and its lease runs out (its claim is never finished)."""
        claim = self._pick(list(self.claims.values()), index)
        Step.objects.filter(pk=claim.step.id).update(lease_expires_at=timezone.now() + PAST)
        Slot.objects.filter(step_id=claim.step.id).update(expires_at=timezone.now() + PAST)

    @rule()
    @committed
    def start_deadlines_pass(self):
        Slot.objects.filter(holder="").update(expires_at=timezone.now() + PAST)

    @precondition(lambda self: Run.objects.exclude(status__in=["COMPLETED", "FAILED", "CANCELLED"]).exists())
    @rule(index=st.integers(0, 50))
    @committed
    def cancel(self, index):
        run = self._pick(list(Run.objects.order_by("created_at")), index)
        try:
            services.run_cancel(run_id=run.id)
        except RunAlreadyFinished:
            assert run.is_finished

    @rule()
    @committed
    def tick(self):
        Step.objects.filter(status=StepStatus.RETRYING).update(next_attempt_at=timezone.now())
        engine.engine_tick(worker_id="ticker", force=True)
        self.claims = {k: c for k, c in self.claims.items() if Step.objects.get(pk=k).worker_id == c.worker_id}

    @invariant()
    def never_more_holders_than_limit(self):
        for agent, limit in LIMITS.items():
            assert Slot.objects.filter(key_id=f"agent:{agent}").count() <= limit

    @invariant()
    def slots_belong_to_live_steps_and_waiters_only_when_full(self):
        for slot in Slot.objects.select_related("step"):
            assert slot.step.status in (StepStatus.QUEUED, StepStatus.RUNNING), slot.step.status
        for agent, limit in LIMITS.items():
            if Step.objects.filter(concurrency_key=f"agent:{agent}", status=StepStatus.WAITING).exists():
                assert Slot.objects.filter(key_id=f"agent:{agent}").count() == limit
        for step in Step.objects.filter(status__in=[StepStatus.RUNNING, StepStatus.QUEUED]).exclude(concurrency_key=""):
            assert step.slots.count() == 1, f"{step} holds no slot"

    def teardown(self):
        """Eventually every slot is free: cancel what is left, let leases run out, reap."""
        if not Run.objects.exists():
            return
        for run in Run.objects.exclude(status__in=["COMPLETED", "FAILED", "CANCELLED"]):
            services.run_cancel(run_id=run.id)
        Step.objects.filter(status=StepStatus.RUNNING).update(lease_expires_at=timezone.now() + PAST)
        engine.engine_tick(worker_id="ticker", force=True)
        assert Slot.objects.count() == 0
        assert not Run.objects.exclude(status__in=["COMPLETED", "FAILED", "CANCELLED"]).exists()


def test_slot_logic_under_any_interleaving():
    run_state_machine_as_test(
        SlotMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
