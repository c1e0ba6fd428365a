"""Admin: runs (read-only, with cancel and re-run), agent types (concurrency policy) and the slots in use.

Every page is read-only except an agent type's policy; every change goes through `runs.services`.
Model data is always escaped (`format_html`), never marked safe.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import CharField, Count, Exists, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce, Concat
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from agentrunner.agents import InvalidAgentInput, UnknownAgentType, all_agents
from runs import selectors, services, slots
from runs.exceptions import AgentBusy, RunAlreadyFinished, RunError, RunNotFound
from runs.models import (
    RUN_FINISHED,
    AgentPolicy,
    AttemptStatus,
    OnBusyChoice,
    Run,
    RunStatus,
    Slot,
    Step,
    StepStatus,
)

EMPTY = "—"

# --- small HTML helpers (all output goes through format_html) ----------------------------------

GREY = "#6c757d"
BLUE = "#0d6efd"
GREEN = "#198754"
RED = "#dc3545"
DARK_GREY = "#343a40"
ORANGE = "#e8590c"
AMBER = "#ffc107"
CYAN = "#0dcaf0"
# Light backgrounds need dark text to stay readable.
DARK_TEXT_ON = {AMBER, CYAN}

RUN_COLOURS = {
    RunStatus.PENDING: GREY,
    RunStatus.RUNNING: BLUE,
    RunStatus.COMPLETED: GREEN,
    RunStatus.FAILED: RED,
    RunStatus.CANCELLED: DARK_GREY,
    RunStatus.BUDGET_EXCEEDED: ORANGE,
}
STEP_COLOURS = {
    StepStatus.QUEUED: GREY,
    StepStatus.WAITING: AMBER,
    StepStatus.RUNNING: BLUE,
    StepStatus.RETRYING: CYAN,
    StepStatus.SUCCESS: GREEN,
    StepStatus.FAILED: RED,
    StepStatus.CANCELLED: DARK_GREY,
}
ATTEMPT_COLOURS = {
    AttemptStatus.RUNNING: BLUE,
    AttemptStatus.SUCCESS: GREEN,
    AttemptStatus.FAILED: RED,
    AttemptStatus.CANCELLED: DARK_GREY,
}
WAITING_LABEL = "Waiting for slot"
STEP_NOT_STARTED = (StepStatus.QUEUED, StepStatus.WAITING, StepStatus.RETRYING)
# The short id the run list shows: the first 8 hex digits of the UUID.
SHORT_ID = re.compile(r"[0-9a-fA-F]{8}")
WAITS_HELP = "The agent allows only a few runs at once; this run starts when a slot frees."
TIMELINE_HELP = (
    "Every attempt at every step, on one time axis. A step is tried again after a temporary failure "
    "or when its worker was lost."
)
BUSY_SHORT = {OnBusyChoice.REJECT: "reject new runs", OnBusyChoice.QUEUE: "queue new runs"}
# Concurrency keys of agents are "agent:<agent type>" (runs.slots.agent_key).
AGENT_KEY_PREFIX = slots.agent_key("")

PRE_STYLE = (
    "background:#f6f8fa;color:#1f2328;border:1px solid #d0d7de;border-radius:4px;padding:8px 10px;"
    "margin:0;white-space:pre-wrap;word-break:break-word;max-height:480px;overflow:auto;"
    "font-size:12px;line-height:1.45;max-width:100%;"
)
CELL_STYLE = "padding:4px 8px;vertical-align:top;white-space:nowrap;"
# Width of the shared time axis in the run timeline.
TIMELINE_BAR_PX = 200
# A bar never gets thinner than this, so a 10 ms attempt stays visible.
TIMELINE_MIN_BAR_PERCENT = 1.0


def badge(label: str, colour: str) -> SafeString:
    text = "#212529" if colour in DARK_TEXT_ON else "#fff"
    return format_html(
        '<span style="display:inline-block;padding:2px 9px;border-radius:10px;font-size:11px;'
        'font-weight:600;line-height:1.5;white-space:nowrap;background:{};color:{}">{}</span>',
        colour,
        text,
        label,
    )


def _label(choices, value: str) -> str:
    try:
        return choices(value).label
    except ValueError:
        return value


def attempt_badge(status: str) -> SafeString:
    return badge(_label(AttemptStatus, status), ATTEMPT_COLOURS.get(status, GREY))


def run_badge(run: Run) -> SafeString:
    if getattr(run, "is_waiting", False) and not run.is_finished:
        return badge(WAITING_LABEL, AMBER)
    return badge(_label(RunStatus, run.status), RUN_COLOURS.get(run.status, GREY))


def human_duration(delta: timedelta | None) -> str:
    """`1.2 s`, `3 min 4 s`, `2 h 5 min`; an em dash when there is no duration."""
    if delta is None:
        return EMPTY
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def when(value: datetime | None) -> str:
    if value is None:
        return EMPTY
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def pretty_json(value) -> SafeString | str:
    if value is None:
        return EMPTY
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, json.dumps(value, indent=2, ensure_ascii=False))


def pre_text(value: str) -> SafeString | str:
    if not value:
        return EMPTY
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, value)


def clock(value: datetime | None) -> SafeString | str:
    """The time of day, with the full date and time as a tooltip."""
    if value is None:
        return EMPTY
    local = timezone.localtime(value)
    return format_html('<span title="{}">{}</span>', when(value), local.strftime("%H:%M:%S"))


def _step_waits_for(step: Step) -> SafeString | str:
    if step.status == StepStatus.WAITING:
        return "waits for a free slot"
    if step.status == StepStatus.RETRYING:
        if step.next_attempt_at:
            return format_html("tries again at {}", clock(step.next_attempt_at))
        return "tries again soon"
    return "waits for a worker"


def nowrap(value) -> SafeString:
    return format_html('<span style="white-space:nowrap">{}</span>', value)


def _timeline_row(cells: tuple, error_code: str, error: str) -> SafeString:
    """One attempt: a row of cells and, if it failed, a second row with its error across the table."""
    row = format_html_join("", '<td style="{}">{}</td>', ((CELL_STYLE, cell) for cell in cells))
    if not (error_code or error):
        return format_html("<tbody><tr>{}</tr></tbody>", row)
    return format_html(
        '<tbody><tr>{}</tr><tr><td colspan="{}" style="padding:0 8px 6px 8px;border-top:0">'
        '<div style="white-space:pre-wrap;color:#a41515">{}{}</div></td></tr></tbody>',
        row,
        len(cells),
        format_html("<code>{}</code>: ", error_code) if error_code else "",
        error,
    )


def run_link(run_id, label: str | None = None) -> SafeString:
    url = reverse("admin:runs_run_change", args=[run_id])
    return format_html(
        '<a href="{}" title="{}" style="font-family:monospace">{}</a>', url, run_id, label or str(run_id)[:8]
    )


# --- Runs ---------------------------------------------------------------------------------------


class RunStatusFilter(admin.SimpleListFilter):
    """The run statuses, plus "Waiting for slot" (a run whose step waits for a concurrency slot)."""

    title = "status"
    parameter_name = "status"
    WAITING = "WAITING"

    def lookups(self, request, model_admin):
        pending_and_waiting = [
            (RunStatus.PENDING.value, RunStatus.PENDING.label),
            (self.WAITING, WAITING_LABEL),
        ]
        return pending_and_waiting + [(s.value, s.label) for s in RunStatus if s != RunStatus.PENDING]

    def queryset(self, request, queryset):
        value = self.value()
        if value == self.WAITING:
            return queryset.filter(is_waiting=True).exclude(status__in=RUN_FINISHED)
        if value:
            return queryset.filter(status=value)
        return queryset


class RunChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # The list never shows the JSON bodies, which can be large (extracted documents).
        return super().get_queryset(request, exclude_parameters).defer("input", "result", "error")


class CreatedFilter(admin.DateFieldListFilter):
    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "created"


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "agent_type",
        "status_badge",
        "user_id_display",
        "created_by",
        "created",
        "duration_display",
    ]
    list_display_links = ["short_id"]
    list_filter = [RunStatusFilter, "agent_type", ("created_at", CreatedFilter)]
    list_select_related = ["created_by"]
    ordering = ["-created_at"]
    search_fields = ["agent_type"]  # the real search is get_search_results
    search_help_text = "Search by run id (full, or the 8-character short id), user id, or agent name."
    empty_value_display = EMPTY
    actions = ["cancel_runs", "rerun_runs"]

    summary_fields = [
        "status_badge",
        "agent_type",
        "run_id",
        "user_id",
        "created_by",
        "created",
        "started",
        "finished",
        "duration_display",
    ]
    readonly_fields = [
        *summary_fields,
        "error_code_display",
        "cancel_requested",
        "rerun_of_link",
        "reruns_links",
        "why_it_waits",
        "input_pretty",
        "result_pretty",
        "error_pretty",
        "timeline",
    ]

    # -- permissions: nothing is edited in a form; "change" permission allows cancel and re-run

    def has_add_permission(self, request):
        return False  # runs are started through the API or by re-running one

    def has_change_permission(self, request, obj=None):
        # Runs are never edited; the change page is a read-only view (the "view" or "change"
        # permission opens it) and the "change" permission lets a user cancel and re-run.
        return False

    def has_operate_permission(self, request) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    def has_delete_permission(self, request, obj=None):
        if obj is not None and not obj.is_finished:
            return False  # a worker may still be writing to it: cancel it first
        return super().has_delete_permission(request, obj)

    def delete_queryset(self, request, queryset):
        unfinished = queryset.exclude(status__in=RUN_FINISHED).count()
        if unfinished:
            self.message_user(
                request,
                f"{unfinished} run(s) not deleted because they have not finished; cancel them first.",
                messages.WARNING,
            )
        queryset.filter(status__in=RUN_FINISHED).delete()

    # -- list

    def get_changelist(self, request, **kwargs):
        return RunChangeList

    def get_queryset(self, request):
        waiting = Step.objects.filter(run=OuterRef("pk"), status=StepStatus.WAITING)
        return super().get_queryset(request).annotate(is_waiting=Exists(waiting))

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            value = uuid.UUID(term)
        except ValueError:
            value = None
        if value is not None:
            return queryset.filter(Q(pk=value) | Q(user_id=value)), False
        condition = Q(agent_type__icontains=term)
        if SHORT_ID.fullmatch(term):
            condition |= Q(id__startswith=term.lower())
        return queryset.filter(condition), False

    @admin.display(description="run", ordering="created_at")
    def short_id(self, obj: Run):
        short = str(obj.pk)[:8]
        return format_html('<span title="{}" style="font-family:monospace">{}</span>', obj.pk, short)

    @admin.display(description="run id")
    def run_id(self, obj: Run):
        return format_html("<code>{}</code>", obj.pk)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Run):
        return run_badge(obj)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Run):
        return nowrap(when(obj.created_at))

    @admin.display(description="started")
    def started(self, obj: Run):
        return when(obj.started_at)

    @admin.display(description="finished")
    def finished(self, obj: Run):
        return when(obj.finished_at)

    @admin.display(description="duration")
    def duration_display(self, obj: Run):
        return nowrap(human_duration(obj.duration))

    @admin.display(description="user id", ordering="user_id")
    def user_id_display(self, obj: Run):
        if not obj.user_id:
            return EMPTY
        # Short, like the run id; a click lists this user's runs (search by the full id).
        return format_html(
            '<a href="?q={}" title="{} (click for all runs of this user)"><code>{}…</code></a>',
            obj.user_id,
            obj.user_id,
            str(obj.user_id)[:8],
        )

    # -- change page

    def get_fieldsets(self, request, obj=None):
        summary = list(self.summary_fields)
        if obj is not None:
            # Rows that are mostly empty appear only when they say something.
            if obj.error_code:
                summary.append("error_code_display")
            if obj.cancel_requested_at:
                summary.append("cancel_requested")
            if obj.rerun_of_id:
                summary.append("rerun_of_link")
            if obj.reruns.exists():
                summary.append("reruns_links")
        fieldsets = [("Summary", {"fields": summary})]
        if obj is not None and getattr(obj, "is_waiting", False):
            fieldsets.append(
                (
                    "Why it waits",
                    {
                        "fields": ["why_it_waits"],
                        "description": WAITS_HELP,
                    },
                )
            )
        fieldsets.append(("Input", {"fields": ["input_pretty"]}))
        fieldsets.append(("Result", {"fields": ["result_pretty"]}))
        if obj is not None and (obj.error or obj.error_code):
            fieldsets.append(("Error", {"fields": ["error_pretty"]}))
        fieldsets.append(
            (
                "Timeline",
                {
                    "fields": ["timeline"],
                    "description": TIMELINE_HELP,
                },
            )
        )
        return fieldsets

    @admin.display(description="error code")
    def error_code_display(self, obj: Run):
        return format_html("<code>{}</code>", obj.error_code) if obj.error_code else EMPTY

    @admin.display(description="cancel requested")
    def cancel_requested(self, obj: Run):
        return when(obj.cancel_requested_at)

    @admin.display(description="re-run of")
    def rerun_of_link(self, obj: Run):
        return run_link(obj.rerun_of_id) if obj.rerun_of_id else EMPTY

    @admin.display(description="re-runs of this run")
    def reruns_links(self, obj: Run):
        ids = list(obj.reruns.order_by("created_at").values_list("pk", flat=True))
        if not ids:
            return EMPTY
        return format_html_join(", ", "{}", ((run_link(pk),) for pk in ids))

    @admin.display(description="waiting for")
    def why_it_waits(self, obj: Run):
        blocked = selectors.run_blocked_by(run=obj)
        if blocked is None:
            return "This run is not waiting for a slot."
        holders = Run.objects.filter(pk__in=blocked["runs"]).only("pk", "agent_type", "status")
        holder_items = format_html_join(
            "",
            "<li>{} {} {}</li>",
            ((run_link(r.pk), r.agent_type, run_badge(r)) for r in holders),
        )
        limit = blocked["limit"] if blocked["limit"] is not None else "?"
        return format_html(
            "<div>Concurrency group: <code>{}</code></div>"
            "<div>Slots in use: <strong>{}</strong> of <strong>{}</strong></div>"
            "<div>Place in the queue: <strong>{}</strong> (1 = next to start)</div>"
            "<div>Slots held by:</div><ul style='margin:4px 0 0 0'>{}</ul>",
            blocked["concurrency_key"],
            blocked["slots_used"],
            limit,
            blocked["position"],
            holder_items or format_html("<li>{}</li>", "no run (a slot should free up shortly)"),
        )

    @admin.display(description="input sent to the agent")
    def input_pretty(self, obj: Run):
        return pretty_json(obj.input)

    @admin.display(description="result returned by the agent")
    def result_pretty(self, obj: Run):
        if obj.result is None:
            return "No result yet." if not obj.is_finished else "No result."
        return pretty_json(obj.result)

    @admin.display(description="error message")
    def error_pretty(self, obj: Run):
        return pre_text(obj.error)

    @admin.display(description="attempts")
    def timeline(self, obj: Run):
        steps = list(selectors.run_steps(run=obj))
        attempts = [a for step in steps for a in step.attempt_set.all()]
        now = timezone.now()
        t0 = min((a.started_at for a in attempts), default=None)
        t1 = max((a.finished_at or now for a in attempts), default=None)
        span = max((t1 - t0).total_seconds(), 0.001) if t0 else 1.0

        def bar(attempt) -> SafeString:
            start = (attempt.started_at - t0).total_seconds() / span * 100
            end = ((attempt.finished_at or now) - t0).total_seconds() / span * 100
            width = max(end - start, TIMELINE_MIN_BAR_PERCENT)
            return format_html(
                '<div style="position:relative;height:14px;width:{}px;background:#e9ecef;border-radius:3px">'
                '<div title="{}" style="position:absolute;top:0;bottom:0;left:{}%;width:{}%;background:{};'
                'border-radius:3px"></div></div>',
                TIMELINE_BAR_PX,
                f"{when(attempt.started_at)} → {when(attempt.finished_at)}",
                f"{min(start, 100 - width):.2f}",
                f"{width:.2f}",
                ATTEMPT_COLOURS.get(attempt.status, GREY),
            )

        rows = []
        for step in steps:
            step_attempts = list(step.attempt_set.all())
            for attempt in step_attempts:
                cells = (
                    step.name,
                    f"{attempt.number} of {step.max_attempts}",
                    attempt_badge(attempt.status),
                    bar(attempt),
                    clock(attempt.started_at),
                    clock(attempt.finished_at) if attempt.finished_at else "still running",
                    human_duration(attempt.duration),
                    attempt.worker_id or EMPTY,
                )
                rows.append(_timeline_row(cells, attempt.error_code, attempt.error))
            if step.status in STEP_NOT_STARTED:
                # The step has not started (again) yet: say what it waits for.
                cells = (
                    step.name,
                    "next" if step_attempts else "not started",
                    badge(_label(StepStatus, step.status), STEP_COLOURS.get(step.status, GREY)),
                    _step_waits_for(step),
                    EMPTY,
                    EMPTY,
                    EMPTY,
                    EMPTY,
                )
                rows.append(_timeline_row(cells, "", ""))
        if not rows:
            return "No steps yet."
        axis = f"When (0 → {human_duration(t1 - t0)})" if t0 else "When"
        headers = ["Step", "Attempt", "Status", axis, "Started", "Finished", "Duration", "Worker"]
        head = format_html_join("", '<th style="{}">{}</th>', ((CELL_STYLE, h) for h in headers))
        return format_html(
            '<div style="overflow-x:auto"><table style="border-collapse:collapse">'
            "<thead><tr>{}</tr></thead>{}</table></div>",
            head,
            format_html_join("", "{}", ((row,) for row in rows)),
        )

    # -- actions (list) and buttons (change page), both through the services

    @admin.action(description="Cancel selected runs", permissions=["operate"])
    def cancel_runs(self, request, queryset):
        counts = {"cancelled": 0, "stopping": 0, "finished": 0}
        for run in queryset:
            counts[self._cancel(request, run)] += 1
        parts = []
        if counts["cancelled"]:
            parts.append(f"{counts['cancelled']} run(s) cancelled")
        if counts["stopping"]:
            parts.append(f"{counts['stopping']} running run(s) asked to stop (they stop within seconds)")
        if counts["finished"]:
            parts.append(f"{counts['finished']} skipped because they had already finished")
        level = messages.SUCCESS if counts["cancelled"] or counts["stopping"] else messages.WARNING
        self.message_user(request, "; ".join(parts) + ".", level)

    @admin.action(description="Re-run selected runs", permissions=["operate"])
    def rerun_runs(self, request, queryset):
        started = []
        for run in queryset:
            new_run = self._rerun(request, run)
            if new_run is not None:
                started.append(new_run)
        if started:
            links = format_html_join(", ", "{}", ((run_link(r.pk),) for r in started))
            message = format_html("Started {} new run(s): {}", len(started), links)
            self.message_user(request, message, messages.SUCCESS)

    def _cancel(self, request, run: Run) -> str:
        """Cancel one run through the service; return "cancelled", "stopping" or "finished"."""
        if run.is_finished:
            return "finished"
        try:
            run = services.run_cancel(run_id=run.pk)
        except (RunAlreadyFinished, RunNotFound):
            return "finished"
        self.log_change(request, run, "Cancelled from the admin.")
        return "cancelled" if run.is_finished else "stopping"

    def _rerun(self, request, run: Run) -> Run | None:
        """Start a re-run through the service; on a refusal, tell the user why and return None."""
        short = str(run.pk)[:8]
        try:
            new_run = services.run_rerun(run=run, created_by=request.user)
        except AgentBusy as exc:
            self.message_user(request, f"Run {short} was not re-run: {exc}", messages.ERROR)
        except UnknownAgentType:
            self.message_user(
                request,
                f"Run {short} was not re-run: the agent {run.agent_type!r} is no longer installed.",
                messages.ERROR,
            )
        except InvalidAgentInput as exc:
            self.message_user(
                request,
                f"Run {short} was not re-run: its input no longer matches the agent's input schema ({exc}).",
                messages.ERROR,
            )
        except RunError as exc:
            self.message_user(request, f"Run {short} was not re-run: {exc}", messages.ERROR)
        else:
            self.log_change(request, run, f"Re-run from the admin as {new_run.pk}.")
            return new_run
        return None

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            # Before the default URLs: their "<path:object_id>/" would match these too.
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name=f"{prefix}_cancel",
            ),
            path(
                "<path:object_id>/rerun/",
                self.admin_site.admin_view(self.rerun_view),
                name=f"{prefix}_rerun",
            ),
            *super().get_urls(),
        ]

    def _button_run(self, request, object_id) -> Run | HttpResponseRedirect | HttpResponseNotAllowed:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_operate_permission(request):
            raise PermissionDenied
        run = self.get_object(request, object_id)
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return run

    def cancel_view(self, request, object_id):
        run = self._button_run(request, object_id)
        if not isinstance(run, Run):
            return run
        outcome = self._cancel(request, run)
        if outcome == "cancelled":
            self.message_user(request, "The run was cancelled.", messages.SUCCESS)
        elif outcome == "stopping":
            self.message_user(request, "The run was asked to stop; it stops within seconds.")
        else:
            self.message_user(request, "The run had already finished; nothing to cancel.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:runs_run_change", args=[run.pk]))

    def rerun_view(self, request, object_id):
        run = self._button_run(request, object_id)
        if not isinstance(run, Run):
            return run
        new_run = self._rerun(request, run)
        if new_run is not None:
            message = format_html("Started a new run: {}", run_link(new_run.pk))
            self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:runs_run_change", args=[run.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_operate": self.has_operate_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)


# --- Agent types --------------------------------------------------------------------------------


class AgentPolicyForm(forms.ModelForm):
    concurrency_limit = forms.IntegerField(
        label="At most this many at once",
        min_value=1,
        required=False,
        help_text="How many runs of this agent may run at the same time. Leave empty for no limit.",
    )

    class Meta:
        model = AgentPolicy
        fields = ["override", "concurrency_limit", "on_busy"]
        help_texts = {
            "override": "Tick to use the limit and busy behaviour below instead of the agent's built-in "
            "default. Untick to go back to the default (the values below are then ignored).",
            "on_busy": "What happens to a new run when every slot is taken.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        agent = all_agents().get(self.instance.agent_type)
        if agent is not None and not self.instance.override:
            # Start from the agent's built-in policy, so ticking "override" changes only what the
            # operator then edits (rows created from the registry hold placeholder values).
            self.initial["concurrency_limit"] = agent.concurrency.limit
            self.initial["on_busy"] = str(agent.concurrency.on_busy)

    def clean(self):
        data = super().clean()
        if self.instance.agent_type not in all_agents():
            raise forms.ValidationError("This agent is no longer installed, so its policy cannot be changed.")
        return data


@admin.register(AgentPolicy)
class AgentPolicyAdmin(admin.ModelAdmin):
    form = AgentPolicyForm
    list_display_links = ["agent_type_display"]
    list_display = [
        "agent_type_display",
        "description",
        "effective_limit",
        "when_busy",
        "overridden",
        "running_now",
        "waiting",
    ]
    empty_value_display = EMPTY
    fieldsets = [
        (
            "About this agent",
            {"fields": ["agent_type", "description", "default_policy", "max_attempts", "effective_policy"]},
        ),
        (
            "Concurrency policy",
            {
                "fields": ["override", "concurrency_limit", "on_busy"],
                "description": "Saving applies at once: if the limit goes up (or is removed), runs that are "
                "waiting for a slot start now.",
            },
        ),
        ("Input the agent accepts (JSON Schema)", {"fields": ["input_schema"]}),
    ]
    readonly_fields = [
        "agent_type",
        "description",
        "default_policy",
        "max_attempts",
        "effective_policy",
        "input_schema",
    ]

    def has_add_permission(self, request):
        return False  # one row per registered agent, created from the registry

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        services.agent_policies_sync()
        return super().changelist_view(request, extra_context)

    def get_queryset(self, request):
        key = Concat(Value(AGENT_KEY_PREFIX), OuterRef("agent_type"), output_field=CharField())
        running = (
            Slot.objects.filter(key_id=key)
            .exclude(holder="")
            .order_by()
            .values("key_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        waiting = (
            Step.objects.filter(concurrency_key=key, status=StepStatus.WAITING)
            .order_by()
            .values("concurrency_key")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                running_count=Coalesce(Subquery(running, output_field=IntegerField()), 0),
                waiting_count=Coalesce(Subquery(waiting, output_field=IntegerField()), 0),
            )
        )

    def save_model(self, request, obj, form, change):
        # Through the service, which also releases waiting runs when the limit rises.
        data = form.cleaned_data
        services.agent_policy_update(
            agent_type=obj.agent_type,
            limit=data.get("concurrency_limit"),
            on_busy=data.get("on_busy") or OnBusyChoice.REJECT,
            override=bool(data.get("override")),
        )
        obj.refresh_from_db()

    @staticmethod
    def _agent(obj: AgentPolicy):
        return all_agents().get(obj.agent_type)

    def _policy(self, obj: AgentPolicy):
        if obj.override:
            return obj.concurrency_limit, obj.on_busy
        agent = self._agent(obj)
        if agent is None:
            return None
        return agent.concurrency.limit, str(agent.concurrency.on_busy)

    @admin.display(description="agent type", ordering="agent_type")
    def agent_type_display(self, obj: AgentPolicy):
        return nowrap(obj.agent_type)

    @admin.display(description="description")
    def description(self, obj: AgentPolicy):
        agent = self._agent(obj)
        if agent is None:
            return "— (this agent is no longer installed)"
        return agent.description or EMPTY

    @admin.display(description="limit in effect")
    def effective_limit(self, obj: AgentPolicy):
        policy = self._policy(obj)
        if policy is None:
            return EMPTY
        return f"{policy[0]} at once" if policy[0] else "unlimited"

    @admin.display(description="when all slots are taken")
    def when_busy(self, obj: AgentPolicy):
        policy = self._policy(obj)
        if policy is None or not policy[0]:
            return EMPTY  # no limit: never busy
        return BUSY_SHORT.get(policy[1], policy[1])

    @admin.display(description="overridden?", boolean=True, ordering="override")
    def overridden(self, obj: AgentPolicy):
        return obj.override

    @admin.display(description="running now", ordering="running_count")
    def running_now(self, obj: AgentPolicy):
        return obj.running_count

    @admin.display(description="waiting for a slot", ordering="waiting_count")
    def waiting(self, obj: AgentPolicy):
        return obj.waiting_count

    @admin.display(description="built-in default")
    def default_policy(self, obj: AgentPolicy):
        agent = self._agent(obj)
        if agent is None:
            return EMPTY
        return _policy_text(agent.concurrency.limit, str(agent.concurrency.on_busy))

    @admin.display(description="in effect now")
    def effective_policy(self, obj: AgentPolicy):
        policy = self._policy(obj)
        if policy is None:
            return EMPTY
        source = "your override" if obj.override else "the built-in default"
        return f"{_policy_text(*policy)} (from {source})"

    @admin.display(description="attempts per step")
    def max_attempts(self, obj: AgentPolicy):
        agent = self._agent(obj)
        return agent.max_attempts if agent else EMPTY

    @admin.display(description="input schema")
    def input_schema(self, obj: AgentPolicy):
        agent = self._agent(obj)
        return pretty_json(agent.input_schema) if agent else EMPTY


def _policy_text(limit: int | None, on_busy: str) -> str:
    if not limit:
        return "no limit"
    then = "new runs are rejected" if on_busy == OnBusyChoice.REJECT else "new runs wait in a queue"
    return f"at most {limit} at once; when all are busy, {then}"


# --- Concurrency slots (read-only, for operators) -----------------------------------------------


@admin.register(Slot)
class SlotAdmin(admin.ModelAdmin):
    list_display = [
        "key_name",
        "slot_number",
        "run_display",
        "holder_display",
        "acquired",
        "heartbeat",
        "expires",
    ]
    list_select_related = ["run"]
    list_filter = ["key"]
    ordering = ["key", "number"]
    empty_value_display = EMPTY

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # slots are freed by the engine; deleting one by hand could let too many runs start

    @admin.display(description="concurrency group", ordering="key")
    def key_name(self, obj: Slot):
        return obj.key_id

    @admin.display(description="slot no.", ordering="number")
    def slot_number(self, obj: Slot):
        return obj.number

    @admin.display(description="run")
    def run_display(self, obj: Slot):
        return nowrap(format_html("{} {} {}", run_link(obj.run_id), obj.run.agent_type, run_badge(obj.run)))

    @admin.display(description="taken", ordering="acquired_at")
    def acquired(self, obj: Slot):
        return nowrap(when(obj.acquired_at))

    @admin.display(description="last heartbeat", ordering="heartbeat_at")
    def heartbeat(self, obj: Slot):
        return nowrap(when(obj.heartbeat_at))

    @admin.display(description="held by worker")
    def holder_display(self, obj: Slot):
        return obj.holder or "reserved (no worker has started it yet)"

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: Slot):
        expired = obj.expires_at <= timezone.now()
        return nowrap(format_html("{}{}", when(obj.expires_at), " (expired)" if expired else ""))
