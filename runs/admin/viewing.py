"""The run page's side views (downloads, live parts) open a run as the run page does: for whoever may view it."""

from __future__ import annotations

from django.contrib.admin import ModelAdmin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied

from runs.models import Run


def run_for_viewer(model_admin: ModelAdmin, request, object_id) -> Run | None:
    """The run, if the user may view it (PermissionDenied if not); None if there is no such run."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    run = model_admin.get_object(request, unquote(object_id))
    if run is not None and not model_admin.has_view_permission(request, run):
        raise PermissionDenied
    return run
