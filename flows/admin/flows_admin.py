"""The flow admin: list, edit (a changed definition is a new version), graph, version history, delete."""

from __future__ import annotations

import difflib
import json
import re

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.safestring import SafeString

from agentrunner.adminkit import EMPTY, PRE_STYLE, TeamScopedAdmin, sees_several_teams, when
from agentrunner.agents import all_agents
from agentrunner.models import Role
from flows import services
from flows.admin.editor import FlowForm, definition_text_check, pretty
from flows.admin.run_now import flow_run_view
from flows.definition import WARNING
from flows.exceptions import FlowInUse
from flows.models import Flow, FlowVersion
from runs.admin.display import flow_graph
from runs.models import Run

DIFF_COLOURS = {"+": "#d1e7dd", "-": "#f8d7da", "@": "#e7f1ff"}
DIFF_CONTEXT_LINES = 2
VERSION_HEADINGS = ("Version", "Saved by", "Saved at", "Runs", "Changes from the version before")


@admin.register(Flow)
class FlowAdmin(TeamScopedAdmin, admin.ModelAdmin):
    """A team's flows: its viewers read them, its editors and admins write them, its runners run them."""

    form = FlowForm
    list_display = ["slug", "name", "enabled", "version_display", "owner", "runs_display", "updated_at"]
    list_display_links = ["slug", "name"]
    list_filter = ["enabled"]
    list_select_related = ["owner"]
    search_fields = ["slug", "name"]
    readonly_fields = ["owner", "created_at", "updated_at", "current_version_display", "versions_table"]

    def get_queryset(self, request):
        # One query for the list: the current version's number and the runs of every version, as subqueries
        # rather than joins, so that the page's count is of flows alone, not of flows joined to every run.
        newest = FlowVersion.objects.filter(flow=OuterRef("pk")).order_by("-number").values("number")[:1]
        runs = (
            Run.objects.filter(flow_version__flow=OuterRef("pk"))
            .order_by()
            .values("flow_version__flow")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return (
            super()
            .get_queryset(request)
            .select_related("owner")  # the change page shows it too
            .annotate(version_number=Subquery(newest), run_count=Coalesce(Subquery(runs), 0))
        )

    def get_fieldsets(self, request, obj=None):
        definition = ("Definition", {"fields": ["definition"], "description": definition_help()})
        if obj is None:
            # The team is a choice only for who may add flows in several teams; otherwise a hidden field
            # (TeamScopedAdmin.get_form) that holds the one team.
            return [(None, {"fields": ["team", "slug", "name", "description", "enabled"]}), definition]
        team = ["team"] if sees_several_teams(request) else []
        return [
            (None, {"fields": [*team, "slug", "name", "description", "enabled", "owner", "current_version_display"]}),
            definition,
            ("Versions", {"fields": ["versions_table"], "description": "Newest first; runs keep their version."}),
        ]

    def get_prepopulated_fields(self, request, obj=None):
        return {"slug": ("name",)} if obj is None else {}

    def get_readonly_fields(self, request, obj=None):
        # The slug names the flow in the API (/api/v1/flows/<slug>/runs): clients would break if it changed. A
        # flow stays in its team: its runs, schedules and digests are that team's.
        return [*self.readonly_fields, "team", "slug"] if obj is not None else self.readonly_fields

    # -- list

    @admin.display(description="version", ordering="version_number")
    def version_display(self, obj: Flow):
        return f"v{obj.version_number}" if obj.version_number else EMPTY

    @admin.display(description="runs", ordering="run_count")
    def runs_display(self, obj: Flow):
        return obj.run_count

    # -- change page

    def _versions(self, obj: Flow) -> list[FlowVersion]:
        """The flow's versions, newest first, read once per page."""
        if not hasattr(obj, "_admin_versions"):
            obj._admin_versions = list(
                obj.versions.select_related("created_by").annotate(run_count=Count("runs")).order_by("-number")
            )
        return obj._admin_versions

    @admin.display(description="current version")
    def current_version_display(self, obj: Flow):
        versions = self._versions(obj)
        if not versions:
            return EMPTY
        return f"v{versions[0].number}, saved {when(versions[0].created_at)} by {_user(versions[0])}"

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The graph spans the page's width under the first fieldset (see the change_form template), where a
        # read-only field would lose a column to its label.
        versions = self._versions(obj) if obj is not None else []
        context["flow_graph"] = flow_graph(versions[0].definition) if versions else None
        context["can_run"] = obj is not None and self.has_run_permission(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="versions")
    def versions_table(self, obj: Flow):
        versions = self._versions(obj)
        if not versions:
            return EMPTY
        return render_to_string(
            "admin/flows/includes/versions.html",
            {"headings": VERSION_HEADINGS, "rows": version_rows(versions), "pre_style": PRE_STYLE},
        )

    # -- saving and deleting: through the services

    def save_form(self, request, form, change):
        # Not form.save(): the services write (a changed definition becomes a new version).
        return form.instance

    def response_post_save_add(self, request, obj):
        # A new flow's own page (its graph, Run now) is where one goes next, not the list of flows.
        return HttpResponseRedirect(reverse("admin:flows_flow_change", args=[obj.pk]))

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {"name": data["name"], "description": data["description"], "enabled": data["enabled"]}
        if change:
            before = obj.current_version
            services.flow_update(flow=obj, user=request.user, definition=data["definition"], **fields)
            after = obj.current_version
            if before is None or after.pk != before.pk:
                self.message_user(
                    request,
                    f"The definition changed: it is now version {after.number}. Runs already started keep theirs.",
                    messages.INFO,
                )
        else:
            flow = services.flow_create(
                slug=data["slug"], definition=data["definition"], owner=request.user, team=data["team"], **fields
            )
            obj.pk = flow.pk
            obj.refresh_from_db()
            obj._state.adding = False
        warnings = [p for p in form.fields["definition"].widget.problems if p.severity == WARNING]
        if warnings:
            message = render_to_string("admin/flows/includes/saved_with_warnings.html", {"warnings": warnings})
            self.message_user(request, message, messages.WARNING)

    def save_related(self, request, form, formsets, change):
        pass  # a flow has no many-to-many fields nor inlines; its versions are written by the services

    def delete_model(self, request, obj):
        services.flow_delete(flow=obj)

    def delete_queryset(self, request, queryset):
        kept = []
        for flow in queryset:
            try:
                services.flow_delete(flow=flow)
            except FlowInUse:
                kept.append(flow.slug)
        if kept:
            self.message_user(
                request,
                f"Not deleted because they have runs (disable them instead): {', '.join(kept)}.",
                messages.WARNING,
            )

    # -- "Run now"

    def has_run_permission(self, request, obj=None) -> bool:
        """Whether the user may start runs of `obj` (of some flow, without one): a runner of its team."""
        return self.has_team_role(request, Role.RUNNER, obj)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            # Before the default URLs: their "<path:object_id>/" would match these too.
            path("check/", self.admin_site.admin_view(self.check_view), name=f"{info[0]}_{info[1]}_check"),
            path("<path:object_id>/run/", self.admin_site.admin_view(self.run_view), name=f"{info[0]}_{info[1]}_run"),
            *super().get_urls(),
        ]

    def check_view(self, request):
        """The editor's check: the problems of the text it posts, each with its line (nothing is saved).

        Admin-only, unlike the API's /flows/validate, because the answer is about the editor's text (lines and
        columns in it), not about a definition.
        """
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        try:
            text = json.loads(request.body).get("text")
        except (ValueError, AttributeError):
            text = None
        if not isinstance(text, str):
            return JsonResponse({"detail": "the request must carry the definition's text"}, status=400)
        limit = services.max_steps_allowed(user=request.user)
        return JsonResponse(definition_text_check(text, max_steps_limit=limit))

    def run_view(self, request, object_id):
        return flow_run_view(self, request, object_id)


