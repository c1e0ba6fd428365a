"""Display helpers shared by the admin pages: badges, durations, pretty JSON, links.

Every page is read-only except an agent type's policy; every change goes through `runs.services`.
Model data is always escaped (`format_html`), never marked safe; the one `mark_safe` is the flow graph,
an SVG that `flows.graph` builds from escaped parts only (see `flow_graph`).
"""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from agentrunner.adminkit import (
    AMBER,
    BLUE,
    CELL_STYLE,
    CYAN,
    DARK_GREY,
    EMPTY,
    GREEN,
    GREY,
    ORANGE,
    RED,
    badge,
    choice_label,
    clock,
    human_duration,
)
from flows.definition import END
from flows.graph import render_svg
from runs.engine import slots
from runs.engine.finish import MAX_STEPS
from runs.models import (
    AttemptStatus,
    OnBusyChoice,
    Run,
    RunStatus,
    Step,
    StepStatus,
)

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
WAITS_HELP = "The agent allows only a few runs at once; this run starts when a slot frees."
TIMELINE_HELP = (
    "Every attempt at every step, on one time axis that starts when the first attempt started: a bar's "
    "position and length show when the attempt ran and how long it took (hover over it for the times). "
    "A step is tried again after a temporary failure or when its worker was lost."
)
BUSY_SHORT = {OnBusyChoice.REJECT: "reject new runs", OnBusyChoice.QUEUE: "queue new runs"}
# Concurrency keys of agents are "agent:<agent type>" (runs.engine.slots.agent_key).
AGENT_KEY_PREFIX = slots.agent_key("")

# Width of the shared time axis in the run timeline.
TIMELINE_BAR_PX = 320
# Grid lines at every quarter of the time axis, behind the bars.
TIMELINE_GRID = (
    "repeating-linear-gradient(to right,#ced4da 0,#ced4da 1px,#f1f3f5 1px,#f1f3f5 25%),"
    "linear-gradient(to left,#ced4da 0,#ced4da 1px,transparent 1px)"
)
# A bar never gets thinner than this, so a 10 ms attempt stays visible.
TIMELINE_MIN_BAR_PERCENT = 1.0


def attempt_badge(status: str) -> SafeString:
    return badge(choice_label(AttemptStatus, status), ATTEMPT_COLOURS.get(status, GREY))


def run_badge(run: Run) -> SafeString:
    if getattr(run, "is_waiting", False) and not run.is_finished:
        return badge(WAITING_LABEL, AMBER)
    return badge(choice_label(RunStatus, run.status), RUN_COLOURS.get(run.status, GREY))


def _step_waits_for(step: Step) -> SafeString | str:
    if step.status == StepStatus.WAITING:
        return "waits for a free slot"
    if step.status == StepStatus.RETRYING:
        if step.next_attempt_at:
            return format_html("tries again at {}", clock(step.next_attempt_at))
        return "tries again soon"
    return "waits for a worker"


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


def timeline_scale(span_seconds: float) -> SafeString:
    """The time axis' scale for the timeline's header, at the grid lines: 0 s, every quarter, the end."""
    marks = ["0 s"] + [human_duration(timedelta(seconds=span_seconds * q / 4)) for q in (1, 2, 3, 4)]
    return format_html(
        '<div style="display:flex;justify-content:space-between;width:{}px;font-weight:400;font-size:11px;'
        'text-transform:none">{}</div>',
        TIMELINE_BAR_PX,
        format_html_join("", "<span>{}</span>", ((mark,) for mark in marks)),
    )


# --- Flows ---------------------------------------------------------------------------------------

# How a step's status colours its task in the flow graph (flows.graph.STATUS_STYLES).
GRAPH_STATUS = {
    StepStatus.SUCCESS: "success",
    StepStatus.FAILED: "failure",
    StepStatus.RUNNING: "running",
    StepStatus.QUEUED: "waiting",
    StepStatus.WAITING: "waiting",
    StepStatus.RETRYING: "waiting",
    StepStatus.CANCELLED: "cancelled",
}
FLOW_GRAPH_HELP = (
    "The flow version this run executes. The highlighted boxes and arrows are the way the run went; a box's "
    "colour is its latest step's status. Hover over a box or an arrow for details."
)


def flow_graph(definition, *, path: list[str] | None = None, statuses: dict[str, str] | None = None) -> SafeString:
    """The flow drawn as an inline SVG, in a box that scrolls sideways when the flow is wide."""
    svg = render_svg(definition, path=path, statuses=statuses)
    # mark_safe is right here: render_svg escapes every text it takes from the definition, the path and
    # the statuses (task names, agents, descriptions, `when` expressions) and adds nothing but numbers and
    # its own constant markup. The SVG has no script and loads nothing.
    return format_html('<div class="flow-graph" style="overflow-x:auto;max-width:100%">{}</div>', mark_safe(svg))  # noqa: S308


def flow_run_path(run: Run, steps: list[Step]) -> tuple[list[str], dict[str, str]]:
    """The tasks a flow run went through in order (with "end" once it ended there) and each task's latest status."""
    ordered = sorted(steps, key=lambda s: s.sequence)
    path = [step.name for step in ordered]
    statuses = {step.name: GRAPH_STATUS.get(step.status, "waiting") for step in ordered}
    # A run that stopped at max_steps or was cancelled did not reach "end".
    if ordered and run.status in (RunStatus.COMPLETED, RunStatus.FAILED) and run.error_code != MAX_STEPS:
        path.append(END)
    return path, statuses


def flow_version_link(version) -> SafeString | str:
    """ "claim-intake v2", linked to the flow's admin page; an inline flow has no page."""
    if version is None:
        return EMPTY
    if version.flow is None:
        return format_html("inline flow <code>{}</code> v{}", version.digest[:12], version.number)
    url = reverse("admin:flows_flow_change", args=[version.flow_id])
    return format_html('<a href="{}">{}</a> v{}', url, version.flow.slug, version.number)
