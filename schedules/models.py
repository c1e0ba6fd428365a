"""Schedules: start a flow or an agent with a fixed input by cron expression or interval.

Each schedule owns one django-q2 Schedule row (created and kept in sync by
`schedules.services`, never edited by hand); django-q2's scheduler fires it and
`schedules.tasks.schedule_fire` decides what the slot becomes (a run, a skip, a
queued slot), recorded as a ScheduleFire row unique per (schedule, intended time).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ScheduleKind(models.TextChoices):
    CRON = "cron", "Cron expression"
    INTERVAL = "interval", "Fixed interval"


class OverlapPolicy(models.TextChoices):
    SKIP = "skip", "Skip the slot while the previous run is still active"
    QUEUE = "queue", "Queue the slot; it starts when the previous run has finished"
    ALLOW = "allow", "Allow: start a run even if the previous one is still active"


class CatchUpPolicy(models.TextChoices):
    SKIP_MISSED = "skip_missed", "Skip slots missed while workers were down"
    RUN_ONCE = "run_once", "Run once for all the slots missed while workers were down"


class Schedule(models.Model):
    """Start a flow or an agent with a fixed input at every fire time."""

    name = models.CharField(max_length=200, help_text="Shown in the admin, in runs and in digests; unique in its team.")
    team = models.ForeignKey(
        "agentrunner.Team",
        on_delete=models.PROTECT,
        related_name="schedules",
        db_index=False,  # the unique (team, name) index below serves its lookups
        help_text="The team the schedule belongs to; its runs belong to it too.",
    )

    flow = models.ForeignKey(
        "flows.Flow",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="schedules",
        help_text="The flow to start (its newest version at each fire time). Set this or an agent.",
    )
    agent_type = models.CharField("agent", max_length=100, blank=True, default="", help_text="Or an agent to start.")
    input = models.JSONField("input", default=dict, blank=True, help_text="The input every run starts with.")
    kind = models.CharField("repeat by", max_length=10, choices=ScheduleKind.choices, default=ScheduleKind.INTERVAL)
    cron = models.CharField(
        "cron expression",
        max_length=100,
        blank=True,
        default="",
        help_text="Minute hour day-of-month month day-of-week, e.g. '0 7 * * 1-5' = weekdays at 07:00.",
    )
    interval_seconds = models.PositiveIntegerField(
        "every (seconds)",
        null=True,
        blank=True,
        help_text="For a fixed interval, e.g. 600 = every 10 minutes (on the clock: :00, :10, …).",
    )
    timezone = models.CharField(
        "time zone", max_length=64, default="UTC", help_text="Cron times are read in this zone, e.g. Europe/Paris."
    )
    enabled = models.BooleanField(default=True, help_text="Untick to pause; nothing is caught up on resume.")
    overlap = models.CharField(
        "if the previous run is still active", max_length=10, choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP
    )
    catch_up = models.CharField(
        "after downtime", max_length=12, choices=CatchUpPolicy.choices, default=CatchUpPolicy.SKIP_MISSED
    )
    # django-q2's row for this schedule; our code creates, updates and deletes it.
    q_schedule = models.OneToOneField(
        "django_q.Schedule", null=True, blank=True, editable=False, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="schedules",
        help_text="Runs are started as this account (its LLM budget applies).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="schedule_team_name_unique"),
            models.CheckConstraint(
                condition=(Q(flow__isnull=False) & Q(agent_type="")) | (Q(flow__isnull=True) & ~Q(agent_type="")),
                name="schedule_one_target",
            ),
            models.CheckConstraint(
                condition=(Q(kind="cron") & ~Q(cron=""))
                | (Q(kind="interval") & Q(interval_seconds__isnull=False) & Q(interval_seconds__gte=1)),
                name="schedule_timing_set",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def target_label(self) -> str:
        return f"flow {self.flow.slug}" if self.flow_id else f"agent {self.agent_type}"


class FireStatus(models.TextChoices):
    STARTED = "started", "Run started"
    QUEUED = "queued", "Queued behind the previous run"
    SKIPPED_OVERLAP = "skipped_overlap", "Skipped: previous run still active"
    SKIPPED_MISSED = "skipped_missed", "Skipped: missed during downtime"
    FAILED = "failed", "Could not start"


class ScheduleFire(models.Model):
    """What one fire time of a schedule became; one row per (schedule, intended time), whoever fires it."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="fires")
    intended_at = models.DateTimeField("intended time", help_text="The fire time this slot stands for.")
    status = models.CharField(max_length=20, choices=FireStatus.choices)
    run = models.OneToOneField(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="schedule_fire"
    )
    detail = models.TextField(blank=True, default="", help_text="Why it was skipped or could not start.")
    created_at = models.DateTimeField("fired at", auto_now_add=True)

    class Meta:
        ordering = ["-intended_at"]
        constraints = [
            # The claim: however many schedulers fire this slot, one row (and so one run) wins.
            models.UniqueConstraint(fields=["schedule", "intended_at"], name="schedulefire_slot_unique"),
        ]
        indexes = [
            # Tick: the oldest queued slot of each schedule.
            models.Index(fields=["schedule", "intended_at"], condition=Q(status="queued"), name="schedulefire_queued"),
        ]

    def __str__(self):
        return f"{self.schedule} @ {self.intended_at:%Y-%m-%d %H:%M:%S}"
