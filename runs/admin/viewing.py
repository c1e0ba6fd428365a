"""The run page's side views (downloads, live parts) open a run as the run page does: for whoever may view it."""

from __future__ import annotations

from django.contrib.admin import ModelAdmin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied

from runs.models import Run


def run_for_viewer(model_admin: ModelAdmin, request, object_id) -> Run | None:
    """The run, if the user may view it (PermissionDenied if they may see no run at all); None if there is no
    such run or it is another team's: the views answer 404 for both, so that a run id does not leak."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    run = model_admin.get_object(request, unquote(object_id))  # through the team-scoped queryset
    if run is not None and not model_admin.has_view_permission(request, run):
        raise PermissionDenied
    return run
