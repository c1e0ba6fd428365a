"""Display helpers shared by the admin pages: badges, links, the flow graph, and the timeline's rows.

Every page is read-only except an agent type's policy; every change goes through `runs.services`.
Tables, lists and panels are templates (templates/admin/runs/includes/); here are one-element helpers and
the values those templates show. Model data is always escaped (`format_html`, template autoescaping), never
marked safe; the one `mark_safe` is the flow graph, an SVG that `flows.graph` builds from escaped parts only
(see `flow_graph`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
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
    when,
)
from flows.definition import END
from flows.graph import render_svg
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
STEPS_HELP = (
    "What each step was given and what it returned, in the order the steps ran. Documents show as their kind "
    "and size, with a link to download them."
)
BUSY_SHORT = {OnBusyChoice.REJECT: "reject new runs", OnBusyChoice.QUEUE: "queue new runs"}

# The shared time axis of the run timeline takes the width the other columns leave, but at least this.
TIMELINE_MIN_BAR_PX = 160
# Cells that may wrap (step names, workers): long words break rather than widen the table.
WRAP_CELL_STYLE = "padding:4px 8px;vertical-align:top;overflow-wrap:anywhere;"
# A worker id is host:pid:thread; the timeline shows host (cut to this many characters) and pid.
WORKER_HOST_CHARS = 12
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


def step_waits_for(step: Step) -> SafeString | str:
    if step.status == StepStatus.WAITING:
        return "waits for a free slot"
    if step.status == StepStatus.RETRYING:
        if step.next_attempt_at:
            return format_html("tries again at {}", clock(step.next_attempt_at))
        return "tries again soon"
    return "waits for a worker"


def attempt_words(number: int, max_attempts: int) -> str:
    """ "attempt 1 of at most 3": how many tries the step may still get, not how many it will get."""
    if max_attempts <= 1 and number == 1:
        return "attempt 1 (no retries)"
    if number <= max_attempts:
        return f"attempt {number} of at most {max_attempts}"
    return f"attempt {number}"  # a step handed back by a stopping worker gets an extra attempt


def worker_short(worker_id: str) -> SafeString | str:
    """A worker id as the timeline shows it: host (cut) and process, the full id on hover."""
    if not worker_id:
        return EMPTY
    host, _, rest = worker_id.partition(":")
    pid = rest.split(":", 1)[0]
    if len(host) > WORKER_HOST_CHARS:
        host = host[: WORKER_HOST_CHARS - 1] + "…"
    short = f"{host}:{pid}" if pid else host
    return format_html('<span title="worker {}">{}</span>', worker_id, short)


def run_link(run_id, label: str | None = None) -> SafeString:
    url = reverse("admin:runs_run_change", args=[run_id])
    return format_html(
        '<a href="{}" title="{}" style="font-family:monospace">{}</a>', url, run_id, label or str(run_id)[:8]
    )


def run_links(run_ids) -> SafeString:
    """Links to these runs, separated by commas."""
    return render_to_string("admin/runs/includes/run_links.html", {"links": [run_link(pk) for pk in run_ids]})


# --- Runs ---------------------------------------------------------------------------------------


def timeline_context(steps: list[Step], *, now: datetime) -> dict | None:
    """What admin/runs/includes/timeline.html shows of these steps (with their attempts); None if no row.

    A row per attempt, its bar placed on one time axis that starts when the first attempt started, and a
    row for each step that waits to start (again).
    """
    attempts = [a for step in steps for a in step.attempt_set.all()]
    t0 = min((a.started_at for a in attempts), default=None)
    t1 = max((a.finished_at or now for a in attempts), default=None)
    span = max((t1 - t0).total_seconds(), 0.001) if t0 else 1.0

    def bar(step: Step, attempt) -> dict:
        start = (attempt.started_at - t0).total_seconds() / span * 100
        end = ((attempt.finished_at or now) - t0).total_seconds() / span * 100
        width = max(end - start, TIMELINE_MIN_BAR_PERCENT)
        offset = (attempt.started_at - t0).total_seconds()
        title = (
            f"{step.name}, attempt {attempt.number}: from {human_duration(timedelta(seconds=offset))} to "
            f"{human_duration((attempt.finished_at or now) - t0)}"
            f"{'' if attempt.finished_at else ' (still running)'}, {when(attempt.started_at)} → "
            f"{when(attempt.finished_at)}"
        )
        return {
            "title": title,
            "left": f"{min(start, 100 - width):.2f}",
            "width": f"{width:.2f}",
            "colour": ATTEMPT_COLOURS.get(attempt.status, GREY),
        }

    rows = []
    for step in steps:
        step_attempts = list(step.attempt_set.all())
        for attempt in step_attempts:
            rows.append(
                {
                    "step": step.name,
                    "attempt": attempt_words(attempt.number, step.max_attempts),
                    "status": attempt_badge(attempt.status),
                    "bar": bar(step, attempt),
                    "started": clock(attempt.started_at),
                    "finished": clock(attempt.finished_at) if attempt.finished_at else "still running",
                    "duration": human_duration(attempt.duration),
                    "worker": worker_short(attempt.worker_id),
                    "error_code": attempt.error_code,
                    "error": attempt.error,
                    # A cancel or a hand-back is someone's decision or the worker's, not a failure: said quietly.
                    "stopped": attempt.status == AttemptStatus.CANCELLED,
                }
            )
        if step.status in STEP_NOT_STARTED:
            # The step has not started (again) yet: say what it waits for.
            rows.append(
                {
                    "step": step.name,
                    "attempt": "next attempt" if step_attempts else "not started yet",
                    "status": badge(choice_label(StepStatus, step.status), STEP_COLOURS.get(step.status, GREY)),
                    "waits_for": step_waits_for(step),
                    "started": EMPTY,
                    "finished": EMPTY,
                    "duration": EMPTY,
                    "worker": EMPTY,
                }
            )
    if not rows:
        return None
    # The time axis' scale at the grid lines: 0 s, every quarter, the end.
    scale = ["0 s"] + [human_duration(timedelta(seconds=span * q / 4)) for q in (1, 2, 3, 4)] if t0 else None
    return {
        "rows": rows,
        "scale": scale,
        "cell_style": CELL_STYLE,
        "wrap_style": WRAP_CELL_STYLE,
        "min_bar_px": TIMELINE_MIN_BAR_PX,
        "grid": TIMELINE_GRID,
    }


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
