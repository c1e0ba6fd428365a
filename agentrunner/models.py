"""Teams (tenants) and their members; the LLM gateway's records (provider calls, tokens held by requests in
progress, circuit breakers, monthly budgets) and the rate limiter's windows."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from agentrunner.validators import validate_retention_days


class Role(models.TextChoices):
    """What a member may do in a team; each role may do everything the roles before it may."""

    VIEWER = "viewer", "Viewer: reads the team's runs, flows, schedules and digests"
    RUNNER = "runner", "Runner: also starts, cancels and retries runs"
    EDITOR = "editor", "Editor: also defines flows, schedules and digests"
    ADMIN = "admin", "Admin: also manages the team's members and tokens"


# Lowest first: a role includes the ones before it.
ROLE_ORDER = (Role.VIEWER, Role.RUNNER, Role.EDITOR, Role.ADMIN)

DEFAULT_TEAM_SLUG = "default"


class Team(models.Model):
    """A tenant: its runs, flows, schedules, digests and LLM calls are seen only by its members (and superusers)."""

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(
        max_length=100, unique=True, help_text="Identifier used in the X-Team header and the API, e.g. claims-ops."
    )
    run_starts_per_minute = models.PositiveIntegerField(
        "run starts per minute",
        null=True,
        blank=True,
        help_text="Most runs the whole team may start in any 60 s. Empty = the default "
        "(RUN_STARTS_PER_TEAM_PER_MINUTE setting); 0 = no limit.",
    )
    run_starts_per_user_per_minute = models.PositiveIntegerField(
        "run starts per member per minute",
        null=True,
        blank=True,
        help_text="Most runs one member may start in any 60 s. Empty = the default "
        "(RUN_STARTS_PER_USER_PER_MINUTE setting); 0 = no limit.",
    )
    llm_requests_per_minute = models.PositiveIntegerField(
        "LLM requests per minute",
        null=True,
        blank=True,
        help_text="Most LLM requests the team's runs may send in any 60 s; a step over it waits and tries again. "
        "Empty = the default (LLM_REQUESTS_PER_TEAM_PER_MINUTE setting); 0 = no limit.",
    )
    monthly_token_limit = models.PositiveBigIntegerField(
        "monthly token limit",
        null=True,
        blank=True,
        help_text="Most LLM tokens the team's runs may use per calendar month (UTC), next to each member's own "
        "budget: the stricter applies. Empty = the default (TEAM_MONTHLY_TOKEN_BUDGET setting); 0 = unlimited.",
    )
    run_retention_days = models.PositiveIntegerField(
        "keep finished runs (days)",
        null=True,
        blank=True,
        validators=[validate_retention_days],
        help_text="Finished runs older than this are deleted with their steps; what their LLM calls cost stays. "
        "Empty = the default (RUN_RETENTION_DAYS setting); 0 = keep every run; otherwise at least 8.",
    )
    created_at = models.DateTimeField("created", default=timezone.now, editable=False)

    class Meta:
        verbose_name = "team"
        verbose_name_plural = "teams"
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    """A user's role in a team."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="memberships",
        db_index=False,  # the unique (user, team) index below serves lookups by user
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    is_token = models.BooleanField(
        "API token account",
        default=False,
        help_text="A user made by the team's token endpoint to hold one API token; it belongs to this team only.",
    )
    created_at = models.DateTimeField("member since", default=timezone.now, editable=False)

    class Meta:
        verbose_name = "team member"
        verbose_name_plural = "team members"
        ordering = ["team__name", "user__username"]
        constraints = [
            # The acting team of a request: user = ? AND team = ? (and the user's teams: user = ?).
            models.UniqueConstraint(fields=["user", "team"], name="membership_user_team_unique"),
        ]

    def __str__(self):
        return f"{self.user} in {self.team} ({self.role})"


class LLMOutcome(models.TextChoices):
    SUCCESS = "success", "Succeeded"
    ERROR = "error", "Failed"
    REFUSED_BUDGET = "refused_budget", "Refused: over budget"
    BREAKER_OPEN = "breaker_open", "Skipped: provider switched off (circuit open)"