def definition_help() -> SafeString:
    """How a definition reads, in three sentences, with the agents there are (the admin shows it unescaped)."""
    return render_to_string("admin/flows/includes/definition_help.html", {"agents": sorted(all_agents())})


def _user(version: FlowVersion) -> str:
    return version.created_by.get_username() if version.created_by else EMPTY


_HUNK = re.compile(r"@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def _hunk_header(line: str) -> str:
    """ "@@ -59,5 +59,5 @@" says where a change is: "@ line 59" reads better."""
    match = _HUNK.match(line)
    return f"@ line {match[1]}" if match else line


def version_rows(versions: list[FlowVersion]) -> list[dict]:
    """What admin/flows/includes/versions.html shows of each version (newest first), with its diff."""
    runs_list = reverse("admin:runs_run_changelist")
    return [
        {
            "number": version.number,
            "saved_by": _user(version),
            "saved_at": when(version.created_at),
            "runs": version.run_count,
            "runs_url": f"{runs_list}?flow_version__id__exact={version.pk}",
            "diff": version_diff(versions[index + 1] if index + 1 < len(versions) else None, version),
        }
        for index, version in enumerate(versions)
    ]


def version_diff(previous: FlowVersion | None, version: FlowVersion) -> dict | None:
    """What changed from the version before, as a unified diff of the pretty JSON; None for the first version."""
    if previous is None:
        return None
    lines = list(
        difflib.unified_diff(
            pretty(previous.definition).splitlines(),
            pretty(version.definition).splitlines(),
            fromfile=f"v{previous.number}",
            tofile=f"v{version.number}",
            n=DIFF_CONTEXT_LINES,
            lineterm="",
        )
    )[2:]  # without the ---/+++ header: the summary says which versions
    return {
        "previous": previous.number,
        "added": sum(1 for line in lines if line.startswith("+")),
        "removed": sum(1 for line in lines if line.startswith("-")),
        "lines": [
            {"colour": DIFF_COLOURS.get(line[:1], "transparent"), "text": _hunk_header(line) or " "} for line in lines
        ],
    }
