"""The delivery admin: read-only record of each period's email, and the decisions nothing takes automatically.

A delivery that failed, or that a worker left in `sending` when it died mid-send, is never retried by
itself (the email may already have left). A person resends it (same Message-ID) or marks it sent; both
go through `digests.services` and are recorded in its history.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from agentrunner.adminkit import (
    CELL_STYLE,
    ReadOnlyAdminMixin,
    TeamScopedAdmin,
    nowrap,
    pre_text,
    sees_several_teams,
    team_ids_for,
)
from digests import selectors, services
from digests.admin.decisions import (
    MARKABLE,
    RESENDABLE,
    STILL_SENDING,
    bulk_decide,
    decision_allowed,
    mark_sent_confirm_text,
    resend_confirm_text,
)
from digests.admin.display import (
    EMPTY,
    HEAD_STYLE,
    compact_period,
    delivery_badge,
    delivery_kind,
    delivery_period,
    in_zone,
    relative,
    short_error,
)
from digests.exceptions import DeliveryStateConflict
from digests.models import DeliveryStatus, DigestDelivery
from runs.admin.display import flow_version_link, run_badge, run_link
from runs.models import Run

# The runs table of a delivery page lists this many; a digest can cover thousands.
RUNS_SHOWN = 50
# The history's outcomes (digests.services), as the table says them.
OUTCOMES = {
    "sent": "Sent",
    "error": "Failed",
    "resend requested": "Resend requested",
    "marked sent": "Marked as sent",
}
DECISION_FILTER = "decision"
DECISION_NEEDED = "needed"


class NeedsDecisionFilter(admin.SimpleListFilter):
    """Failed deliveries and ones stuck while sending: nothing retries them, a person decides."""

    title = "needs a decision"
    parameter_name = DECISION_FILTER

    def lookups(self, request, model_admin):
        return [(DECISION_NEEDED, "Needs a decision (failed, or stuck while sending)")]

    def queryset(self, request, queryset):
        if self.value() == DECISION_NEEDED:
            return selectors.deliveries_needing_decision(deliveries=queryset)
        return queryset


class DigestFilter(admin.RelatedOnlyFieldListFilter):
    """The digests the listed deliveries are of: the user's teams' only, not every digest of every team."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "digest"


def needs_decision_count(request) -> int:
    """How many deliveries of the user's teams' digests need a person (every team's for a superuser)."""
    ids = team_ids_for(request)
    deliveries = DigestDelivery.objects.all()
    if ids is not None:
        deliveries = deliveries.filter(subscription__team__in=ids)
    return selectors.deliveries_needing_decision(deliveries=deliveries).count()


def needs_decision_url() -> str:
    return reverse("admin:digests_digestdelivery_changelist") + f"?{DECISION_FILTER}={DECISION_NEEDED}"


