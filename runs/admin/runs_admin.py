"""Admin for runs: list, read-only run page with timeline, cancel and re-run."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_GET

from agentrunner.adminkit import (
    EMPTY,
    GREY,
    SHORT_ID,
    TeamScopedAdmin,
    badge,
    choice_label,
    human_duration,
    id_search,
    nowrap,
    pre_text,
    sees_several_teams,
    team_ids_for,
    when,
)
from agentrunner.agents import InvalidAgentInput, UnknownAgentType
from agentrunner.errors import ServiceError
from agentrunner.logging import current_request_id
from agentrunner.models import Role
from agentrunner.ratelimit import refusal_message, run_start_acquire
from runs import selectors, services
from runs.admin import dead_letters
from runs.admin.display import (
    FLOW_GRAPH_HELP,
    STEP_COLOURS,
    STEPS_HELP,
    TIMELINE_HELP,
    WAITING_LABEL,
    WAITS_HELP,
    flow_graph,
    flow_run_path,
    flow_version_link,
    run_badge,
    run_link,
    run_links,
    timeline_context,
)
from runs.admin.downloads import run_value_view
from runs.admin.export import runs_csv_response
from runs.admin.live import LIVE_INTERVAL_MS, run_live_view
from runs.admin.start import run_start_view
from runs.admin.values import json_tree
from runs.exceptions import AgentBusy, RunAlreadyFinished, RunNotFound
from runs.models import (
    RUN_FINISHED,
    Run,
    RunStatus,
    Step,
    StepStatus,
)


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
        # The list never shows the JSON bodies, which can be large (extracted documents), nor flow definitions.
        return (
            super()
            .get_queryset(request, exclude_parameters)
            .defer("input", "result", "error", "flow_version__definition")
        )


class CreatedFilter(admin.DateFieldListFilter):
    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "created"


@admin.register(Run)
class RunAdmin(TeamScopedAdmin, admin.ModelAdmin):
    # A team's members see its runs; its runners (and editors, admins) start, cancel, re-run and delete them.
    team_path = "team"
    write_role = Role.RUNNER
    list_display = [
        "short_id",
        "agent_or_flow",
        "status_badge",
        "user_id_display",
        "created_with_author",
        "duration_display",
    ]
    list_display_links = ["short_id"]
    list_filter = [
        RunStatusFilter,
        dead_letters.NeedsAttentionFilter,
        "agent_type",
        "schedule",
        ("created_at", CreatedFilter),
    ]
    list_select_related = ["created_by", "flow_version__flow"]
    ordering = ["-created_at"]
    search_fields = ["agent_type"]  # the real search is get_search_results
    search_help_text = "Search by run id (full, or the 8-character short id), user id, agent name or flow slug."
    empty_value_display = EMPTY
    actions = ["cancel_runs", "rerun_runs", "retry_failed_runs", "dismiss_failed_runs", "download_csv"]

    summary_fields = [
        "status_badge",
        "agent_display",
        "run_id",
        "user_id",
        "created_by_display",
        "created",
        "started",
        "finished",
        "duration_display",
    ]
    readonly_fields = [
        *summary_fields,
        "team",
        "error_code_display",
        "cancel_requested",
        "rerun_of_link",
        "reruns_links",
        "schedule_link",
        "why_it_waits",
        "input_pretty",
        "result_pretty",
        "error_pretty",
        "timeline",
        "flow_display",
        "flow_graph_display",
        "step_values",
        "decisions_display",
    ]

    # -- permissions: nothing is edited in a form; the runner role in the run's team allows cancel and re-run

    def has_add_permission(self, request):
        return False  # runs are started on the "Start a run" page, through the API or by re-running one

    def has_change_permission(self, request, obj=None):
        # Runs are never edited; the change page is a read-only view (the viewer role in the run's team opens
        # it) and the runner role there lets a user cancel and re-run (has_operate_permission).
        return False

    def has_operate_permission(self, request, obj=None) -> bool:
        """Whether the user may start, cancel and re-run runs: of `obj`'s team, or (no run) of some team."""
        if request.user.is_superuser:
            return request.user.is_active
        return self.has_team_role(request, Role.RUNNER, obj)

    def operable(self, request, queryset):
        """The runs of `queryset` in teams where the user is at least a runner (all of them for a superuser)."""
        ids = team_ids_for(request, Role.RUNNER)
        return queryset if ids is None else queryset.filter(team__in=ids)

    def _skipped_message(self, request, skipped: int) -> None:
        if skipped:
            self.message_user(
                request,
                f"{skipped} run(s) skipped: your role in their team does not allow starting or stopping runs.",
                messages.WARNING,
            )

    def has_delete_permission(self, request, obj=None):
        if obj is not None and not obj.is_finished:
            return False  # a worker may still be writing to it: cancel it first
        return super().has_delete_permission(request, obj)

    def delete_queryset(self, request, queryset):
        allowed = self.operable(request, queryset)
        self._skipped_message(request, queryset.count() - allowed.count())
        queryset = allowed
        unfinished = queryset.exclude(status__in=RUN_FINISHED).count()
        if unfinished:
            self.message_user(
                request,
                f"{unfinished} run(s) not deleted because they have not finished; cancel them first.",
                messages.WARNING,
            )
        finished = list(queryset.filter(status__in=RUN_FINISHED).values_list("pk", flat=True))
        self._busy_message(request, len(finished) - services.runs_delete(run_ids=finished))

    def delete_model(self, request, obj):
        self._busy_message(request, 1 - services.runs_delete(run_ids=[obj.pk]))

    def _busy_message(self, request, busy: int) -> None:
        if busy:
            self.message_user(
                request,
                f"{busy} run(s) not deleted: being retried, re-run or resumed at this moment. Try again.",
                messages.WARNING,
            )

    # -- list

    def get_changelist(self, request, **kwargs):
        return RunChangeList

    def get_queryset(self, request):
        waiting = Step.objects.filter(run=OuterRef("pk"), status=StepStatus.WAITING)
        return selectors.runs_with_attention(super().get_queryset(request).annotate(is_waiting=Exists(waiting)))

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        by_id = id_search(term, full=["pk", "user_id"])
        if by_id is not None:
            return queryset.filter(by_id), False
        condition = Q(agent_type__icontains=term) | Q(flow_version__flow__slug__icontains=term)
        if SHORT_ID.fullmatch(term):
            condition |= Q(id__startswith=term.lower())
        return queryset.filter(condition), False

    @admin.display(description="run", ordering="created_at")
    def short_id(self, obj: Run):
        short = str(obj.pk)[:8]
        return format_html('<span title="{}" style="font-family:monospace">{}</span>', obj.pk, short)

    @admin.display(description="agent or flow", ordering="agent_type")
    def agent_or_flow(self, obj: Run):
        if obj.flow_version_id:
            return nowrap(format_html("flow {}", flow_version_link(obj.flow_version)))
        return obj.agent_type or EMPTY

    @admin.display(description="run id")
    def run_id(self, obj: Run):
        return format_html("<code>{}</code>", obj.pk)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Run):
        note = dead_letters.attention_note(obj)  # a failed run: needs attention or dealt with, and its error class
        return format_html("{}{}", run_badge(obj), note) if note else run_badge(obj)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Run):
        return when(obj.created_at)

    @admin.display(description="created", ordering="created_at")
    def created_with_author(self, obj: Run):
        # One column for when and by whom, so that the list fits 1280 px beside the menu and the filters; the
        # time wraps between its words only ("2026-12-03" / "14:57"), never at a hyphen.
        context = {"parts": when(obj.created_at).split(" "), "by": obj.created_by}
        return render_to_string("admin/runs/includes/created_by.html", context)

    @admin.display(description="created by")
    def created_by_display(self, obj: Run):
        # Text, not Django's link to the user's page: accounts are for superusers only.
        return obj.created_by.get_username() if obj.created_by_id else EMPTY

    @admin.display(description="started")
    def started(self, obj: Run):
        return when(obj.started_at)

    @admin.display(description="finished")
    def finished(self, obj: Run):
        return when(obj.finished_at)

    @admin.display(description="duration")
    def duration_display(self, obj: Run):
        # May wrap between "1 min" and "4 s", never inside one: the list fits 1280 px.
        words = human_duration(obj.duration).split(" ")
        return " ".join("\u00a0".join(words[i : i + 2]) for i in range(0, len(words), 2))

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
        if sees_several_teams(request):
            summary.insert(summary.index("run_id"), "team")
        if obj is not None and obj.flow_version_id:
            summary[summary.index("agent_display")] = "flow_display"
        if obj is not None:
            # Rows that are mostly empty appear only when they say something.
            # A cancelled run did not fail: its "cancel requested" row says what happened, not an error.
            failed = obj.status != RunStatus.CANCELLED
            if obj.error_code and failed:
                summary.append("error_code_display")
            if obj.cancel_requested_at:
                summary.append("cancel_requested")
            if obj.rerun_of_id:
                summary.append("rerun_of_link")
            if obj.schedule_id:
                summary.append("schedule_link")
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
        if obj is not None and obj.flow_version_id:
            fieldsets.append(("Flow", {"fields": ["flow_graph_display"], "description": FLOW_GRAPH_HELP}))
        if obj is not None and (obj.status == RunStatus.FAILED or obj.decisions.exists()):
            fieldsets.append(
                (
                    "Retried or dismissed",
                    {"fields": ["decisions_display"], "description": dead_letters.ATTENTION_HELP},
                )
            )
        fieldsets.append(("Input", {"fields": ["input_pretty"]}))
        fieldsets.append(("Result", {"fields": ["result_pretty"]}))
        if obj is not None and (obj.error or obj.error_code) and obj.status != RunStatus.CANCELLED:
            fieldsets.append(("Error", {"fields": ["error_pretty"]}))
        if obj is not None and obj.flow_version_id:
            fieldsets.append(("Each step's input and output", {"fields": ["step_values"], "description": STEPS_HELP}))
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
        if not obj.error_code:
            return EMPTY
        return format_html("<code>{}</code> ({} error)", obj.error_code, selectors.error_class(obj.error_code))

    @admin.display(description="decisions")
    def decisions_display(self, obj: Run):
        return dead_letters.decisions_html(obj)

    @admin.display(description="cancel requested")
    def cancel_requested(self, obj: Run):
        return when(obj.cancel_requested_at)

    @admin.display(description="started by schedule")
    def schedule_link(self, obj: Run):
        url = reverse("admin:schedules_schedule_change", args=[obj.schedule_id])
        return format_html(
            '<a href="{}">{}</a> for its {} UTC fire time', url, obj.schedule, f"{obj.scheduled_for:%Y-%m-%d %H:%M:%S}"
        )

    @admin.display(description="re-run of")
    def rerun_of_link(self, obj: Run):
        return run_link(obj.rerun_of_id) if obj.rerun_of_id else EMPTY

    @admin.display(description="re-runs of this run")
    def reruns_links(self, obj: Run):
        ids = list(obj.reruns.order_by("created_at").values_list("pk", flat=True))
        if not ids:
            return EMPTY
        return run_links(ids)

    @admin.display(description="waiting for")
    def why_it_waits(self, obj: Run):
        blocked = selectors.run_blocked_by(run=obj)
        if blocked is None:
            return "This run is not waiting for a slot."
        # The selector names only the holders of the run's own team: an agent's slots are shared by every team,
        # and another team's runs are counted, never named.
        holders = Run.objects.filter(pk__in=blocked["runs"]).only("pk", "agent_type", "status")
        context = {
            "blocked": blocked,
            "holders": [{"link": run_link(r.pk), "agent_type": r.agent_type, "badge": run_badge(r)} for r in holders],
            "others": max(blocked["slots_used"] - len(blocked["runs"]), 0),
        }
        return render_to_string("admin/runs/includes/waits_for.html", context)

    def _value_url(self, obj: Run) -> str:
        return reverse("admin:runs_run_value", args=[obj.pk])

    @admin.display(description="input the run started with")
    def input_pretty(self, obj: Run):
        return json_tree(obj.input, url=self._value_url(obj), of="input")

    @admin.display(description="result")
    def result_pretty(self, obj: Run):
        if obj.result is None:
            return "No result yet." if not obj.is_finished else "No result."
        return json_tree(obj.result, url=self._value_url(obj), of="result")

    @admin.display(description="steps")
    def step_values(self, obj: Run):
        url = self._value_url(obj)
        steps = [
            {
                "step": step,
                "status": badge(choice_label(StepStatus, step.status), STEP_COLOURS.get(step.status, GREY)),
                "input": json_tree(step.input, url=url, of=f"step-{step.pk}-input"),
                "output": None if step.output is None else json_tree(step.output, url=url, of=f"step-{step.pk}-output"),
            }
            for step in sorted(self._steps(obj), key=lambda s: s.sequence)
        ]
        if not steps:
            return "No steps yet."
        return render_to_string("admin/runs/includes/step_values.html", {"steps": steps})

    @admin.display(description="error message")
    def error_pretty(self, obj: Run):
        return pre_text(obj.error)

    def _steps(self, obj: Run) -> list[Step]:
        """The run's steps with their attempts, read once per page (the graph and the timeline both use them)."""
        if not hasattr(obj, "_admin_steps"):
            obj._admin_steps = list(selectors.run_steps(run=obj))
        return obj._admin_steps

    @admin.display(description="agent")
    def agent_display(self, obj: Run):
        # The field's own help ("empty for a flow run") would be beside an agent run's agent: not said here.
        return obj.agent_type or EMPTY

    @admin.display(description="flow")
    def flow_display(self, obj: Run):
        version = obj.flow_version
        if version is None:
            return EMPTY
        link = flow_version_link(version)
        if version.flow is None:
            return link
        current = version.flow.versions.order_by("-number").values_list("number", flat=True).first()
        if current and current != version.number:
            return format_html(
                "{} ({}; the flow is now at v{}, this run keeps the version it started with)",
                link,
                version.flow.name,
                current,
            )
        return format_html("{} ({})", link, version.flow.name)

    @admin.display(description="graph")
    def flow_graph_display(self, obj: Run):
        if obj.flow_version is None:
            return EMPTY
        path, statuses = flow_run_path(obj, self._steps(obj))
        # The run's pinned version, not the flow's current one: that is what the run executed.
        return flow_graph(obj.flow_version.definition, path=path, statuses=statuses)

    @admin.display(description="attempts")
    def timeline(self, obj: Run):
        context = timeline_context(self._steps(obj), now=timezone.now())
        if context is None:
            return "No steps yet."
        return render_to_string("admin/runs/includes/timeline.html", context)

    # -- actions (list) and buttons (change page), both through the services

    @admin.action(description="Cancel selected runs", permissions=["operate"])
    def cancel_runs(self, request, queryset):
        allowed = self.operable(request, queryset)
        self._skipped_message(request, queryset.count() - allowed.count())
        counts = {"cancelled": 0, "stopping": 0, "finished": 0}
        for run in allowed:
            counts[self._cancel(request, run)] += 1
        parts = []
        if counts["cancelled"]:
            parts.append(f"{counts['cancelled']} run(s) cancelled")
        if counts["stopping"]:
            parts.append(f"{counts['stopping']} running run(s) asked to stop (they stop within seconds)")
        if counts["finished"]:
            parts.append(f"{counts['finished']} skipped because they had already finished")
        level = messages.SUCCESS if counts["cancelled"] or counts["stopping"] else messages.WARNING
        if parts:
            self.message_user(request, "; ".join(parts) + ".", level)

    @admin.action(description="Re-run selected runs", permissions=["operate"])
    def rerun_runs(self, request, queryset):
        allowed = self.operable(request, queryset)
        self._skipped_message(request, queryset.count() - allowed.count())
        started = []
        for run in allowed:
            new_run = self._rerun(request, run)
            if new_run is not None:
                started.append(new_run)
        if started:
            message = format_html("Started {} new run(s): {}", len(started), run_links(r.pk for r in started))
            self.message_user(request, message, messages.SUCCESS)

    @admin.action(description="Download selected runs as CSV", permissions=["view"])
    def download_csv(self, request, queryset):
        return runs_csv_response(queryset)

    @admin.action(description="Retry selected failed runs", permissions=["operate"])
    def retry_failed_runs(self, request, queryset):
        dead_letters.retry_runs(self, request, queryset)

    @admin.action(description="Dismiss selected failed runs (asks why)", permissions=["operate"])
    def dismiss_failed_runs(self, request, queryset):
        return dead_letters.dismiss_runs(self, request, queryset)

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
        if not (decision := run_start_acquire(user=request.user, team=run.team)).allowed:
            self.message_user(request, f"Run {short} was not re-run: {refusal_message(decision)}", messages.ERROR)
            return None
        try:
            new_run = services.run_rerun(run=run, created_by=request.user, request_id=current_request_id())
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
        except ServiceError as exc:
            self.message_user(request, f"Run {short} was not re-run: {exc}", messages.ERROR)
        else:
            self.log_change(request, run, f"Re-run from the admin as {new_run.pk}.")
            return new_run
        return None

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            # Before the default URLs: their "<path:object_id>/" would match these too.
            path("start/", self.admin_site.admin_view(self.start_view), name=f"{prefix}_start"),
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
            path(
                "<path:object_id>/resume/",
                self.admin_site.admin_view(self.resume_view),
                name=f"{prefix}_resume",
            ),
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.resume_view),
                name=f"{prefix}_retry",
            ),
            path(
                "<path:object_id>/dismiss/",
                self.admin_site.admin_view(self.dismiss_view),
                name=f"{prefix}_dismiss",
            ),
            path("<path:object_id>/value/", self.admin_site.admin_view(self.value_view), name=f"{prefix}_value"),
            path("<path:object_id>/live/", self.admin_site.admin_view(self.live_view), name=f"{prefix}_live"),
            *super().get_urls(),
        ]

    def start_view(self, request):
        return run_start_view(self, request)

    @method_decorator(require_GET)
    def value_view(self, request, object_id):
        return run_value_view(self, request, object_id)

    @method_decorator(require_GET)
    def live_view(self, request, object_id):
        return run_live_view(self, request, object_id)

    def changelist_view(self, request, extra_context=None):
        kept = selectors.retention_days_of(team_ids=team_ids_for(request))
        extra_context = {
            **(extra_context or {}),
            "can_operate": self.has_operate_permission(request),
            "retention_days": next(iter(kept)) if len(kept) == 1 else None,
            "retention_varies": len(kept) > 1,
        }
        return super().changelist_view(request, extra_context)

    def _button_run(self, request, object_id) -> Run | HttpResponseNotAllowed:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        # Through the team-scoped queryset: another team's run is a 404, as if it did not exist.
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404("No such run.")
        if not self.has_operate_permission(request, run):
            raise PermissionDenied
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

    def resume_view(self, request, object_id):
        # "Resume" (a flow run) and "Retry" (an agent run) are one decision on a failed run: runs.services.run_retry.
        run = self._button_run(request, object_id)
        if not isinstance(run, Run):
            return run
        return dead_letters.retry_view(self, request, run)

    def dismiss_view(self, request, object_id):
        return dead_letters.dismiss_view(self, request, object_id)

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
        extra_context = {**(extra_context or {}), "live_interval_ms": LIVE_INTERVAL_MS}
        return super().change_view(request, object_id, form_url, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_operate"] = obj is not None and self.has_operate_permission(request, obj)
        context["needs_attention"] = (
            obj is not None and selectors.runs_needing_attention(Run.objects.filter(pk=obj.pk)).exists()
        )
        return super().render_change_form(request, context, add, change, form_url, obj)
