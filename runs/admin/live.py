"""The run page of an unfinished run updates itself: its script (admin/runs/run/change_form.html) asks this view
every few seconds for the parts that change, rendered by the same display methods and templates as the page,
and swaps them in; `finished` tells it to stop (it then reloads the page once, for the buttons and sections
of a finished run). Read-only, and as many queries however many steps the run has."""

from __future__ import annotations

from django.contrib.admin import ModelAdmin
from django.http import JsonResponse
from django.template.defaultfilters import linebreaksbr
from django.utils.html import conditional_escape

from runs.admin.viewing import run_for_viewer

# The run page's read-only fields that change while a run goes on (RunAdmin's display methods).
LIVE_FIELDS = (
    "status_badge",
    "started",
    "finished",
    "duration_display",
    "why_it_waits",
    "flow_graph_display",
    "result_pretty",
    "error_pretty",
    "step_values",
    "timeline",
)
# How often the page asks, in milliseconds (the script reads it from the page).
LIVE_INTERVAL_MS = 2000


def field_html(model_admin: ModelAdmin, name: str, run) -> str:
    """A display method's value as the admin's read-only field shows it (AdminReadonlyField.contents)."""
    value = getattr(model_admin, name)(run)
    if value is None or value == "":
        return conditional_escape(model_admin.get_empty_value_display())
    return conditional_escape(value if hasattr(value, "__html__") else linebreaksbr(value))


def run_live_view(model_admin: ModelAdmin, request, object_id):
    """The parts of the run page that change, as HTML per field, and whether the run has finished."""
    run = run_for_viewer(model_admin, request, object_id)
    if run is None:
        return JsonResponse({"finished": True, "detail": "This run no longer exists."}, status=404)
    flow_only = () if run.flow_version_id else ("flow_graph_display", "step_values")
    fields = {name: field_html(model_admin, name, run) for name in LIVE_FIELDS if name not in flow_only}
    # Never cached: admin_view marks every admin answer so.
    return JsonResponse({"finished": run.is_finished, "status": run.status, "fields": fields})