@admin.register(DigestDelivery)
class DeliveryAdmin(ReadOnlyAdminMixin, TeamScopedAdmin, admin.ModelAdmin):
    """The deliveries of a team's digests: its members read them, its editors and admins decide about them."""

    team_path = "subscription__team"
    list_display = [
        "digest_name",
        "period_short",
        "status_badge",
        "runs_count",
        "sent_short",
    ]
    list_display_links = ["period_short"]
    list_filter = [NeedsDecisionFilter, "status", ("subscription", DigestFilter)]
    list_select_related = ["subscription"]
    search_fields = ["subscription__name", "subject", "message_id", "recipients"]
    search_help_text = "Search by digest name, subject, Message-ID or recipient."
    ordering = ["-created_at", "-pk"]
    empty_value_display = EMPTY
    actions = ["resend_selected", "mark_sent_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "digest_link",
                    "period_display",
                    "kind_display",
                    "status_display",
                    "recipients_display",
                    "subject",
                    "message_id",
                    "email_link",
                ]
            },
        ),
        (
            "Sending",
            {
                "fields": [
                    "attempts",
                    "next_attempt_display",
                    "sending_started_display",
                    "sent_display",
                    "error_display",
                ],
            },
        ),
        (
            "History",
            {"fields": ["history_table"], "description": "Every send attempt and every decision, oldest first."},
        ),
        ("Runs included", {"fields": ["runs_table"]}),
    ]
    readonly_fields = [
        "digest_link",
        "period_display",
        "kind_display",
        "status_display",
        "recipients_display",
        "subject",
        "message_id",
        "email_link",
        "attempts",
        "next_attempt_display",
        "sending_started_display",
        "sent_display",
        "error_display",
        "history_table",
        "runs_table",
    ]

    # -- permissions: a record, never edited; the editors and admins of its digest's team decide about it

    # Read-only: deliveries are claimed by the scheduler, the tick or Send now; the row is what keeps a
    # period from being mailed twice; decisions are buttons (has_decide_permission).

    def has_decide_permission(self, request, obj=None) -> bool:
        """Whether the user may resend `obj` or mark it sent (without one: some delivery of theirs)."""
        return self.has_team_role(request, self.write_role, obj)

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        return [columns[0], "team_display", *columns[1:]] if sees_several_teams(request) else columns

    def get_list_select_related(self, request):
        related = super().get_list_select_related(request)
        return [*related, "subscription__team"] if sees_several_teams(request) else related

    @admin.display(description="team", ordering="subscription__team__name")
    def team_display(self, obj: DigestDelivery):
        return obj.subscription.team.name

    # -- list

    @admin.display(description="digest", ordering="subscription__name")
    def digest_name(self, obj: DigestDelivery):
        return obj.subscription.name

    @admin.display(description="period", ordering="period_end")
    def period_short(self, obj: DigestDelivery):
        context = {"period": compact_period(obj), "timezone": obj.subscription.timezone, "kind": delivery_kind(obj)}
        return render_to_string("admin/digests/includes/period_cell.html", context)

    @admin.display(description="period")
    def period_display(self, obj: DigestDelivery):
        return delivery_period(obj)

    @admin.display(description="started by", ordering="manual")
    def kind_display(self, obj: DigestDelivery):
        return delivery_kind(obj)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: DigestDelivery):
        return delivery_badge(obj)

    @admin.display(description="runs")
    def runs_count(self, obj: DigestDelivery):
        return len(obj.run_ids)

    @admin.display(description="sent at", ordering="sent_at")
    def sent_short(self, obj: DigestDelivery):
        return nowrap(in_zone(obj.sent_at, obj.subscription.timezone, with_zone=False))

    @admin.display(description="sent at")
    def sent_display(self, obj: DigestDelivery):
        return nowrap(in_zone(obj.sent_at, obj.subscription.timezone))

    def changelist_view(self, request, extra_context=None):
        extra = {
            "needs_decision_count": needs_decision_count(request),
            "needs_decision_url": needs_decision_url(),
            "showing_needs_decision": request.GET.get(DECISION_FILTER) == DECISION_NEEDED,
        }
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    # -- change page

    @admin.display(description="digest")
    def digest_link(self, obj: DigestDelivery):
        url = reverse("admin:digests_digestsubscription_change", args=[obj.subscription_id])
        return format_html('<a href="{}">{}</a>', url, obj.subscription)

    @admin.display(description="status")
    def status_display(self, obj: DigestDelivery):
        return delivery_badge(obj)

    @admin.display(description="addressed to")
    def recipients_display(self, obj: DigestDelivery):
        return ", ".join(selectors.delivery_recipients(obj)) or EMPTY

    @admin.display(description="email")
    def email_link(self, obj: DigestDelivery):
        if obj.status == DeliveryStatus.EMPTY:
            return "Not mailed: nothing to report in this period (“skip empty periods” is ticked)."
        url = reverse("admin:digests_digestdelivery_email", args=[obj.pk])
        return format_html('<a href="{}">View the email (subject, text and HTML)</a>', url)

    @admin.display(description="next attempt")
    def next_attempt_display(self, obj: DigestDelivery):
        if obj.status != DeliveryStatus.RETRYING or obj.next_attempt_at is None:
            return EMPTY
        return format_html(
            "{} ({})", in_zone(obj.next_attempt_at, obj.subscription.timezone), relative(obj.next_attempt_at)
        )

    @admin.display(description="sending started")
    def sending_started_display(self, obj: DigestDelivery):
        return in_zone(obj.sending_started_at, obj.subscription.timezone)

    @admin.display(description="last error")
    def error_display(self, obj: DigestDelivery):
        return pre_text(obj.error)

    @admin.display(description="history")
    def history_table(self, obj: DigestDelivery):
        entries = [e for e in obj.history if isinstance(e, dict)]
        if not entries:
            return "Nothing yet."
        tz = obj.subscription.timezone
        rows = [
            {
                "at": _entry_time(e.get("at"), tz),
                "attempt": e.get("attempt"),
                "outcome": OUTCOMES.get(e.get("outcome"), e.get("outcome")),
                "by": e.get("by"),
                "error": short_error(e.get("error") or "", limit=200),
            }
            for e in entries
        ]
        context = {"rows": rows, "timezone": tz, "head_style": HEAD_STYLE, "cell_style": CELL_STYLE}
        return render_to_string("admin/digests/includes/history.html", context)

    @admin.display(description="runs")
    def runs_table(self, obj: DigestDelivery):
        ids = [str(i) for i in obj.run_ids]
        if not ids:
            return "No runs finished in this period."
        tz = obj.subscription.timezone
        runs = list(
            # The digest's team's runs only, as every run it reports (digests.services.digest_runs).
            Run.objects.filter(team_id=obj.subscription.team_id, pk__in=ids[:RUNS_SHOWN])
            .select_related("flow_version__flow")
            .only(
                "id",
                "status",
                "agent_type",
                "finished_at",
                "flow_version__number",
                "flow_version__digest",  # an inline flow is shown by its digest
                "flow_version__flow__slug",
            )
            .order_by("-finished_at")
        )
        rows = [
            {
                "link": run_link(run.pk),
                "flow": flow_version_link(run.flow_version) if run.flow_version_id else None,
                "agent_type": run.agent_type,
                "badge": run_badge(run),
                "finished": in_zone(run.finished_at, tz, with_zone=False),
            }
            for run in runs
        ]
        context = {
            "rows": rows,
            "timezone": tz,
            "deleted": min(len(ids), RUNS_SHOWN) - len(runs),
            "shown": RUNS_SHOWN,
            "total": len(ids),
            "head_style": HEAD_STYLE,
            "cell_style": CELL_STYLE,
        }
        return render_to_string("admin/digests/includes/runs.html", context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            now = timezone.now()
            stuck = services.delivery_is_stuck(obj, now=now)
            can_decide = self.has_decide_permission(request, obj)
            context.update(
                {
                    "needs_decision": stuck or obj.status == DeliveryStatus.FAILED,
                    "stuck": stuck,
                    "stuck_since": in_zone(obj.sending_started_at, obj.subscription.timezone),
                    "stuck_for": relative(obj.sending_started_at, now=now) if stuck else "",
                    "can_resend": can_decide and decision_allowed(obj, RESENDABLE, now=now),
                    "can_mark_sent": can_decide and decision_allowed(obj, MARKABLE, now=now),
                    "resend_confirm": resend_confirm_text(obj, stuck=stuck),
                    "mark_sent_confirm": mark_sent_confirm_text(obj),
                }
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- buttons and actions, both through the services

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<path:object_id>/email/", self.admin_site.admin_view(self.email_view), name=f"{prefix}_email"),
            path("<path:object_id>/resend/", self.admin_site.admin_view(self.resend_view), name=f"{prefix}_resend"),
            path(
                "<path:object_id>/mark-sent/",
                self.admin_site.admin_view(self.mark_sent_view),
                name=f"{prefix}_mark_sent",
            ),
            *super().get_urls(),
        ]

    def email_view(self, request, object_id):
        obj = self.team_object(request, object_id)  # another team's delivery is a 404
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        content = services.delivery_content(delivery=obj)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "title": f"Email of “{obj.subscription}”, {delivery_period(obj)}",
            "subtitle": None,
            "content": content,
            "delivery": obj,
            "recipients": selectors.delivery_recipients(obj),
            "sent_at": in_zone(obj.sent_at, obj.subscription.timezone),
            "subject_changed": bool(obj.subject) and obj.subject != content.subject,
        }
        return TemplateResponse(request, "admin/digests/digestdelivery/email.html", context)

    def _decide(self, request, object_id, service, allowed, done: str):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.team_object(request, object_id)  # another team's delivery is a 404
        if not self.has_decide_permission(request, obj):
            raise PermissionDenied
        if obj.status == DeliveryStatus.SENDING and not decision_allowed(obj, allowed):
            self.message_user(request, f"Nothing was done: {STILL_SENDING}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:digests_digestdelivery_change", args=[obj.pk]))
        try:
            service(delivery=obj, by=request.user.get_username())
        except DeliveryStateConflict as exc:
            self.message_user(request, f"Nothing was done: {exc}", messages.ERROR)
        else:
            self.log_change(request, obj, done)
            self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:digests_digestdelivery_change", args=[obj.pk]))

    def resend_view(self, request, object_id):
        return self._decide(
            request,
            object_id,
            services.delivery_resend,
            RESENDABLE,
            "Resend requested: the email goes out again (same Message-ID) within seconds while the workers run.",
        )

    def mark_sent_view(self, request, object_id):
        return self._decide(
            request, object_id, services.delivery_mark_sent, MARKABLE, "Marked as sent (no email was sent)."
        )

    @admin.action(description="Resend selected deliveries (same Message-ID)", permissions=["decide"])
    def resend_selected(self, request, queryset):
        return bulk_decide(
            self,
            request,
            queryset,
            action="resend_selected",
            service=services.delivery_resend,
            allowed=RESENDABLE,
            title="Resend these digests?",
            explanation=(
                "Each goes out again with its own Message-ID unchanged, so mail programs that already have a "
                "copy usually show only one — but some recipients may get a digest twice. For a delivery stuck "
                "while sending, check the mail server's log first: the first copy may have left."
            ),
            button="Yes, resend them",
            done="resent",
        )

    @admin.action(description="Mark selected deliveries as sent", permissions=["decide"])
    def mark_sent_selected(self, request, queryset):
        return bulk_decide(
            self,
            request,
            queryset,
            action="mark_sent_selected",
            service=services.delivery_mark_sent,
            allowed=MARKABLE,
            title="Mark these digests as sent?",
            explanation=(
                "Nothing is sent: they are only recorded as delivered. Do this only for emails you know reached "
                "their recipients (e.g. from the mail server's log). If one did not, nobody gets that digest."
            ),
            button="Yes, mark them sent",
            done="marked as sent",
        )


def _entry_time(value, tz: str) -> str:
    if not isinstance(value, str):
        return EMPTY
    try:
        return in_zone(datetime.fromisoformat(value), tz, with_zone=False)
    except ValueError:
        return value