class LLMCall(models.Model):
    """One call attempt through the LLM gateway: sent to a provider, refused by a budget, or skipped (breaker open)."""

    # SET_NULL: the row is a cost record; deleting a run or a user must not erase what was spent.
    run = models.ForeignKey(
        "runs.Run",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="llm_calls",
        db_index=False,  # the ("run", "step") index below serves lookups by run
    )
    step = models.ForeignKey("runs.Step", null=True, blank=True, on_delete=models.SET_NULL, related_name="llm_calls")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="llm_calls",
        db_index=False,  # the ("owner", "created_at") index below serves lookups by owner
        help_text="The account whose monthly budget the call counts against (the run's creator).",
    )
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="llm_calls",
        db_index=False,  # the ("team", "created_at") index below serves lookups by team
        help_text="The team of the run that made the call; its monthly budget counts the call.",
    )
    request_id = models.UUIDField(
        "gateway request",
        help_text="Shared by every attempt (retries, failover) made for one request to the gateway.",
    )
    provider = models.CharField(max_length=20, blank=True, help_text="Empty when a budget refused the call.")
    model = models.CharField(max_length=200, blank=True)
    step_attempt = models.PositiveIntegerField(
        "step attempt", null=True, blank=True, help_text="Which attempt of the step made the call."
    )
    attempt = models.PositiveSmallIntegerField(
        "try on this provider",
        default=1,
        help_text="1 for the first try on this provider within one gateway request, 2 for its first retry, "
        "...; 0 when nothing was sent (refused or skipped).",
    )
    outcome = models.CharField(max_length=20, choices=LLMOutcome.choices)
    prompt_tokens = models.PositiveIntegerField("prompt tokens", default=0)
    completion_tokens = models.PositiveIntegerField("completion tokens", default=0)
    total_tokens = models.PositiveIntegerField(
        "tokens", default=0, help_text="Prompt plus completion tokens: what budgets count."
    )
    cost_usd = models.DecimalField(
        "cost (USD)",
        max_digits=14,
        decimal_places=8,
        default=0,
        help_text="From the prices per million tokens in the LLM_PRICES setting; 0 for models not listed.",
    )
    latency_ms = models.PositiveIntegerField("latency (ms)", default=0, help_text="Time waiting for the provider.")
    error = models.TextField("error", blank=True, default="")
    created_at = models.DateTimeField("when", default=timezone.now, editable=False)

    class Meta:
        verbose_name = "LLM call"
        verbose_name_plural = "LLM calls"
        ordering = ["-created_at", "-id"]
        indexes = [
            # Monthly usage of one owner: owner = ? AND created_at >= month start (budget check, admin).
            models.Index(fields=["owner", "created_at"], name="llmcall_owner_created"),
            # Monthly usage of one team: team = ? AND created_at >= month start (budget check, admin).
            models.Index(fields=["team", "created_at"], name="llmcall_team_created"),
            # Tokens used by a run (run budget check) and per-step totals (run_metrics).
            models.Index(fields=["run", "step"], name="llmcall_run_step"),
            # The admin's list, newest first.
            models.Index(fields=["-created_at"], name="llmcall_created_desc"),
            # Retention (agentrunner.llm.retention): the oldest calls whose run is gone, or that had none.
            models.Index(fields=["created_at"], condition=Q(run__isnull=True), name="llmcall_runless_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(total_tokens=models.F("prompt_tokens") + models.F("completion_tokens")),
                name="llmcall_total_tokens_sum",
            ),
        ]

    def __str__(self):
        return f"{self.provider or 'gateway'} {self.model} ({self.outcome})"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed (in use)"
    OPEN = "open", "Open (switched off)"
    HALF_OPEN = "half_open", "Half-open (testing with one call)"


class ProviderBreaker(models.Model):
    """A provider's circuit breaker, shared by every process; changed only by compare-and-set updates."""

    provider = models.CharField(max_length=20, unique=True)
    state = models.CharField(max_length=10, choices=BreakerState.choices, default=BreakerState.CLOSED)
    consecutive_failures = models.PositiveIntegerField(
        "failures in a row",
        default=0,
        help_text="Reset by a successful call; the breaker opens at LLM_BREAKER_FAILURES.",
    )
    opened_at = models.DateTimeField(
        "switched off at", null=True, blank=True, help_text="A test call is allowed LLM_BREAKER_RESET_SECONDS later."
    )
    probe_started_at = models.DateTimeField(
        "test call started at",
        null=True,
        blank=True,
        help_text="When half-open: when the one test call was claimed (another may claim it if this one hangs).",
    )
    updated_at = models.DateTimeField("last change", default=timezone.now)

    class Meta:
        verbose_name = "LLM provider circuit breaker"
        verbose_name_plural = "LLM provider circuit breakers"
        ordering = ["provider"]

    def __str__(self):
        return f"{self.provider} ({self.state})"


