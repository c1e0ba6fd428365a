"""Runs, their steps and every attempt, and the concurrency slots they hold."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class RunStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED", "Budget exceeded"


RUN_FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.BUDGET_EXCEEDED)


class StepStatus(models.TextChoices):
    QUEUED = "QUEUED", "Queued"
    WAITING = "WAITING", "Waiting for a slot"
    RUNNING = "RUNNING", "Running"
    RETRYING = "RETRYING", "Waiting to retry"
    SUCCESS = "SUCCESS", "Succeeded"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


STEP_FINISHED = (StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.CANCELLED)
STEP_ACTIVE = (StepStatus.QUEUED, StepStatus.WAITING, StepStatus.RUNNING, StepStatus.RETRYING)
# The WAITING steps, in the words of their index (`step_waiting_fifo`): every WAITING step has a queued_at.
WAITING_QUEUE = Q(status=StepStatus.WAITING, queued_at__isnull=False)


class AttemptStatus(models.TextChoices):
    RUNNING = "RUNNING", "Running"
    SUCCESS = "SUCCESS", "Succeeded"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


class OnBusyChoice(models.TextChoices):
    REJECT = "reject", "Reject (answer 409 at once)"
    QUEUE = "queue", "Queue (wait for a free slot, first come first served)"


class AgentPolicy(models.Model):
    """An agent type as operators see it; `override` replaces the agent's default concurrency policy."""

    agent_type = models.CharField("agent type", max_length=100, unique=True)
    override = models.BooleanField(
        "override the default policy",
        default=False,
        help_text="Tick to use the limit and busy behaviour below instead of the agent's built-in default.",
    )
    concurrency_limit = models.PositiveIntegerField(
        "at most this many at once",
        null=True,
        blank=True,
        help_text="Leave empty for no limit.",
    )
    on_busy = models.CharField(
        "when all slots are taken",
        max_length=10,
        choices=OnBusyChoice.choices,
        default=OnBusyChoice.REJECT,
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "agent type"
        verbose_name_plural = "agent types"
        ordering = ["agent_type"]
        constraints = [
            models.CheckConstraint(
                condition=Q(concurrency_limit__isnull=True) | Q(concurrency_limit__gte=1),
                name="agentpolicy_limit_positive",
            )
        ]

    def __str__(self):
        return self.agent_type


class Run(models.Model):
    """One execution of an agent (a one-step flow) or of a flow version."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent_type = models.CharField(
        "agent", max_length=100, blank=True, db_index=True, help_text="Empty for a flow run (see flow version)."
    )
    flow_version = models.ForeignKey(
        "flows.FlowVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="runs",
        db_index=False,  # partial index in Meta: single-agent runs (most) have none
        help_text="The flow version this run executes (pinned when it started); empty for a single-agent run.",
    )
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING)
    input = models.JSONField("input", default=dict, blank=True, help_text="What the run was started with.")
    result = models.JSONField("result", null=True, blank=True, help_text="The agent's output, once completed.")
    error = models.TextField("error message", blank=True, default="")
    error_code = models.CharField(
        "error code", max_length=50, blank=True, default="", help_text="Stable code, e.g. worker_lost."
    )
    user_id = models.UUIDField(
        "user id", null=True, blank=True, help_text="The end user the client started this run for."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The API or admin account that started the run.",
    )
    team = models.ForeignKey(
        "agentrunner.Team",
        on_delete=models.PROTECT,
        related_name="runs",
        db_index=False,  # the (team, created_at) index below serves its lookups
        help_text="The team the run belongs to: only its members see it.",
    )
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    request_id = models.CharField(
        "request id",
        max_length=64,
        blank=True,
        default="",
        help_text="The id of the API request that started the run (django-structlog's request_id); the worker's "
        "log lines for the run carry it too.",
    )
    concurrency_key = models.CharField(max_length=200, blank=True, default="")
    token_budget = models.PositiveIntegerField(
        "token budget",
        null=True,
        blank=True,
        help_text="Most LLM tokens (prompt + completion) this run may use; empty = no per-run limit.",
    )
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns", db_index=False
    )
    schedule = models.ForeignKey(
        "schedules.Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        db_index=False,  # the (schedule, scheduled_for) unique index serves its lookups
        help_text="The schedule that started this run.",
    )
    scheduled_for = models.DateTimeField(
        "scheduled for", null=True, blank=True, help_text="The schedule's fire time this run stands for."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The same client sending the same key gets the same run back.
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="run_idempotency_key_unique",
            ),
            # One run per schedule slot, even with several clusters firing it.
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"],
                condition=Q(schedule__isnull=False),
                name="run_schedule_slot_unique",
            ),
        ]
        indexes = [
            # Run list filtered by status, newest first (API and admin).
            models.Index(fields=["status", "-created_at"], name="run_status_created"),
            # A team's run list, newest first (API, admin, dashboard), and the team check of one run.
            models.Index(fields=["team", "-created_at"], name="run_team_created"),
            # Foreign keys that most runs leave empty: an index only of the runs that have one
            # (a run's row is written three times; each index it is in is written with it).
            models.Index(fields=["flow_version"], condition=Q(flow_version__isnull=False), name="run_flow_version"),
            models.Index(fields=["rerun_of"], condition=Q(rerun_of__isnull=False), name="run_rerun_of"),
        ]

    def __str__(self):
        return f"{self.agent_type or 'flow run'} {self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in RUN_FINISHED

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class Step(models.Model):
    """One step of a run; every attempt at it is a StepAttempt row."""

    # Looked up through the (run, sequence) unique index: no index of its own.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps", db_index=False)
    sequence = models.PositiveIntegerField(default=0, help_text="Order of the step within its run.")
    name = models.CharField(max_length=100)
    agent_type = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.QUEUED)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=50, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts started so far.")
    max_attempts = models.PositiveIntegerField(default=1)
    backoff_seconds = models.FloatField(default=1.0, help_text="First retry delay; doubles each attempt.")
    max_backoff_seconds = models.FloatField(default=300.0)
    timeout_seconds = models.FloatField(null=True, blank=True, help_text="An attempt running longer fails.")
    # The key of the slot this step waits for or holds (its agent's, or its flow's while the run waits
    # for one); empty when none applies.
    concurrency_key = models.CharField(max_length=200, blank=True, default="")
    # When the step joined the queue for its slot; FIFO order among WAITING steps.
    queued_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="When its broker message was sent.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run_id", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["run", "sequence"], name="step_run_sequence_unique"),
        ]
        # The engine's work lists are partial indexes: a finished step is in none of them, so its last
        # updates write no entry there. Each condition also names a column that the engine's updates of
        # one step by id never state (e.g. `lease_expires_at IS NOT NULL`), so PostgreSQL cannot use the
        # index for them and finds the step by primary key whatever its statistics say: with stale
        # statistics (few QUEUED steps, then a burst of a thousand), a `WHERE id = … AND status = 'QUEUED'`
        # would otherwise scan every queued step, once per claim. The queries that use these lists state
        # the condition (`lease_expires_at < now` implies it; the WAITING queue says `queued_at IS NOT NULL`).
        indexes = [
            # Reaper: RUNNING steps whose lease expired.
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status=StepStatus.RUNNING, lease_expires_at__isnull=False),
                name="step_running_lease",
            ),
            # Tick: RETRYING steps whose retry time has come.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status=StepStatus.RETRYING, next_attempt_at__isnull=False),
                name="step_retrying_due",
            ),
            # Tick: QUEUED steps whose message seems lost.
            models.Index(
                fields=["dispatched_at"],
                condition=Q(status=StepStatus.QUEUED, dispatched_at__isnull=False),
                name="step_queued_dispatched",
            ),
            # Pump: oldest WAITING step for a concurrency key.
            models.Index(
                fields=["concurrency_key", "queued_at"],
                condition=Q(status=StepStatus.WAITING, queued_at__isnull=False),
                name="step_waiting_fifo",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.status})"


class StepAttempt(models.Model):
    """One try at a step, with its own timing and outcome."""

    # Looked up through the (step, number) unique index: no index of its own.
    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="attempt_set", db_index=False)
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=AttemptStatus.choices, default=AttemptStatus.RUNNING)
    worker_id = models.CharField(max_length=200, blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=50, blank=True, default="")

    class Meta:
        ordering = ["step_id", "number"]
        constraints = [models.UniqueConstraint(fields=["step", "number"], name="attempt_step_number_unique")]

    def __str__(self):
        return f"attempt {self.number} ({self.status})"

    @property
    def duration(self):
        if self.finished_at:
            return self.finished_at - self.started_at
        return None


class ConcurrencyKey(models.Model):
    """The row locked (SELECT ... FOR UPDATE) while slots of one key are counted and taken."""

    key = models.CharField(max_length=200, primary_key=True)
    limit = models.PositiveIntegerField(default=1, help_text="Slots for this key; updated from the policy on each use.")

    class Meta:
        verbose_name = "concurrency key"

    def __str__(self):
        return self.key


class Slot(models.Model):
    """A held concurrency slot: a lease with holder, expiry and heartbeat."""

    key = models.ForeignKey(ConcurrencyKey, on_delete=models.CASCADE, related_name="slots", db_column="key")
    number = models.PositiveIntegerField(help_text="0 .. limit-1")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="slots")
    # Empty for a flow slot: it belongs to the run for its whole life, across steps.
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.CASCADE, related_name="slots")
    holder = models.CharField(
        max_length=200, blank=True, default="", help_text="Worker holding it; empty until a worker starts."
    )
    acquired_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Start deadline until a worker holds it, then its lease; empty for a flow slot.",
    )

    class Meta:
        verbose_name = "concurrency slot"
        constraints = [
            # At most one holder per slot number: a second guard besides the row lock.
            models.UniqueConstraint(fields=["key", "number"], name="slot_key_number_unique"),
            models.UniqueConstraint(fields=["key", "step"], name="slot_key_step_unique"),
            models.UniqueConstraint(
                fields=["key", "run"], condition=Q(step__isnull=True), name="slot_key_run_flow_unique"
            ),
        ]
        indexes = [
            # Reaper: slots whose lease or start deadline passed.
            models.Index(fields=["expires_at"], name="slot_expires"),
        ]

    def __str__(self):
        return f"{self.key_id}#{self.number}"


class EngineTick(models.Model):
    """A single row: the worker that moves `next_at` forward (compare-and-set) runs this tick."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    next_at = models.DateTimeField()
    last_by = models.CharField(max_length=200, blank=True, default="")
    last_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"engine tick (next at {self.next_at})"


class DecisionKind(models.TextChoices):
    RETRY = "retry", "Retried"
    DISMISS = "dismiss", "Dismissed"


class RunDecision(models.Model):
    """What a person decided about one failure of a run (retry it, or dismiss it with a reason); all are kept.

    A FAILED run needs attention until a decision answers its current failure (`failed_at` = the run's
    finished time): a flow run resumed by a retry that fails again has a new finished time, so it needs
    attention again; an agent run retried as a new run is answered, and the new run is the one to watch.
    """

    # Looked up through the (run, failed_at) unique index: no index of its own.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="decisions", db_index=False)
    kind = models.CharField("decision", max_length=10, choices=DecisionKind.choices)
    reason = models.TextField("reason", blank=True, default="", help_text="Why it was dismissed (required then).")
    failed_at = models.DateTimeField(
        "failure answered", help_text="When the run failed (its finished time then): the failure this decides."
    )
    error_code = models.CharField(
        "error code", max_length=50, blank=True, default="", help_text="The run's error code at that failure."
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField("decided at", auto_now_add=True)
    new_run = models.ForeignKey(
        Run,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # read from the decision, never searched by
        help_text="The run a retry started (an agent run's retry); empty when a flow run resumed in place.",
    )

    class Meta:
        verbose_name = "decision on a failed run"
        verbose_name_plural = "decisions on failed runs"
        ordering = ["run_id", "decided_at"]
        constraints = [
            # One decision per failure (two people retrying at once start one retry); it also serves the
            # "needs attention" query: EXISTS (decision WHERE run_id = run.id AND failed_at = run.finished_at).
            models.UniqueConstraint(fields=["run", "failed_at"], name="run_decision_one_per_failure"),
            models.CheckConstraint(
                condition=~Q(kind="dismiss") | (~Q(reason="") & Q(new_run__isnull=True)),
                name="run_decision_dismiss_has_reason",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} run {self.run_id}"


class DeletedRuns(models.Model):
    """How many finished runs were deleted, by their metrics labels: `agent_runs_total` keeps counting them.

    Written in the transaction that deletes the runs (runs.services.runs_delete: retention and the admin), so
    the counter never goes down.
    """

    agent = models.CharField(max_length=200, help_text="The agent type, or flow:<slug> for a flow run.")
    status = models.CharField(max_length=20, choices=RunStatus.choices)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = "deleted runs"
        verbose_name_plural = "deleted runs"
        constraints = [models.UniqueConstraint(fields=["agent", "status"], name="deleted_runs_agent_status_unique")]

    def __str__(self):
        return f"{self.count} {self.agent} {self.status}"
