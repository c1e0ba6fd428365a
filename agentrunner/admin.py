"""Admin of the LLM gateway: calls (read-only), monthly budgets per user, provider circuit breakers; and teams.

A team's staff see its LLM calls only. Budgets per user and the providers' breakers are settings of the whole
service: superusers only, like every page that does not scope by team (dashboard.apps). Teams and their members:
agentrunner/teams/admin.py. Model data is always escaped (`format_html`); changes go through services.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import BigIntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.html import format_html

from agentrunner import accounts_admin  # noqa: F401  (Django's user and group pages, one fix)
from agentrunner.adminkit import ReadOnlyAdminMixin, TeamScopedAdmin, id_search, usage_bar
from agentrunner.llm import breaker_reset
from agentrunner.llm.budgets import month_bounds
from agentrunner.llm.selectors import money
from agentrunner.models import BreakerState, LLMCall, LLMOutcome, OwnerBudget, ProviderBreaker
from agentrunner.teams import admin as teams_admin  # noqa: F401  (registers the team pages)

EMPTY = "—"
GREY, GREEN, AMBER, RED, ORANGE = "#6c757d", "#198754", "#ffc107", "#dc3545", "#e8590c"
DARK_TEXT_ON = {AMBER}
OUTCOME_COLOURS = {
    LLMOutcome.SUCCESS: GREEN,
    LLMOutcome.ERROR: RED,
    LLMOutcome.REFUSED_BUDGET: ORANGE,
    LLMOutcome.BREAKER_OPEN: GREY,
}
BREAKER_COLOURS = {BreakerState.CLOSED: GREEN, BreakerState.OPEN: RED, BreakerState.HALF_OPEN: AMBER}
BREAKER_SHORT = {BreakerState.CLOSED: "in use", BreakerState.OPEN: "switched off", BreakerState.HALF_OPEN: "testing"}
SHORT_RUN_ID_LENGTH = 8


def badge(label: str, colour: str):
    text = "#212529" if colour in DARK_TEXT_ON else "#fff"
    return format_html(
        '<span style="display:inline-block;padding:2px 9px;border-radius:10px;font-size:11px;font-weight:600;'
        'white-space:nowrap;background:{};color:{}">{}</span>',
        colour,
        text,
        label,
    )


@admin.register(LLMCall)
class LLMCallAdmin(ReadOnlyAdminMixin, TeamScopedAdmin, admin.ModelAdmin):
    team_path = "team"  # the calls of the team's runs; a call of no team (none of today's) is a superuser's
    list_display = [
        "created_at",
        "provider_display",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "latency",
        "outcome_badge",
        "run_link",
        "owner",
    ]
    list_filter = ["provider", "model", "outcome", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["run__id"]  # the search itself is get_search_results
    search_help_text = "A run id (in full, or its first 8 characters) or a gateway request id."
    ordering = ["-created_at", "-id"]
    empty_value_display = EMPTY
    list_per_page = 100
    fields = [
        "created_at",
        "run_link",
        "step",
        "owner",
        "request_id",
        "provider",
        "model",
        "step_attempt",
        "attempt",
        "outcome",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "latency",
        "error",
    ]
    readonly_fields = fields

    # Read-only: a cost record, which budgets count.

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        by_id = id_search(search_term, full=["run_id", "request_id"], short="run__id")
        return (queryset.none() if by_id is None else queryset.filter(by_id)), False

    @admin.display(description="provider", ordering="provider")
    def provider_display(self, obj: LLMCall):
        return obj.provider or "(none: refused)"

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: LLMCall):
        return f"${money(obj.cost_usd)}"

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: LLMCall):
        return f"{obj.latency_ms:,} ms"

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, obj: LLMCall):
        return badge(obj.get_outcome_display(), OUTCOME_COLOURS.get(obj.outcome, GREY))

    @admin.display(description="run")
    def run_link(self, obj: LLMCall):
        if obj.run_id is None:
            return EMPTY
        url = reverse("admin:runs_run_change", args=[obj.run_id])
        return format_html(
            '<a href="{}" title="{}" style="font-family:monospace">{}</a>',
            url,
            obj.run_id,
            str(obj.run_id)[:SHORT_RUN_ID_LENGTH],
        )


@admin.register(OwnerBudget)
class OwnerBudgetAdmin(admin.ModelAdmin):
    list_display = ["user", "limit_display", "used_this_month", "usage_display"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    search_fields = ["user__username", "user__email"]
    fields = ["user", "monthly_token_limit", "used_this_month", "usage_display"]
    readonly_fields = ["used_this_month", "usage_display"]
    empty_value_display = EMPTY

    def get_queryset(self, request):
        # This month's tokens of every listed user in the same query (a correlated subquery per row
        # served by the ("owner", "created_at") index), not one query per row.
        start, end = month_bounds()
        used = (
            LLMCall.objects.filter(owner=OuterRef("user_id"), created_at__gte=start, created_at__lt=end)
            .order_by()
            .values("owner")
            .annotate(tokens=Sum("total_tokens"))
            .values("tokens")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(month_tokens=Coalesce(Subquery(used, output_field=BigIntegerField()), Value(0)))
        )

    def _limit(self, obj: OwnerBudget) -> int:
        if obj.monthly_token_limit is not None:
            return obj.monthly_token_limit
        return int(settings.LLM_MONTHLY_TOKEN_BUDGET)

    @admin.display(description="monthly limit", ordering="monthly_token_limit")
    def limit_display(self, obj: OwnerBudget):
        limit = self._limit(obj)
        shown = "unlimited" if limit == 0 else f"{limit:,} tokens"
        return shown if obj.monthly_token_limit is not None else f"default ({shown})"

    @admin.display(description="used this month (UTC)", ordering="month_tokens")
    def used_this_month(self, obj: OwnerBudget):
        if obj.pk is None:
            return EMPTY
        return f"{getattr(obj, 'month_tokens', 0):,} tokens"

    @admin.display(description="share of the limit")
    def usage_display(self, obj: OwnerBudget):
        limit = self._limit(obj)
        if obj.pk is None or limit == 0:
            return EMPTY
        return usage_bar(getattr(obj, "month_tokens", 0), limit)


@admin.register(ProviderBreaker)
class ProviderBreakerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["provider", "state_badge", "consecutive_failures", "opened_at", "probe_due", "updated_at"]
    fields = ["provider", "state_badge", "consecutive_failures", "opened_at", "probe_due", "probe_started_at"]
    readonly_fields = fields
    actions = ["reset_to_closed"]
    empty_value_display = EMPTY

    def has_reset_permission(self, request):
        return request.user.has_perm("agentrunner.change_providerbreaker")

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: ProviderBreaker):
        return badge(BREAKER_SHORT.get(obj.state, obj.state), BREAKER_COLOURS.get(obj.state, GREY))

    @admin.display(description="test call allowed at")
    def probe_due(self, obj: ProviderBreaker):
        if obj.state != BreakerState.OPEN or obj.opened_at is None:
            return EMPTY
        return obj.opened_at + timedelta(seconds=float(settings.LLM_BREAKER_RESET_SECONDS))

    @admin.action(description="Reset to closed (use the provider again)", permissions=["reset"])
    def reset_to_closed(self, request, queryset):
        reset = [row.provider for row in queryset if breaker_reset(provider=row.provider)]
        if reset:
            self.message_user(request, f"Reset to closed: {', '.join(reset)}.", messages.SUCCESS)
        else:
            self.message_user(request, "Nothing to reset: the selected breakers were already closed.", messages.INFO)