class OwnerBudget(models.Model):
    """A user's own monthly LLM token limit, replacing the LLM_MONTHLY_TOKEN_BUDGET default."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="llm_budget", verbose_name="user"
    )
    monthly_token_limit = models.PositiveBigIntegerField(
        "monthly token limit",
        null=True,
        blank=True,
        help_text="Most LLM tokens this user's runs may use per calendar month (UTC). Empty = the default "
        "(LLM_MONTHLY_TOKEN_BUDGET setting); 0 = unlimited.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "monthly LLM budget"
        verbose_name_plural = "monthly LLM budgets"
        ordering = ["user__username"]

    def __str__(self):
        return f"LLM budget of {self.user}"


class LLMReservation(models.Model):
    """Tokens a gateway request in progress holds against the budgets, so that concurrent requests cannot overspend.

    Written under the budgets' locks before the first provider try (`agentrunner.llm.budgets`), deleted when
    the request ends. Not a call and not a cost: the admin and the metrics read LLMCall rows only.
    """

    # CASCADE: a reservation is no record of anything spent, only a hold that ends with its request.
    # The foreign keys' own indexes serve the budget check: run = ? (or owner = ?, team = ?) AND expires_at > now.
    run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.CASCADE, related_name="llm_reservations"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="llm_reservations"
    )
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="llm_reservations")
    request_id = models.UUIDField("gateway request", help_text="The LLM calls made for the request share it.")
    tokens = models.PositiveIntegerField(help_text="The request's estimate: prompt characters / 4 + max_tokens.")
    created_at = models.DateTimeField("reserved at", default=timezone.now, editable=False)
    expires_at = models.DateTimeField(
        "counts until",
        help_text="Longer than the request can last; a reservation still here then was left by a process that "
        "died, and no longer counts.",
    )

    class Meta:
        verbose_name = "LLM token reservation"
        verbose_name_plural = "LLM token reservations"

    def __str__(self):
        return f"{self.tokens} tokens for request {self.request_id}"


class RateLimitKey(models.Model):
    """One rate-limited key's sliding-window log in the database (agentrunner.ratelimit, when REDIS_URL is unset).

    The row is also the key's lock: a start locks it, reads the log, and appends to it only if allowed.
    """

    key = models.CharField(max_length=200, unique=True, help_text="What is limited, e.g. `run-starts:user:7`.")
    hits = models.JSONField(
        "accepted starts",
        default=list,
        help_text="When each start the key accepted within the last window happened (seconds since the epoch), "
        "oldest first; at most the limit.",
    )
    expires_at = models.DateTimeField(
        "last start leaves the window at", help_text="From then on the row holds nothing and may be deleted."
    )

    class Meta:
        verbose_name = "rate-limit window"
        verbose_name_plural = "rate-limit windows"
        indexes = [
            # The clean-up: expires_at <= now, oldest first, a batch at a time (agentrunner.ratelimit.prune).
            models.Index(fields=["expires_at"], name="ratelimitkey_expires"),
        ]

    def __str__(self):
        return self.key


class DeletedLLMCalls(models.Model):
    """What the LLM calls retention deleted added up, by metrics labels: the llm_* counters keep counting them.

    Written in the transaction that deletes the calls (agentrunner.llm.retention), so no counter goes down.
    """

    provider = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=20, choices=LLMOutcome.choices)
    count = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)

    class Meta:
        verbose_name = "deleted LLM calls"
        verbose_name_plural = "deleted LLM calls"
        constraints = [
            models.UniqueConstraint(fields=["provider", "model", "outcome"], name="deleted_llm_calls_labels_unique")
        ]

    def __str__(self):
        return f"{self.count} {self.provider or 'gateway'} {self.model} {self.outcome}"
