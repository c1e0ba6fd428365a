"""Draw a flow definition as a self-contained SVG picture, for the admin.

No script, no stylesheet, no external resource: the admin works offline and the picture can be inlined in
a page. Every text that comes from the definition (task names, agents, descriptions, `when` expressions)
or from the caller (`path`, `statuses`) is escaped before it is put in the SVG, and nothing else is
interpolated but numbers and the constants below; that is what makes the result safe to inline.

Layout, left to right: a "start" marker pointing at the start task, the tasks in columns by their
distance from the start task (breadth first; tasks that cannot be reached come in one last column), and
an "end" node. Edges follow the routing rules of `flows.definition`: each condition's match goes to its
`target_task_success`; the task's last condition's `target_task_failure` is where the flow goes when
no condition matched ("else"); a task without conditions ends the flow. An edge that would cross
another task, and every loop back to an earlier task, is routed around the tasks (loops above, long
jumps below) so that it stays visible.

An invalid definition is drawn as far as it can be (a target that is not a task becomes a red dashed
"unknown" node); one with nothing to draw gives a small "Cannot draw this flow: ..." picture.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flows.definition import END

__all__ = ["render_svg"]

# Sizes in pixels.
NODE_H = 52
NODE_MIN_W = 150
NODE_MAX_W = 240
END_W, END_H = 64, 32
GAP_MIN = 110  # between columns; wider where an edge's label needs it
LABEL_PAD = 14  # between a label and the tasks on either side
GAP_Y = 46  # between tasks of one column: room for a loop over a task
MARGIN = 16
START_COLUMN_W = 40
START_GAP = 44
LANE_FIRST = 30  # from the tasks to the first lane that routes an edge around them
LANE_STEP = 22  # between two lanes
CORNER = 8  # radius of a routed edge's corners
LOOP_H = 30  # height of a task's loop to itself
LABEL_H = 16
LEGEND_ROW_H = 22
LEGEND_MIN_W = 640  # a key wider than this (and than the graph) wraps
NAME_SIZE, SMALL_SIZE = 13, 11
CHAR_EM = 0.62  # average character width in em: a generous estimate for sans-serif text
WHEN_CHARS = 34  # a `when` expression longer than this is shortened on its edge (the tooltip has it all)

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, 'DejaVu Sans', sans-serif"
GREEN, RED, GREY, DARK = "#198754", "#dc3545", "#6c757d", "#343a40"
TEXT, MUTED, FAINT = "#212529", "#6c757d", "#adb5bd"
HALO = "#9ec5fe"  # under the edges a run took
# Task box colours (fill, border, text) by step status; the caller's statuses are these keys.
STATUS_STYLES = {
    "success": ("#d1e7dd", GREEN, TEXT, "succeeded"),
    "failure": ("#f8d7da", RED, TEXT, "failed"),
    "running": ("#cfe2ff", "#0d6efd", TEXT, "running"),
    "waiting": ("#fff3cd", "#cc9a06", TEXT, "waiting"),
    "cancelled": ("#e9ecef", DARK, TEXT, "cancelled"),
}
DEFAULT_STYLE = ("#ffffff", "#495057", TEXT)
NOT_RUN_STYLE = ("#f8f9fa", "#ced4da", MUTED)
UNKNOWN_STYLE = ("#fff5f5", RED, RED)

_START: tuple = ("start",)
_END: tuple = ("end",)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not allowed in XML 1.0


class _CannotDraw(Exception):
    """There is nothing to draw."""


@dataclass
class _Node:
    key: tuple
    label: str
    kind: str  # "task", "end" or "unknown"
    sub: str = ""  # second line: the agent
    tooltip: str = ""
    index: int = 0  # order in the definition
    layer: int = 0
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass
class _Edge:
    source: tuple
    target: tuple
    kind: str  # "match", "fallback", "end" (a task without conditions) or "start"
    colour: str
    dashed: bool = False
    labels: list[str] = field(default_factory=list)
    tooltips: list[str] = field(default_factory=list)
    taken: bool = False
    # Filled in by the layout:
    route: str = "direct"  # "direct", "loop" (to itself), "above" or "below" (around the tasks)
    lane: int = 0
    offset: float = 0.0  # between edges that join the same two nodes

    @property
    def label(self) -> str:
        return " / ".join(dict.fromkeys(self.labels))


def render_svg(definition: Any, *, path: list[str] | None = None, statuses: dict[str, str] | None = None) -> str:
    """Return the flow drawn as an SVG document; with `path`, the tasks and edges a run took are highlighted.

    `path` is the task names in the order a run executed them, ending with "end" if the run reached it;
    `statuses` maps a task to "success", "failure", "running", "waiting" or "cancelled" (its latest step).
    """
    try:
        graph = _Graph(definition, path=path, statuses=statuses)
    except _CannotDraw as exc:
        return _cannot_draw(str(exc))
    return graph.svg()


def _cannot_draw(reason: str) -> str:
    text = f"Cannot draw this flow: {reason}."
    width = round(_text_width(text, SMALL_SIZE + 1) + 2 * MARGIN)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="44" viewBox="0 0 {width} 44" '
        f'role="img" aria-label="{_e(text)}" font-family="{_e(FONT)}">'
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="43" rx="6" fill="#fff8e1" stroke="#cc9a06"/>'
        f'<text x="{MARGIN}" y="26" font-size="{SMALL_SIZE + 1}" fill="{TEXT}">{_e(text)}</text></svg>'
    )


# --- helpers ---------------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escape a text for SVG element content and attribute values (both quote characters included)."""
    return html.escape(_CONTROL_CHARACTERS.sub("", str(value)), quote=True)


