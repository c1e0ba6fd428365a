"""Reads of flows: one flow, the list, a flow's versions, its latest run, and waiting for a flow run to end."""

from __future__ import annotations

import time

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from flows.exceptions import FlowNotFound
from flows.models import Flow, FlowVersion
from runs.models import Run

WAIT_POLL_SECONDS = 0.05


def flow_get(*, slug: str) -> Flow:
    """The flow `slug` with its owner; FlowNotFound if there is none."""
    flow = Flow.objects.filter(slug=slug).select_related("owner").first()
    if flow is None:
        # The same answer as for a flow the user may not see (the API's ModelPermissions `not_found`).
        raise FlowNotFound()
    return flow


def flow_list() -> QuerySet[Flow]:
    """Every stored flow with its owner and current version: three queries a page, whatever its length."""
    newest = FlowVersion.objects.filter(flow=OuterRef("flow")).order_by("-number").values("number")[:1]
    # Only the newest version of each flow is prefetched, not every version's definition: Flow.current_version
    # takes the newest of the prefetched ones, which is then the only one.
    current = FlowVersion.objects.filter(number=Subquery(newest))
    return Flow.objects.select_related("owner").prefetch_related(Prefetch("versions", queryset=current))


def flow_version_list(*, flow: Flow) -> QuerySet[FlowVersion]:
    """The flow's versions, newest first, with who saved each."""
    return flow.versions.select_related("created_by").order_by("-number")


def flow_run_latest(*, flow: Flow) -> Run | None:
    """The flow's newest run (its input and start only), to start the next one from: the admin's Run now."""
    return Run.objects.filter(flow_version__flow=flow).order_by("-created_at").only("input", "created_at").first()


def flow_run_wait(*, run: Run, seconds: float) -> Run:
    """The run once it has ended, or as it is after `seconds` (0: at once)."""
    deadline = time.monotonic() + seconds
    while True:
        run.refresh_from_db()
        if run.is_finished or time.monotonic() >= deadline:
            return run
        time.sleep(WAIT_POLL_SECONDS)
