"""The schedule admin: list, change page with fire times, last run and recent slots; saving through the services."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from agentrunner.adminkit import (
    CELL_STYLE,
    EMPTY,
    GREEN,
    GREY,
    RED,
    ServiceSaveMixin,
    TeamScopedAdmin,
    badge,
    nowrap,
    sees_several_teams,
)
from runs.admin.display import run_badge, run_link
from schedules import selectors, services
from schedules.admin.display import OVERLAP_SHORT, fire_badge, local_time, timing_display
from schedules.admin.forms import FORM_FIELDS, ScheduleForm
from schedules.exceptions import ScheduleInvalid
from schedules.models import Schedule

WHAT_HELP = "Start either a flow or an agent (leave the other empty). Every run starts with the input below."
WHEN_HELP = (
    "Repeat by a fixed interval, in seconds and aligned to the clock (600 = every 10 minutes, at :00, :10, :20, …), "
    "or by a cron expression read in the time zone: minute, hour, day of the month, month, day of the week "
    "(0 7 * * 1-5 = Monday to Friday at 07:00). Only the field of the chosen kind is used."
)
STATUS_HELP = (
    "Worked out from the timing set under “When” below. Times are in your time zone; "
    "point at one to see it in the schedule's own."
)
SLOTS_HELP = (
    "The last 20 fire times and what each became: a run, or why none started (the previous run was still "
    "active, the workers were down, or the run could not start)."
)


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("paused", "Paused")]

    def queryset(self, request, queryset):
        if self.value() in ("active", "paused"):
            return queryset.filter(enabled=self.value() == "active")
        return queryset


def titled(title: str, base=admin.ChoicesFieldListFilter):
    """A field's list filter under a title people read ("after downtime", not the field's name)."""

    class Titled(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.title = title

    return Titled


@admin.register(Schedule)
class ScheduleAdmin(ServiceSaveMixin, TeamScopedAdmin, admin.ModelAdmin):
    """A team's schedules: its viewers read them, its editors and admins write, pause and resume them."""

    form = ScheduleForm
    service_fields = (*FORM_FIELDS, "team")  # the team only when adding: a schedule stays in its team
    service_error = ScheduleInvalid
    list_display = [
        "name",
        "target",
        "timing",
        "enabled_badge",
        "overlap_display",
        "next_fire",
        "last_run",
    ]
    list_filter = [
        StateFilter,
        ("kind", titled("timing")),
        ("overlap", titled("overlap (the previous run is still active)")),
        ("catch_up", titled("catch-up after downtime")),
        # Only the flows the user's schedules start: not every flow of every team.
        ("flow", titled("flow", admin.RelatedOnlyFieldListFilter)),
    ]
    radio_fields = {"kind": admin.HORIZONTAL, "overlap": admin.VERTICAL, "catch_up": admin.VERTICAL}
    list_select_related = ["flow", "q_schedule"]
    search_fields = ["name", "agent_type", "flow__slug", "flow__name"]
    search_help_text = "Search by schedule name, agent or flow."
    ordering = ["name"]
    empty_value_display = EMPTY
    actions = ["pause_schedules", "resume_schedules"]
    readonly_fields = ["next_fire_times", "last_run_display", "created_by", "created_at", "updated_at", "recent_slots"]

    def get_queryset(self, request):
        # The user's teams' schedules (TeamScopedAdmin), with the newest run of each in one more query (a sliced
        # prefetch), not one per row.
        return selectors.with_last_run(super().get_queryset(request))

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        field = form.base_fields.get("flow")
        if field is not None:
            # The schedule's team's flows; a new schedule's, those of the teams the user may add one to.
            self.fit_team_picker(request, field, obj)
            # Deleting or creating a flow from a schedule's page is one click from a mistake; the flow page does
            # that.
            field.widget.can_delete_related = field.widget.can_add_related = False
        return form

    def get_readonly_fields(self, request, obj=None):
        # A schedule stays in its team: its runs and slots are that team's.
        return [*self.readonly_fields, "team"] if obj is not None else self.readonly_fields

    def get_fieldsets(self, request, obj=None):
        # A new schedule's team: a choice for who may add schedules in several teams, else a hidden field
        # (TeamScopedAdmin.get_form). An existing one's: shown to who sees several teams.
        team = ["team"] if obj is None or sees_several_teams(request) else []
        editing = [
            ("What to start", {"fields": [*team, "name", "flow", "agent_type", "input"], "description": WHAT_HELP}),
            ("When", {"fields": ["kind", "interval_seconds", "cron", "timezone"], "description": WHEN_HELP}),
            ("Rules", {"fields": ["enabled", "overlap", "catch_up"]}),
        ]
        if obj is None:
            return editing
        status = (
            "Status",
            {
                "fields": ["next_fire_times", "last_run_display", "created_by", "created_at", "updated_at"],
                "description": STATUS_HELP,
            },
        )
        return [status, *editing, ("Recent slots", {"fields": ["recent_slots"], "description": SLOTS_HELP})]

    # -- list

    @admin.display(description="starts", ordering="flow__slug")
    def target(self, obj: Schedule):
        if obj.flow_id:
            url = reverse("admin:flows_flow_change", args=[obj.flow_id])
            return nowrap(format_html('flow <a href="{}">{}</a>', url, obj.flow.slug))
        return nowrap(format_html("agent <code>{}</code>", obj.agent_type))

    @admin.display(description="when", ordering="kind")
    def timing(self, obj: Schedule):
        return timing_display(obj)

    @admin.display(description="state", ordering="enabled")
    def enabled_badge(self, obj: Schedule):
        return badge("Active", GREEN) if obj.enabled else badge("Paused", GREY)

    @admin.display(description="if still running", ordering="overlap")
    def overlap_display(self, obj: Schedule):
        return OVERLAP_SHORT.get(obj.overlap, obj.overlap)

    @admin.display(description="next fire time")
    def next_fire(self, obj: Schedule):
        if not obj.enabled:
            return "paused"
        upcoming = selectors.schedule_next_fire_times(obj, 1)
        overdue = self._overdue(obj)
        return nowrap(
            format_html(
                "{}{}",
                local_time(upcoming[0], obj) if upcoming else EMPTY,
                format_html(" {}", badge("overdue", RED)) if overdue else "",
            )
        )

    @admin.display(description="last run")
    def last_run(self, obj: Schedule):
        run = selectors.schedule_last_run(obj)
        if run is None:
            return "never ran"
        return format_html("{} {}", run_link(run.pk), run_badge(run))

    def _overdue(self, obj: Schedule) -> datetime | None:
        """When django-q2's row was due, if that is well past (the workers are not firing it), else None."""
        due = obj.q_schedule.next_run if obj.q_schedule_id and obj.q_schedule else None
        grace = timedelta(seconds=settings.SCHEDULE_MISFIRE_GRACE_SECONDS)
        return due if due is not None and due < timezone.now() - grace else None

    # -- change page

    @admin.display(description="next 5 fire times")
    def next_fire_times(self, obj: Schedule):
        if not obj.enabled:
            return "Paused: nothing fires until it is resumed (missed times are not caught up)."
        times = selectors.schedule_next_fire_times(obj)
        if not times:
            return EMPTY
        context = {
            "times": [local_time(t, obj) for t in times],
            "no_worker_row": obj.q_schedule_id is None,
            "overdue_since": local_time(due, obj) if (due := self._overdue(obj)) else None,
            "red": RED,
        }
        return render_to_string("admin/schedules/includes/next_fire_times.html", context)

    @admin.display(description="last run")
    def last_run_display(self, obj: Schedule):
        run = selectors.schedule_last_run(obj)
        if run is None:
            return "It has not started a run yet."
        context = {
            "link": run_link(run.pk),
            "badge": run_badge(run),
            "fire_time": local_time(run.scheduled_for, obj) if run.scheduled_for else EMPTY,
            "finished": local_time(run.finished_at, obj) if run.finished_at else None,
        }
        return render_to_string("admin/schedules/includes/last_run.html", context)

    @admin.display(description="recent slots")
    def recent_slots(self, obj: Schedule):
        fires = list(selectors.schedule_fire_list(schedule=obj)[: selectors.RECENT_FIRES])
        if not fires:
            return "No fire time reached yet."
        rows = [
            {
                "fire_time": local_time(fire.intended_at, obj),
                "badge": fire_badge(fire.status),
                "run_link": run_link(fire.run_id) if fire.run_id else None,
                "run_badge": run_badge(fire.run) if fire.run_id else None,
                "detail": fire.detail,
            }
            for fire in fires
        ]
        return render_to_string("admin/schedules/includes/recent_slots.html", {"rows": rows, "cell_style": CELL_STYLE})

    # -- saving, deleting, pausing: through the services (they keep django-q2's row in step)

    def service_create(self, request, fields: dict) -> Schedule:
        return services.schedule_create(created_by=request.user, **fields)  # `team` among the fields

    def service_update(self, request, obj: Schedule, fields: dict) -> None:
        services.schedule_update(schedule=obj, **fields)

    def service_delete(self, request, obj: Schedule) -> None:
        services.schedule_delete(schedule=obj)

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause_schedules(self, request, queryset):
        self._switch(request, queryset, enabled=False)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume_schedules(self, request, queryset):
        self._switch(request, queryset, enabled=True)

    def _switch(self, request, queryset, *, enabled: bool):
        # Django checks the action's permission without an object: the user may be an editor of one team and
        # a viewer of another, whose schedules the list also shows.
        writable = self.writable(request, queryset)
        read_only = sorted(queryset.exclude(pk__in=writable.values("pk")).values_list("name", flat=True))
        done, failed = [], []
        for schedule in writable:
            if schedule.enabled == enabled:
                continue
            try:
                services.schedule_update(schedule=schedule, enabled=enabled)
            except ScheduleInvalid as exc:
                failed.append(f"{schedule.name} ({exc})")
                continue
            self.log_change(request, schedule, "Resumed." if enabled else "Paused.")
            done.append(schedule.name)
        verb = "Resumed" if enabled else "Paused"
        if done:
            self.message_user(request, f"{verb} {len(done)} schedule(s): {', '.join(done)}.", messages.SUCCESS)
        elif not failed and not read_only:
            self.message_user(request, f"Nothing to do: they were all {verb.lower()} already.", messages.INFO)
        if read_only:
            self.message_user(
                request,
                f"Not {verb.lower()} (you may only read them in their team): {', '.join(read_only)}.",
                messages.ERROR,
            )
        if failed:
            self.message_user(request, f"Not {verb.lower()}: {'; '.join(failed)}", messages.ERROR)
