"""Digests: the top results of a period, mailed to people, exactly once per period.

A DigestSubscription says what to rank and when; each period becomes one
DigestDelivery row, unique per (subscription, period), claimed before anything
is sent. A delivery found in `sending` means a worker died mid-send: nothing
resends it automatically, the admin shows it for a decision.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class DigestPeriod(models.TextChoices):
    AFTER_RUN = "after_run", "After each scheduled run"
    HOURLY = "hourly", "Hourly"
    DAILY = "daily", "Daily at a time"
    WEEKLY = "weekly", "Weekly on a day at a time"


class RankOrder(models.TextChoices):
    DESC = "desc", "Highest first"
    ASC = "asc", "Lowest first"


class Weekday(models.IntegerChoices):
    # Cron numbering (0 = Sunday), so the period is a plain cron expression.
    SUNDAY = 0, "Sunday"
    MONDAY = 1, "Monday"
    TUESDAY = 2, "Tuesday"
    WEDNESDAY = 3, "Wednesday"
    THURSDAY = 4, "Thursday"
    FRIDAY = 5, "Friday"
    SATURDAY = 6, "Saturday"


class DigestSubscription(models.Model):
    """Mail the best results of a flow, agent or schedule to some people, once per period."""

    name = models.CharField(max_length=200, help_text="Also the email's subject line; unique in its team.")
    team = models.ForeignKey(
        "agentrunner.Team",
        on_delete=models.PROTECT,
        related_name="digests",
        db_index=False,  # the unique (team, name) index below serves its lookups
        help_text="The team the digest belongs to: it mails results of that team's runs only.",
    )

    enabled = models.BooleanField(default=True)
    recipients = models.TextField(help_text="Email addresses, one per line or separated by commas.")
    flow = models.ForeignKey(
        "flows.Flow",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="digests",
        help_text="Source: a flow",
    )
    agent_type = models.CharField("agent", max_length=100, blank=True, default="", help_text="… or an agent")
    schedule = models.ForeignKey(
        "schedules.Schedule",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="digests",
        help_text="… or a schedule (only its runs).",
    )
    period = models.CharField(max_length=10, choices=DigestPeriod.choices, default=DigestPeriod.DAILY)
    send_at = models.TimeField("send at", default="08:00", help_text="For daily and weekly digests.")
    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices, default=Weekday.MONDAY)
    timezone = models.CharField("time zone", max_length=64, default="UTC")
    items_path = models.CharField(
        "results list",
        max_length=200,
        blank=True,
        default="",
        help_text="A list in each run's result to rank entry by entry (e.g. leads); empty = rank runs.",
    )
    rank_by = models.CharField(
        "rank by",
        max_length=200,
        blank=True,
        default="",
        help_text="Path to the number to rank by, e.g. score or output.score; empty = newest first.",
    )
    rank_order = models.CharField(max_length=4, choices=RankOrder.choices, default=RankOrder.DESC)
    limit = models.PositiveSmallIntegerField("how many", default=5)
    include_failures = models.BooleanField("list failed runs", default=True)
    skip_empty = models.BooleanField(
        "skip empty periods", default=False, help_text="Record, but do not mail, periods with nothing to report."
    )
    q_schedule = models.OneToOneField(
        "django_q.Schedule", null=True, blank=True, editable=False, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="digests"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "digest"
        verbose_name_plural = "digests"
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="digest_team_name_unique"),
            models.CheckConstraint(
                condition=(
                    (Q(flow__isnull=False) & Q(agent_type="") & Q(schedule__isnull=True))
                    | (Q(flow__isnull=True) & ~Q(agent_type="") & Q(schedule__isnull=True))
                    | (Q(flow__isnull=True) & Q(agent_type="") & Q(schedule__isnull=False))
                ),
                name="digest_one_source",
            ),
            models.CheckConstraint(
                condition=~Q(period="after_run") | Q(schedule__isnull=False), name="digest_after_run_needs_schedule"
            ),
            models.CheckConstraint(condition=Q(limit__gte=1), name="digest_limit_positive"),
        ]

    def __str__(self):
        return self.name

    @property
    def recipient_list(self) -> list[str]:
        return [a.strip() for a in self.recipients.replace("\n", ",").split(",") if a.strip()]

    @property
    def source_label(self) -> str:
        if self.flow_id:
            return f"flow {self.flow.slug}"
        if self.schedule_id:
            return f"schedule {self.schedule.name}"
        return f"agent {self.agent_type}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    SENDING = "sending", "Sending"
    RETRYING = "retrying", "Waiting to retry"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    EMPTY = "empty", "Nothing to report (not mailed)"


class DigestDelivery(models.Model):
    """One period of one digest: the runs it covers and what happened to its email."""

    subscription = models.ForeignKey(DigestSubscription, on_delete=models.CASCADE, related_name="deliveries")
    period_key = models.CharField(
        max_length=100, help_text="Identifies the period: its end time, or run:<id> for a per-run digest."
    )
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    run = models.ForeignKey(
        "runs.Run",
        null=True,
        blank=True,
        # A per-run delivery goes with its run (retention, an admin's delete): emptied, it would read as a
        # period's delivery (run IS NULL), which the next period's start is taken from.
        on_delete=models.CASCADE,
        related_name="+",
        help_text="For a per-run digest: the scheduled run it reports.",
    )
    manual = models.BooleanField(default=False, help_text="Started with “Send now”.")
    run_ids = models.JSONField("runs included", default=list, blank=True)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    message_id = models.CharField("Message-ID", max_length=250, blank=True, default="")
    recipients = models.TextField(blank=True, default="", help_text="Who it was addressed to.")
    subject = models.CharField(max_length=250, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField("last error", blank=True, default="")
    history = models.JSONField(default=list, blank=True, help_text="Every send attempt: when and how it ended.")
    sending_started_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-period_end"]
        verbose_name = "digest delivery"
        verbose_name_plural = "digest deliveries"
        constraints = [
            # Claimed before sending: a second scheduler fire or cluster finds the row and stops.
            models.UniqueConstraint(fields=["subscription", "period_key"], name="digestdelivery_period_unique"),
        ]
        indexes = [
            # Tick: deliveries waiting to retry whose time has come.
            models.Index(fields=["status", "next_attempt_at"], name="digestdelivery_status_next"),
        ]

    def __str__(self):
        return f"{self.subscription} · {self.period_key}"