def _n(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_EM


def _fit(text: str, width: float, size: float) -> str:
    """Shorten `text` with an ellipsis so that it fits `width` pixels."""
    limit = max(int(width / (size * CHAR_EM)), 2)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# --- the graph -------------------------------------------------------------------------------------------------


class _Graph:
    def __init__(self, definition: Any, *, path: list[str] | None, statuses: dict[str, str] | None):
        self.nodes: dict[tuple, _Node] = {}
        self.edges: list[_Edge] = []
        self.start: tuple | None = None
        self.highlight = path is not None
        self.path = [p for p in (path or []) if isinstance(p, str)]
        self.statuses = {k: v for k, v in (statuses or {}).items() if isinstance(k, str) and isinstance(v, str)}
        self.uid = "fg" + hashlib.sha256(repr((definition, self.path, self.statuses)).encode()).hexdigest()[:10]
        self._read(definition)
        self._mark_taken()
        self._layout()

    # -- reading the definition (tolerant: whatever is malformed is left out)

    def _read(self, definition: Any) -> None:
        if not isinstance(definition, dict):
            raise _CannotDraw("the definition is not a JSON object")
        raw_tasks = definition.get("tasks")
        if not isinstance(raw_tasks, list):
            raise _CannotDraw('it has no list of "tasks"')
        for index, raw in enumerate(raw_tasks):
            if not isinstance(raw, dict) or not _is_name(raw.get("name")):
                continue
            name = raw["name"]
            if name == END or ("task", name) in self.nodes:
                continue
            agent = raw["agent"] if _is_name(raw.get("agent")) else name
            description = raw["description"] if isinstance(raw.get("description"), str) else ""
            tooltip = f"Task {name}, runs the agent {agent}" + (f": {description}" if description.strip() else "")
            self.nodes[("task", name)] = _Node(("task", name), name, "task", agent, tooltip, index)
        if not self.nodes:
            raise _CannotDraw("no task has a name")
        self.nodes[_END] = _Node(_END, "end", "end", tooltip="The flow ends here.", index=len(raw_tasks))
        start = definition.get("start_task")
        if isinstance(start, str) and ("task", start) in self.nodes:
            self.start = ("task", start)
            self.edges.append(_Edge(_START, self.start, "start", DARK))

        groups: dict[str, list[dict]] = {}
        raw_conditions = definition.get("conditions")
        for raw in raw_conditions if isinstance(raw_conditions, list) else []:
            source = raw.get("source_task") if isinstance(raw, dict) else None
            if isinstance(source, str) and ("task", source) in self.nodes:
                groups.setdefault(source, []).append(raw)
        for key, node in list(self.nodes.items()):
            if node.kind != "task":
                continue
            group = groups.get(node.label)
            if group:
                self._read_conditions(key, group)
            else:
                self._add_edge(
                    _Edge(key, _END, "end", GREY, tooltips=[f"{node.label} has no condition: the flow ends"])
                )

    def _read_conditions(self, source: tuple, group: list[dict]) -> None:
        covered: set[str] = set()  # the step statuses that outcome conditions catch
        only_outcomes = True
        for condition in group:
            name = condition.get("name") if isinstance(condition.get("name"), str) else ""
            outcome, when = condition.get("outcome"), condition.get("when")
            if _is_name(outcome):
                label, test = outcome, f"the step's outcome is {outcome}"
                covered.add(outcome)
            elif _is_name(when):
                label, test = _short(when, WHEN_CHARS), f"when {' '.join(when.split())}"
                only_outcomes = False
            else:
                label, test = "?", "no test"
                only_outcomes = False
            target = self._target(condition.get("target_task_success"))
            if target is None:
                continue
            tooltip = f"Condition {name or '(no name)'}: {test} → {self.nodes[target].label}"
            colour = RED if outcome == "failure" else GREEN
            self._add_edge(_Edge(source, target, "match", colour, labels=[label], tooltips=[tooltip]))
        fallback = group[-1].get("target_task_failure")
        target = self._target(END if fallback in (None, "") else fallback)
        if target is None:
            return
        uncovered = {"success", "failure"} - covered if only_outcomes else None
        if uncovered == set():
            return  # every outcome has its condition: "else" never happens
        if uncovered == {"failure"}:
            label, colour, why = "failure", RED, "the step failed"
        elif uncovered == {"success"}:
            label, colour, why = "success", GREEN, "the step succeeded"
        else:
            label, colour, why = "else", GREY, "no condition matched"
        tooltip = f"When {why} → {self.nodes[target].label}"
        self._add_edge(_Edge(source, target, "fallback", colour, True, [label], [tooltip]))

    def _target(self, target: Any) -> tuple | None:
        if not _is_name(target):
            return None
        if target == END:
            return _END
        key = ("task", target)
        if key not in self.nodes:
            key = ("unknown", target)
            if key not in self.nodes:
                tooltip = f"{target!r} is not a task of this flow"
                self.nodes[key] = _Node(key, target, "unknown", "not a task", tooltip, len(self.nodes) + 10_000)
        return key

    def _add_edge(self, edge: _Edge) -> None:
        """Add an edge, or merge its label into an alike edge between the same two nodes."""
        for other in self.edges:
            if (other.source, other.target, other.kind, other.colour) == (
                edge.source,
                edge.target,
                edge.kind,
                edge.colour,
            ):
                other.labels += edge.labels
                other.tooltips += edge.tooltips
                return
        self.edges.append(edge)

    def _mark_taken(self) -> None:
        if not self.path:
            return
        keys = [_END if name == END else ("task", name) for name in self.path]
        pairs = set(zip(keys, keys[1:], strict=False))
        if self.start is not None and keys[0] == self.start:
            pairs.add((_START, self.start))
        for edge in self.edges:
            edge.taken = (edge.source, edge.target) in pairs

    # -- layout

    def _layout(self) -> None:
        tasks = [n for n in self.nodes.values() if n.kind == "task"]
        successors: dict[tuple, list[tuple]] = {}
        for edge in self.edges:
            successors.setdefault(edge.source, []).append(edge.target)
        root = self.start or min(tasks, key=lambda n: n.index).key
        depth = {root: 0}
        queue = deque([root])
        while queue:
            key = queue.popleft()
            for target in successors.get(key, ()):
                if target not in depth and self.nodes[target].kind == "task":
                    depth[target] = depth[key] + 1
                    queue.append(target)
        last = max(depth.values())
        unreachable = [n for n in tasks if n.key not in depth]
        for node in tasks:
            node.layer = depth.get(node.key, last + 1)
        end_layer = last + (2 if unreachable else 1)
        for node in self.nodes.values():
            if node.kind != "task":
                node.layer = end_layer

        columns: list[list[_Node]] = [[] for _ in range(end_layer + 1)]
        for node in sorted(self.nodes.values(), key=lambda n: n.index):
            columns[node.layer].append(node)
        self._order(columns)

        width = max(_text_width(n.label, NAME_SIZE) for n in tasks)
        width = max(width, max(_text_width(n.sub, SMALL_SIZE) for n in tasks))
        task_w = min(max(width + 28, NODE_MIN_W), NODE_MAX_W)
        x = MARGIN + (START_COLUMN_W + START_GAP if self.start is not None else 0)
        self.start_x = MARGIN
        for layer, column in enumerate(columns):
            column_w = max(
                [task_w if n.kind != "end" else END_W for n in column if n.kind != "unknown"]
                + [
                    min(max(_text_width(n.label, NAME_SIZE) + 28, NODE_MIN_W), NODE_MAX_W)
                    for n in column
                    if n.kind == "unknown"
                ],
                default=END_W,
            )
            for node in column:
                node.w, node.h = (
                    (END_W, END_H) if node.kind == "end" else (column_w if node.kind == "unknown" else task_w, NODE_H)
                )
                node.x = x + (column_w - node.w) / 2
            self.content_right = x + column_w
            x += column_w + self._gap_after(layer)

        heights = [sum(n.h for n in c) + GAP_Y * (len(c) - 1) for c in columns]
        body_h = max(heights)
        for column, height in zip(columns, heights, strict=True):
            y = (body_h - height) / 2
            for node in column:
                node.y = y
                y += node.h + GAP_Y
        self.columns = columns
        self._route()
        above = max((e.lane + 1 for e in self.edges if e.route == "above"), default=0)
        below = max((e.lane + 1 for e in self.edges if e.route == "below"), default=0)
        loops = any(e.route == "loop" for e in self.edges)
        top = MARGIN + (LANE_FIRST + (above - 1) * LANE_STEP + LABEL_H / 2 if above else 0)
        top = max(top, MARGIN + (LOOP_H + LABEL_H / 2 if loops else 0))
        for node in self.nodes.values():
            node.y += top
        self.body_top, self.body_bottom = top, top + body_h
        self.lanes_bottom = self.body_bottom + (LANE_FIRST + (below - 1) * LANE_STEP + LABEL_H / 2 if below else 0)

    def _gap_after(self, layer: int) -> float:
        """Room after a column for the labels of the edges to the next one, which sit halfway."""
        labels = [
            _text_width(e.label, SMALL_SIZE) + 8
            for e in self.edges
            if e.kind != "start" and self.nodes[e.source].layer == layer and self.nodes[e.target].layer == layer + 1
        ]
        return max([GAP_MIN, *(width + 2 * LABEL_PAD for width in labels)])

    def _order(self, columns: list[list[_Node]]) -> None:
        """Order each column by the mean position of its nodes' predecessors, which uncrosses most edges."""
        position = {n.key: i - (len(c) - 1) / 2 for c in columns for i, n in enumerate(c)}
        if self.start is not None:
            position[_START] = position[self.start]
        predecessors: dict[tuple, list[tuple]] = {}
        for edge in self.edges:
            predecessors.setdefault(edge.target, []).append(edge.source)
        for layer, column in enumerate(columns):
            if layer == 0:
                continue

            def weight(node: _Node, layer: int = layer) -> tuple:
                before = [
                    position[p] for p in predecessors.get(node.key, ()) if p == _START or self.nodes[p].layer < layer
                ]
                if node.kind == "end":
                    return (0, 0.0, 0)  # the end first: edges to "unknown" nodes are errors
                return (0, sum(before) / len(before), node.index) if before else (1, 0.0, node.index)

            column.sort(key=weight)
            for i, node in enumerate(column):
                position[node.key] = i - (len(column) - 1) / 2

    def _route(self) -> None:
        """Choose how each edge is drawn; an edge that would cross a task goes around the tasks in a lane."""
        lanes = {"above": 0, "below": 0}
        between: dict[frozenset, list[_Edge]] = {}
        for edge in self.edges:
            if edge.kind == "start":
                continue
            source, target = self.nodes[edge.source], self.nodes[edge.target]
            if source is target:
                edge.route = "loop"
                continue
            if target.layer > source.layer and not self._crosses_a_task(edge):
                edge.route = "direct"
                between.setdefault(frozenset((edge.source, edge.target)), []).append(edge)
                continue
            above = self._nodes_beside(source, -1) + self._nodes_beside(target, -1)
            below = self._nodes_beside(source, 1) + self._nodes_beside(target, 1)
            backwards = target.layer <= source.layer
            edge.route = "above" if above < below or (above == below and backwards) else "below"
            edge.lane = lanes[edge.route]
            lanes[edge.route] += 1
        for group in between.values():
            for i, edge in enumerate(group):
                edge.offset = (i - (len(group) - 1) / 2) * 18

    def _nodes_beside(self, node: _Node, direction: int) -> int:
        column = self.columns[node.layer]
        index = column.index(node)
        return index if direction < 0 else len(column) - 1 - index

    def _crosses_a_task(self, edge: _Edge) -> bool:
        source, target = self.nodes[edge.source], self.nodes[edge.target]
        points = _bezier(*self._direct_ends(source, target, 0.0), samples=48)
        for node in self.nodes.values():
            if node is source or node is target:
                continue
            if any(
                node.x - 4 <= x <= node.x + node.w + 4 and node.y - 6 <= y <= node.y + node.h + 6 for x, y in points
            ):
                return True
        return False

    @staticmethod
    def _direct_ends(source: _Node, target: _Node, offset: float) -> tuple[float, float, float, float]:
        return source.x + source.w, source.cy + offset, target.x, target.cy + offset / 2

    # -- drawing

    def svg(self) -> str:
        edges_svg, labels_svg = [], []
        for edge in sorted(self.edges, key=lambda e: e.taken):  # the path on top
            shape, label_at = self._edge_shape(edge)
            edges_svg.append(self._edge_svg(edge, shape))
            if edge.label and label_at is not None:
                labels_svg.append(self._label_svg(edge, *label_at))
        nodes_svg = [self._node_svg(n) for n in sorted(self.nodes.values(), key=lambda n: n.index)]
        if self.start is not None:
            nodes_svg.append(self._start_svg())
        legend, legend_w, legend_h = self._legend(max(self.content_right - MARGIN, LEGEND_MIN_W))
        width = max(self.content_right + MARGIN, legend_w + 2 * MARGIN)
        height = self.lanes_bottom + MARGIN + legend_h + MARGIN
        title = "Flow graph" + (": the path the run took is highlighted" if self.highlight else "")
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
            f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" aria-label="{_e(title)}" '
            f'font-family="{_e(FONT)}" data-flow-graph="{self.uid}" style="max-width:100%;height:auto">'
            f"<title>{_e(title)}</title>"
            f"<defs>{self._markers()}</defs>"
            f'<rect x="0.5" y="0.5" width="{_n(width - 1)}" height="{_n(height - 1)}" rx="6" fill="#ffffff" '
            f'stroke="#dee2e6"/>'
            f"{''.join(edges_svg)}{''.join(nodes_svg)}{''.join(labels_svg)}"
            f'<g transform="translate({MARGIN},{_n(height - MARGIN - legend_h + 4)})">{legend}</g>'
            "</svg>"
        )

    def _markers(self) -> str:
        colours = sorted({e.colour for e in self.edges})
        return "".join(
            f'<marker id="{self.uid}-arrow-{c[1:]}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" markerUnits="userSpaceOnUse" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
            for c in colours
        )

    def _edge_shape(self, edge: _Edge) -> tuple[str, tuple[float, float, str] | None]:
        """The path data, and where the label goes (x, y, text-anchor)."""
        target = self.nodes[edge.target]
        if edge.kind == "start":
            sx, y = self.start_x + START_COLUMN_W / 2 + 9, target.cy
            return f"M{_n(sx)},{_n(y)} L{_n(target.x)},{_n(y)}", None
        source = self.nodes[edge.source]
        if edge.route == "direct":
            sx, sy, tx, ty = self._direct_ends(source, target, edge.offset)
            mx = (sx + tx) / 2
            d = f"M{_n(sx)},{_n(sy)} C{_n(mx)},{_n(sy)} {_n(mx)},{_n(ty)} {_n(tx)},{_n(ty)}"
            return d, (mx, (sy + ty) / 2, "middle")
        if edge.route == "loop":
            y, right, left = source.y, source.cx + 22, source.cx - 22
            top = y - LOOP_H
            d = f"M{_n(right)},{_n(y)} C{_n(right + 26)},{_n(top)} {_n(left - 26)},{_n(top)} {_n(left)},{_n(y)}"
            return d, (right + 20, top + 6, "start")
        # Around the tasks: out of the source's top (or bottom), along a lane, into the target's.
        up = edge.route == "above"
        lane_y = (
            self.body_top - LANE_FIRST - edge.lane * LANE_STEP
            if up
            else self.body_bottom + LANE_FIRST + edge.lane * LANE_STEP
        )
        shift = (edge.lane % 3 - 1) * 10  # edges of one node leave from different points
        sx, tx = source.cx + shift, target.cx - shift
        if abs(tx - sx) < 2 * CORNER + 4:  # one above the other: leave a horizontal stretch
            sx, tx = source.cx + source.w / 4, target.cx - target.w / 4
        sy = source.y if up else source.y + source.h
        ty = target.y if up else target.y + target.h
        v = 1 if up else -1  # from the lane back towards the tasks
        h = 1 if tx > sx else -1
        d = (
            f"M{_n(sx)},{_n(sy)} L{_n(sx)},{_n(lane_y + v * CORNER)} "
            f"Q{_n(sx)},{_n(lane_y)} {_n(sx + h * CORNER)},{_n(lane_y)} "
            f"L{_n(tx - h * CORNER)},{_n(lane_y)} Q{_n(tx)},{_n(lane_y)} {_n(tx)},{_n(lane_y + v * CORNER)} "
            f"L{_n(tx)},{_n(ty)}"
        )
        return d, ((sx + tx) / 2, lane_y, "middle")

    def _edge_svg(self, edge: _Edge, d: str) -> str:
        faded = self.highlight and not edge.taken
        width = 3 if edge.taken else 1.6
        dash = ' stroke-dasharray="6 4"' if edge.dashed else ""
        title = "; ".join(edge.tooltips) or "start"
        if edge.taken:
            title += " (this run went this way)"
        halo = (
            f'<path d="{d}" fill="none" stroke="{HALO}" stroke-width="9" stroke-linecap="round" '
            'stroke-linejoin="round"/>'
            if edge.taken
            else ""
        )
        attributes = ' data-taken="true"' if edge.taken else ""
        attributes += ' opacity="0.45"' if faded else ""
        return (
            f'<g data-edge="{_e(edge.kind)}"{attributes}><title>{_e(title)}</title>{halo}'
            f'<path d="{d}" fill="none" stroke="{edge.colour}" stroke-width="{width}"{dash} '
            f'marker-end="url(#{self.uid}-arrow-{edge.colour[1:]})"/></g>'
        )

    def _label_svg(self, edge: _Edge, x: float, y: float, anchor: str) -> str:
        text = edge.label
        width = _text_width(text, SMALL_SIZE) + 8
        left = x - width / 2 if anchor == "middle" else x - 4
        faded = self.highlight and not edge.taken
        weight = ' font-weight="600"' if edge.taken else ""
        opacity = ' opacity="0.6"' if faded else ""
        return (
            f"<g{opacity}><title>{_e('; '.join(edge.tooltips))}</title>"
            f'<rect x="{_n(left)}" y="{_n(y - LABEL_H / 2)}" width="{_n(width)}" height="{LABEL_H}" rx="3" '
            f'fill="#ffffff" fill-opacity="0.92"/>'
            f'<text x="{_n(x)}" y="{_n(y + 4)}" text-anchor="{anchor}" font-size="{SMALL_SIZE}" '
            f'fill="{edge.colour}"{weight}>{_e(text)}</text></g>'
        )

    def _node_svg(self, node: _Node) -> str:
        if node.kind == "end":
            reached = END in self.path[-1:]
            ring = (
                f'<rect x="{_n(node.x - 4)}" y="{_n(node.y - 4)}" width="{_n(node.w + 8)}" height="{_n(node.h + 8)}" '
                f'rx="{_n(node.h / 2 + 4)}" fill="{HALO}"/>'
                if reached
                else ""
            )
            return (
                f'<g data-node="end"><title>{_e(node.tooltip)}</title>{ring}'
                f'<rect x="{_n(node.x)}" y="{_n(node.y)}" width="{_n(node.w)}" height="{_n(node.h)}" '
                f'rx="{_n(node.h / 2)}" fill="{DARK}"/>'
                f'<text x="{_n(node.cx)}" y="{_n(node.cy + 4.5)}" text-anchor="middle" font-size="{NAME_SIZE}" '
                f'font-weight="600" fill="#ffffff">end</text></g>'
            )
        visits = self.path.count(node.label) if node.kind == "task" else 0
        status = self.statuses.get(node.label) if node.kind == "task" else None
        tooltip = node.tooltip
        if node.kind == "unknown":
            fill, stroke, colour = UNKNOWN_STYLE
        elif status in STATUS_STYLES:
            fill, stroke, colour, word = STATUS_STYLES[status]
            tooltip += f" — {word}" + (f" (ran {visits} times)" if visits > 1 else "")
        elif self.highlight and not visits:
            fill, stroke, colour = NOT_RUN_STYLE
            tooltip += " — not run"
        else:
            fill, stroke, colour = DEFAULT_STYLE
        on_path = bool(visits)
        dash = ' stroke-dasharray="5 3"' if node.kind == "unknown" else ""
        start_ring = ' stroke-width="2.5"' if (node.key == self.start or on_path) else ' stroke-width="1.5"'
        inner = node.w - 20
        badge = ""
        if visits > 1:
            bx, by = node.x + node.w - 4, node.y + 2
            badge = (
                f'<rect x="{_n(bx - 28)}" y="{_n(by - 10)}" width="32" height="17" rx="8.5" fill="{DARK}"/>'
                f'<text x="{_n(bx - 12)}" y="{_n(by + 3)}" text-anchor="middle" font-size="{SMALL_SIZE}" '
                f'fill="#ffffff">×{visits}</text>'
            )
        data_status = f' data-status="{_e(status)}"' if status else ""
        return (
            f'<g data-node="{_e(node.kind)}" data-task="{_e(node.label)}"{data_status}><title>{_e(tooltip)}</title>'
            f'<rect x="{_n(node.x)}" y="{_n(node.y)}" width="{_n(node.w)}" height="{_n(node.h)}" rx="9" '
            f'fill="{fill}" stroke="{stroke}"{start_ring}{dash}/>'
            f'<text x="{_n(node.cx)}" y="{_n(node.y + 22)}" text-anchor="middle" font-size="{NAME_SIZE}" '
            f'font-weight="600" fill="{colour}">{_e(_fit(node.label, inner, NAME_SIZE))}</text>'
            f'<text x="{_n(node.cx)}" y="{_n(node.y + 39)}" text-anchor="middle" font-size="{SMALL_SIZE}" '
            f'fill="{MUTED if node.kind == "task" else colour}">{_e(_fit(node.sub, inner, SMALL_SIZE))}</text>'
            f"{badge}</g>"
        )

    def _start_svg(self) -> str:
        node = self.nodes[self.start]
        cx, cy = self.start_x + START_COLUMN_W / 2, node.cy
        return (
            f'<g data-node="start"><title>The flow starts with {_e(node.label)}</title>'
            f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="9" fill="{DARK}"/>'
            f'<text x="{_n(cx)}" y="{_n(cy + 26)}" text-anchor="middle" font-size="{SMALL_SIZE}" '
            f'fill="{MUTED}">start</text></g>'
        )

    def _legend(self, max_width: float) -> tuple[str, float, float]:
        """A key to the edge kinds and task colours in this picture; return it, its width and its height."""
        items: list[tuple[str, str]] = []  # (swatch SVG at x=0, text)
        kinds = {(e.colour, e.dashed, e.kind) for e in self.edges}
        if any(k == "match" and c == GREEN for c, _, k in kinds):
            items.append((_line_swatch(GREEN, False), "condition met"))
        if any(k == "match" and c == RED for c, _, k in kinds):
            items.append((_line_swatch(RED, False), "condition on failure met"))
        if (GREY, True, "fallback") in kinds:
            items.append((_line_swatch(GREY, True), "else: no condition met"))
        if (RED, True, "fallback") in kinds:
            items.append((_line_swatch(RED, True), "step failed"))
        if (GREEN, True, "fallback") in kinds:
            items.append((_line_swatch(GREEN, True), "step succeeded"))
        if any(k == "end" for _, _, k in kinds):
            items.append((_line_swatch(GREY, False), "no condition: the flow ends"))
        if self.highlight:
            items.append((_line_swatch(GREEN, False, halo=True), "the way this run went"))
            shown = {s for s in self.statuses.values() if s in STATUS_STYLES}
            for status, (fill, stroke, _, word) in STATUS_STYLES.items():
                if status in shown:
                    items.append((_box_swatch(fill, stroke), word))
            items.append((_box_swatch(*NOT_RUN_STYLE[:2]), "not run"))
        if any(n.kind == "unknown" for n in self.nodes.values()):
            items.append((_box_swatch(UNKNOWN_STYLE[0], RED, dashed=True), "not a task (an error)"))
        parts, x, y, width = [], 0.0, 0.0, 0.0
        for swatch, text in items:
            item_w = 30 + _text_width(text, SMALL_SIZE)
            if x and x + item_w > max_width:
                x, y = 0.0, y + LEGEND_ROW_H  # wrap onto the next row
            parts.append(
                f'<g transform="translate({_n(x)},{_n(y)})">{swatch}<text x="30" y="12" font-size="{SMALL_SIZE}" '
                f'fill="{MUTED}">{_e(text)}</text></g>'
            )
            width = max(width, x + item_w)
            x += item_w + 18
        return "".join(parts), width, (y + LEGEND_ROW_H if parts else 0.0)


def _line_swatch(colour: str, dashed: bool, *, halo: bool = False) -> str:
    dash = ' stroke-dasharray="5 3"' if dashed else ""
    under = f'<path d="M0,8 L24,8" stroke="{HALO}" stroke-width="8" stroke-linecap="round"/>' if halo else ""
    width = 3 if halo else 1.8
    return f'{under}<path d="M0,8 L24,8" stroke="{colour}" stroke-width="{width}"{dash}/>'


def _box_swatch(fill: str, stroke: str, *, dashed: bool = False) -> str:
    dash = ' stroke-dasharray="3 2"' if dashed else ""
    return f'<rect x="2" y="1" width="20" height="14" rx="4" fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/>'


def _bezier(sx: float, sy: float, tx: float, ty: float, *, samples: int) -> list[tuple[float, float]]:
    """Points along the direct edge's curve (control points halfway across, at the ends' heights)."""
    mx = (sx + tx) / 2
    points = []
    for i in range(1, samples):
        t = i / samples
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
        points.append((a * sx + (b + c) * mx + d * tx, (a + b) * sy + (c + d) * ty))
    return points
