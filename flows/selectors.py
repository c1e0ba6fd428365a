"""Reads of flows: one flow, the list, a flow's versions, its latest run, and waiting for a flow run to end.

Each read is of one team's flows (the acting team): another team's flow is FlowNotFound, as a missing one.
"""

from __future__ import annotations

import time

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from flows.exceptions import FlowNotFound
from flows.models import Flow, FlowVersion
from runs.models import Run

WAIT_POLL_SECONDS = 0.05


def flow_get(*, team, slug: str) -> Flow:
    """`team`'s flow `slug` with its owner; FlowNotFound if it has none (another team's flow too)."""
    flow = Flow.objects.filter(team=team, slug=slug).select_related("owner").first()
    if flow is None:
        # The same answer whether the flow is missing or another team's: its existence does not leak.
        raise FlowNotFound()
    return flow


def flow_list(*, team) -> QuerySet[Flow]:
    """`team`'s flows with their owner and current version: three queries a page, whatever its length."""
    newest = FlowVersion.objects.filter(flow=OuterRef("flow")).order_by("-number").values("number")[:1]
    # Only the newest version of each flow is prefetched, not every version's definition: Flow.current_version
    # takes the newest of the prefetched ones, which is then the only one.
    current = FlowVersion.objects.filter(number=Subquery(newest))
    flows = Flow.objects.filter(team=team).select_related("owner")
    return flows.prefetch_related(Prefetch("versions", queryset=current))


def flow_version_list(*, team, slug: str) -> QuerySet[FlowVersion]:
    """The versions of `team`'s flow `slug`, newest first, with who saved each; FlowNotFound as flow_get."""
    return flow_get(team=team, slug=slug).versions.select_related("created_by").order_by("-number")


def flow_run_latest(*, flow: Flow) -> Run | None:
    """The flow's newest run (its input and start only), to start the next one from: the admin's Run now.

    Only a run of the flow's team: a flow's runs always are (they take its team), this keeps it so.
    """
    runs = Run.objects.filter(team_id=flow.team_id, flow_version__flow=flow)
    return runs.order_by("-created_at").only("input", "created_at").first()


def flow_run_wait(*, run: Run, seconds: float) -> Run:
    """The run once it has ended, or as it is after `seconds` (0: at once)."""
    deadline = time.monotonic() + seconds
    while True:
        run.refresh_from_db()
        if run.is_finished or time.monotonic() >= deadline:
            return run
        time.sleep(WAIT_POLL_SECONDS)
