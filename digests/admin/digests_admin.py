"""The digest admin: list, edit (saved through the services), next send times, delivery history, preview, send now."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from agentrunner.adminkit import (
    CELL_STYLE,
    ServiceSaveMixin,
    TeamScopedAdmin,
    add_service_errors,
    nowrap,
    sees_several_teams,
)
from agentrunner.agents import all_agents
from digests import selectors, services
from digests.admin.deliveries_admin import needs_decision_count, needs_decision_url
from digests.admin.display import (
    EMPTY,
    HEAD_STYLE,
    compact_period,
    delivery_badge,
    delivery_kind,
    delivery_link,
    in_zone,
    relative,
    short_error,
)
from digests.exceptions import DigestInvalid
from digests.models import DeliveryStatus, DigestPeriod, DigestSubscription
from schedules.timing import time_zones

HISTORY_ROWS = 20
UPCOMING_SENDS = 3
MAX_LIMIT = 100
TIME_ZONES_LIST_ID = "digest-time-zones"
# The periods each of these fields applies to. For the others the field is hidden (the change form's script
# reads the `data-digest-periods` of its input) and what is posted in it is ignored: the saved value stays.
PERIOD_FIELDS = {
    "send_at": (DigestPeriod.DAILY, DigestPeriod.WEEKLY),
    "weekday": (DigestPeriod.WEEKLY,),
}


class TimeZoneInput(forms.TextInput):
    """A text box that suggests IANA time zone names as one types (an HTML datalist)."""

    def __init__(self):
        super().__init__(attrs={"list": TIME_ZONES_LIST_ID, "autocomplete": "off", "placeholder": "Europe/Paris"})

    def render(self, name, value, attrs=None, renderer=None):
        context = {
            "input": super().render(name, value, attrs, renderer),
            "list_id": TIME_ZONES_LIST_ID,
            "zones": sorted(time_zones()),
        }
        return render_to_string("admin/digests/includes/time_zone_input.html", context)


class DigestForm(forms.ModelForm):
    agent_type = forms.ChoiceField(
        label="Agent", required=False, help_text="… or an agent: its single-agent runs (not runs of flows)."
    )
    send_at = forms.TimeField(
        label="Send at",
        input_formats=["%H:%M", "%H:%M:%S"],
        widget=forms.TimeInput(format="%H:%M", attrs={"size": 6, "placeholder": "08:00"}),
        help_text="HH:MM in the time zone below, for daily and weekly digests.",
    )
    limit = forms.IntegerField(
        label="How many",
        min_value=1,
        max_value=MAX_LIMIT,
        initial=5,
        help_text=f"How many top results the email lists (1–{MAX_LIMIT}).",
    )

    class Meta:
        model = DigestSubscription
        fields = list(services.EDITABLE)
        widgets = {
            "recipients": forms.Textarea(
                attrs={"rows": 4, "cols": 60, "placeholder": "claims-team@example.com\nlead@example.com"}
            ),
            "timezone": TimeZoneInput(),
        }
        help_texts = {
            "name": "Unique in its team. The email's subject starts with it, e.g. “Claim intake — top claims”.",
            "enabled": "Untick to pause: no email is sent until you tick it again.",
            "recipients": "Email addresses, one per line (or separated by commas).",
            "flow": "A flow: its runs, whatever the version.",
            "schedule": "… or a schedule: only the runs it started. Needed for “after each scheduled run”.",
            "period": "When an email goes out: after each run of the schedule (one email per run), or on the hour, "
            "day or week, covering the runs that finished since the previous email.",
            "weekday": "For weekly digests.",
            "timezone": "The recipients' time zone, e.g. Europe/Paris: send times and periods are read in it.",
            "rank_order": "For “rank by”: highest first for scores, lowest first for e.g. prices.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "period" not in self.fields:
            return  # a page the user may only read: every field is shown as text, none is in the form
        choices = [("", "—")] + [(name, name) for name in all_agents()]
        current = self.instance.agent_type
        if current and current not in all_agents():
            choices.append((current, f"{current} (no longer installed)"))
        self.fields["agent_type"].choices = choices
        if self.instance.pk and not self.is_bound:
            # Stored comma-separated by the service; one per line reads and edits better.
            self.initial["recipients"] = "\n".join(self.instance.recipient_list)
        self.fields["period"].widget.attrs["data-digest-period"] = ""
        for name, periods in PERIOD_FIELDS.items():
            self.fields[name].required = False  # required only where it applies: see clean()
            self.fields[name].widget.attrs["data-digest-periods"] = " ".join(periods)

    def _clean_period_fields(self, cleaned: dict) -> dict:
        period = cleaned.get("period")
        if not period:
            return cleaned
        for name, periods in PERIOD_FIELDS.items():
            if period in periods:
                if cleaned.get(name) in (None, "") and name not in self._errors:
                    self.add_error(name, forms.ValidationError(self.fields[name].error_messages["required"]))
                continue
            # Hidden for this period: whatever was posted (even something invalid) is ignored, and the digest
            # keeps its saved value (a new one, the default), ready if the period changes back.
            self._errors.pop(name, None)
            cleaned[name] = DigestSubscription._meta.get_field(name).to_python(getattr(self.instance, name))
        return cleaned

    def _get_validation_exclusions(self):
        # digest_check (below) says what the model's source and period constraints say, naming the field
        # to fix; the model's own "Constraint … is violated" would only repeat it less clearly.
        return super()._get_validation_exclusions() | {"flow", "agent_type", "schedule", "period"}

    def clean(self):
        cleaned = self._clean_period_fields(super().clean())
        team = cleaned.get("team") if "team" in self.fields else (self.instance.team if self.instance.team_id else None)
        name = cleaned.get("name")
        others = DigestSubscription.objects.exclude(pk=self.instance.pk)
        if team and name and others.filter(team=team, name=name).exists():
            # At the name, before saving; the model's (team, name) constraint would say it above the form.
            self.add_error("name", f"A digest named {name!r} already exists in this team.")
        for name in ("flow", "schedule"):
            source = cleaned.get(name)
            if team and source and source.team_id != team.pk:
                # The services refuse another team's source as one that does not exist; here both teams are
                # the user's, so say which is which.
                self.add_error(
                    name, f"This {name} is of team {source.team}: a digest of team {team} reports only its own."
                )
        return cleaned

    def _post_clean(self):
        super()._post_clean()
        if "team" in self.fields and self.instance.team_id is None:
            return  # no team chosen: that error is enough; the rest is checked once there is one
        try:
            services.digest_check(self.instance)
        except DigestInvalid as exc:
            add_service_errors(self, exc.errors)  # a field's own error, if any, says it better


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"
    CONDITIONS = {
        "flow": Q(flow__isnull=False),
        "agent": ~Q(agent_type=""),
        "schedule": Q(schedule__isnull=False),
    }

    def lookups(self, request, model_admin):
        return [("flow", "A flow"), ("agent", "An agent"), ("schedule", "A schedule")]

    def queryset(self, request, queryset):
        condition = self.CONDITIONS.get(self.value())
        return queryset.filter(condition) if condition is not None else queryset


@admin.register(DigestSubscription)
class DigestAdmin(ServiceSaveMixin, TeamScopedAdmin, admin.ModelAdmin):
    """A team's digests: its viewers read and preview them, its editors and admins write and send them."""

    form = DigestForm
    service_fields = (*services.EDITABLE, "team")  # the team only when adding: a digest stays in its team
    service_error = DigestInvalid
    list_display = [
        "name",
        "source_display",
        "period_display",
        "recipients_count",
        "last_delivery_display",
        "enabled",
    ]
    list_filter = ["enabled", "period", SourceFilter]
    list_select_related = ["flow", "schedule"]
    search_fields = ["name", "recipients", "flow__slug", "flow__name", "agent_type", "schedule__name"]
    search_help_text = "Search by name, recipient, flow, agent or schedule."
    readonly_fields = ["next_send_display", "delivery_history", "created_by", "created_at", "updated_at"]
    empty_value_display = EMPTY

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        for name in ("flow", "schedule"):
            if name in form.base_fields:
                # The digest's team's; a new digest's, those of the teams the user may add one to.
                self.fit_team_picker(request, form.base_fields[name], obj)
        return form

    def get_readonly_fields(self, request, obj=None):
        # A digest stays in its team: it reports that team's runs.
        return [*self.readonly_fields, "team"] if obj is not None else self.readonly_fields

    def get_fieldsets(self, request, obj=None):
        # A new digest's team: a choice for who may add digests in several teams, else a hidden field
        # (TeamScopedAdmin.get_form). An existing one's: shown to who sees several teams.
        team = ["team"] if obj is None or sees_several_teams(request) else []
        fieldsets = [
            (None, {"fields": [*team, "name", "enabled", "recipients"]}),
            (
                "What to report",
                {
                    "fields": ["flow", "agent_type", "schedule"],
                    "description": "Pick exactly one source: the email reports the runs of a flow, of an agent, "
                    "or those a schedule started.",
                },
            ),
            (
                "When",
                {
                    "fields": ["period", "send_at", "weekday", "timezone"]
                    + (["next_send_display"] if obj is not None else []),
                    "description": "Hourly digests go out on the hour; daily and weekly ones at the time below. "
                    "“After each scheduled run” sends one email per run of the schedule chosen above.",
                },
            ),
            (
                "Ranking",
                {
                    "fields": ["items_path", "rank_by", "rank_order", "limit", "include_failures", "skip_empty"],
                    "description": "The email lists the best results of the period: each completed run's result "
                    "(or each entry of a list in it), sorted by a number in it.",
                },
            ),
        ]
        if obj is not None:
            fieldsets += [
                ("Delivery history", {"fields": ["delivery_history"]}),
                ("Record", {"fields": ["created_by", "created_at", "updated_at"], "classes": ["collapse"]}),
            ]
        return fieldsets

    def get_queryset(self, request):
        return selectors.with_latest_delivery(super().get_queryset(request))

    # -- list

    def changelist_view(self, request, extra_context=None):
        extra = {
            "needs_decision_count": needs_decision_count(request),
            "needs_decision_url": needs_decision_url(),
        }
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    @admin.display(description="source")
    def source_display(self, obj: DigestSubscription):
        return obj.source_label

    @admin.display(description="when", ordering="period")
    def period_display(self, obj: DigestSubscription):
        return selectors.digest_period_words(obj)

    @admin.display(description="recipients")
    def recipients_count(self, obj: DigestSubscription):
        addresses = obj.recipient_list
        return format_html('<span title="{}">{}</span>', ", ".join(addresses), len(addresses))

    @admin.display(description="last delivery")
    def last_delivery_display(self, obj: DigestSubscription):
        delivery = selectors.digest_latest_delivery(obj)
        if delivery is None:
            return "none yet"
        delivery.subscription = obj  # the period is shown in the digest's time zone, without another query
        at = delivery.sent_at or delivery.created_at
        context = {
            "badge": delivery_badge(delivery),
            "url": reverse("admin:digests_digestdelivery_change", args=[delivery.pk]),
            "at": in_zone(at, obj.timezone),
            "label": f"sent {relative(at)}" if delivery.sent_at else relative(at),
        }
        return render_to_string("admin/digests/includes/last_delivery.html", context)

    # -- change page

    @admin.display(description="next email")
    def next_send_display(self, obj: DigestSubscription):
        if not obj.enabled:
            return "Paused: nothing is sent until “enabled” is ticked again."
        if obj.period == DigestPeriod.AFTER_RUN:
            context = {"after_run_of": obj.schedule.name if obj.schedule_id else EMPTY}
        else:
            now = timezone.now()
            first, *then = services.digest_timing(obj).upcoming(now, UPCOMING_SENDS)
            start, _ = selectors.digest_period_so_far(obj, now=now)
            context = {
                "first": in_zone(first, obj.timezone),
                "first_in": relative(first, now=now),
                "then": ", ".join(in_zone(t, obj.timezone, with_zone=False) for t in then),
                "since": in_zone(start, obj.timezone),
            }
        return render_to_string("admin/digests/includes/next_send.html", context)

    @admin.display(description="deliveries")
    def delivery_history(self, obj: DigestSubscription):
        deliveries = list(selectors.digest_deliveries(subscription=obj)[:HISTORY_ROWS])
        if not deliveries:
            return "No email yet. The first goes out at the next send time (or with Send now)."
        now = timezone.now()
        rows = []
        for delivery in deliveries:
            delivery.subscription = obj  # shown in the digest's time zone, without a query per row
            rows.append(
                {
                    "period": nowrap(delivery_link(delivery, compact_period(delivery))),
                    "kind": delivery_kind(delivery),
                    "badge": delivery_badge(delivery, now=now),
                    "runs": len(delivery.run_ids),
                    "attempts": delivery.attempts,
                    "error": short_error(delivery.error),
                    "sent_at": nowrap(in_zone(delivery.sent_at, obj.timezone, with_zone=False)),
                }
            )
        context = {
            "rows": rows,
            "timezone": obj.timezone,
            "shown": HISTORY_ROWS,
            "all_url": reverse("admin:digests_digestdelivery_changelist") + f"?subscription__id__exact={obj.pk}",
            "head_style": HEAD_STYLE,
            "cell_style": CELL_STYLE,
        }
        return render_to_string("admin/digests/includes/delivery_history.html", context)

    # -- saving and deleting: through the services

    def service_create(self, request, fields: dict) -> DigestSubscription:
        return services.digest_create(created_by=request.user, **fields)

    def service_update(self, request, obj: DigestSubscription, fields: dict) -> None:
        services.digest_update(subscription=obj, **fields)

    def service_delete(self, request, obj: DigestSubscription) -> None:
        services.digest_delete(subscription=obj)

    # -- Preview and Send now

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            # Before the default URLs: their "<path:object_id>/" would match these too.
            path("<path:object_id>/preview/", self.admin_site.admin_view(self.preview_view), name=f"{prefix}_preview"),
            path("<path:object_id>/send/", self.admin_site.admin_view(self.send_view), name=f"{prefix}_send"),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["can_send"] = self.has_change_permission(request, obj)
            # A POST renders the page only when its form was refused, and `obj` then holds the refused values (a
            # time zone that does not exist...): the button sends what is saved, so ask about that.
            saved = (self.model.objects.filter(pk=obj.pk).first() if request.method == "POST" else None) or obj
            context["send_confirm"] = send_confirm_text(saved)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def preview_view(self, request, object_id):
        obj = self.team_object(request, object_id)  # another team's digest is a 404
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        preview = selectors.digest_preview(subscription=obj)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "title": f"Preview of “{obj}”",
            "subtitle": None,
            "preview": preview,
            "content": preview.content,
            "period_start": in_zone(preview.start, obj.timezone),
            "period_end": in_zone(preview.end, obj.timezone),
            "recipients": obj.recipient_list,
            "not_mailed": preview.content.empty and obj.skip_empty,
            "after_run": obj.period == DigestPeriod.AFTER_RUN,
            "schedule_name": obj.schedule.name if obj.schedule_id else EMPTY,
            "can_send": self.has_change_permission(request, obj),
            "send_confirm": send_confirm_text(obj, start=preview.start),
        }
        return TemplateResponse(request, "admin/digests/digestsubscription/preview.html", context)

    def send_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.team_object(request, object_id)  # another team's digest is a 404
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        delivery = services.digest_period_close(subscription_id=obj.pk, manual=True)
        change_url = reverse("admin:digests_digestsubscription_change", args=[obj.pk])
        if delivery is None:
            self.message_user(
                request, "Nothing was sent: another send of this digest got there first.", messages.WARNING
            )
            return HttpResponseRedirect(change_url)
        self.log_change(request, obj, f"Send now from the admin (delivery {delivery.pk}).")
        delivery.subscription = obj
        runs = len(delivery.run_ids)
        if delivery.status == DeliveryStatus.EMPTY:
            message = format_html(
                "Nothing to report since {}: the period is recorded ({}) but not mailed, because “skip empty "
                "periods” is ticked.",
                in_zone(delivery.period_start, obj.timezone),
                delivery_link(delivery, "see it"),
            )
            self.message_user(request, message, messages.INFO)
        else:
            message = format_html(
                "Sending the digest of {} ({} run{}) to {} recipient(s). It goes out within seconds while the "
                "workers run; {} shows how it went.",
                in_zone(delivery.period_start, obj.timezone) + " until now",
                runs,
                "" if runs == 1 else "s",
                len(obj.recipient_list),
                delivery_link(delivery, "its delivery page"),
            )
            self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(change_url)


def send_confirm_text(obj: DigestSubscription, *, start=None) -> str:
    """The question "Send now" asks: what it sends, to whom, and what it does to the next scheduled email."""
    if start is None:
        start, _ = selectors.digest_period_so_far(obj)
    recipients = len(obj.recipient_list)
    if obj.period == DigestPeriod.AFTER_RUN:
        return (
            f"Send the runs not mailed yet (finished since {in_zone(start, obj.timezone)}) in one email to "
            f"{recipients} recipient(s) now?\n\nRuns mailed this way do not get an email of their own later."
        )
    return (
        f"Send the digest of the runs since {in_zone(start, obj.timezone)} to {recipients} recipient(s) now?\n\n"
        "The next scheduled email will then only cover what happens after now."
    )
