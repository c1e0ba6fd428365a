"""The flow graph: an SVG of tasks and conditions, safe to inline, that never fails on a bad definition."""

import copy
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.graph import render_svg

SVG = "{http://www.w3.org/2000/svg}"

CLAIM = {
    "name": "Claim intake",
    "start_task": "extract",
    "tasks": [
        {"name": "extract", "agent": "document-extractor", "input": "{{ input.document }}"},
        {"name": "check", "agent": "policy-checker", "input": {"fields": "{{ steps.extract.output.fields }}"}},
        {"name": "accepted", "agent": "pass"},
        {"name": "manual_review", "agent": "pass"},
    ],
    "conditions": [
        {
            "name": "extracted",
            "source_task": "extract",
            "outcome": "success",
            "target_task_success": "check",
            "target_task_failure": "end",
        },
        {
            "name": "approved",
            "source_task": "check",
            "when": 'output.decision == "approved"',
            "target_task_success": "accepted",
            "target_task_failure": "manual_review",
        },
    ],
}

LOOP = {
    "name": "Retry until ready",
    "start_task": "ask",
    "tasks": [{"name": "ask", "agent": "pass"}, {"name": "wait", "agent": "wait"}, {"name": "done", "agent": "pass"}],
    "conditions": [
        {"name": "asked", "source_task": "ask", "when": "output.ready", "target_task_success": "done",
         "target_task_failure": "wait"},
        {"name": "waited", "source_task": "wait", "outcome": "success", "target_task_success": "ask"},
        {"name": "again", "source_task": "done", "outcome": "failure", "target_task_success": "done"},
    ],
}  # fmt: skip


def parse(svg: str) -> ET.Element:
    """The SVG must be well-formed XML: a stray `<` or `&` from a name would break it."""
    return ET.fromstring(svg)


def groups(root: ET.Element, attribute: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if attribute in g.attrib]


def edges(root: ET.Element) -> list[tuple[str, str, bool]]:
    """(kind, tooltip, taken) for every edge."""
    return [
        (g.get("data-edge"), g.find(f"{SVG}title").text, g.get("data-taken") == "true")
        for g in groups(root, "data-edge")
    ]


def test_render_svg__draws_every_task_with_start_and_end():
    root = parse(render_svg(CLAIM))

    tasks = [g.get("data-task") for g in groups(root, "data-node") if g.get("data-node") == "task"]
    assert tasks == ["extract", "check", "accepted", "manual_review"]
    kinds = {g.get("data-node") for g in groups(root, "data-node")}
    assert kinds == {"task", "end", "start"}
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "start" in texts and "end" in texts
    assert "document-extractor" in texts  # the agent, under the task's name


def test_render_svg__draws_an_edge_per_condition_outcome():
    root = parse(render_svg(CLAIM))

    tooltips = {title: kind for kind, title, _ in edges(root)}
    assert tooltips["Condition extracted: the step's outcome is success → check"] == "match"
    assert tooltips["When the step failed → end"] == "fallback"
    assert tooltips['Condition approved: when output.decision == "approved" → accepted'] == "match"
    assert tooltips["When no condition matched → manual_review"] == "fallback"
    assert tooltips["accepted has no condition: the flow ends"] == "end"
    assert tooltips["manual_review has no condition: the flow ends"] == "end"
    assert tooltips["start"] == "start"
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "success" in labels and "failure" in labels and "else" in labels
    assert 'output.decision == "approved"' in labels


def test_render_svg__shortens_a_long_when_on_its_edge_but_not_in_its_tooltip():
    definition = copy.deepcopy(CLAIM)
    definition["conditions"][1]["when"] = 'output.decision == "approved" && output.amount  <  input.limit'

    root = parse(render_svg(definition))

    assert 'output.decision == "approved" && …' in [t.text for t in root.iter(f"{SVG}text")]
    tooltip = 'Condition approved: when output.decision == "approved" && output.amount < input.limit → accepted'
    assert tooltip in [title for _, title, _ in edges(root)]


def test_render_svg__escapes_every_text():
    definition = copy.deepcopy(CLAIM)
    definition["tasks"][0]["description"] = "<script>alert('x')</script>"
    definition["tasks"][2]["name"] = 'ok & "<b>fine</b>"'
    definition["conditions"][1]["target_task_success"] = 'ok & "<b>fine</b>"'
    definition["conditions"][1]["when"] = 'output.note == "<script>"'

    svg = render_svg(definition, path=["extract", "<img src=x onerror=alert(1)>"], statuses={"<i>": "success"})

    assert "<script" not in svg and "<b>" not in svg and "<img" not in svg and "<i>" not in svg
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in svg
    assert "ok &amp; &quot;&lt;b&gt;fine&lt;/b&gt;&quot;" in svg
    root = parse(svg)
    assert 'ok & "<b>fine</b>"' in [g.get("data-task") for g in groups(root, "data-node")]


def test_render_svg__has_no_script_and_loads_nothing():
    svg = render_svg(CLAIM, path=["extract", "check", "accepted", "end"])

    assert "<script" not in svg.lower() and "javascript:" not in svg.lower()
    assert not re.search(r"(href|src)\s*=", svg)
    assert "url(#" in svg and "url(http" not in svg  # only the arrowheads defined in the SVG itself


def test_render_svg__path_highlights_the_edges_and_tasks_the_run_took():
    statuses = {"extract": "success", "check": "success", "manual_review": "success"}

    root = parse(render_svg(CLAIM, path=["extract", "check", "manual_review", "end"], statuses=statuses))

    taken = sorted(title for _, title, is_taken in edges(root) if is_taken)
    assert taken == [
        "Condition extracted: the step's outcome is success → check (this run went this way)",
        "When no condition matched → manual_review (this run went this way)",
        "manual_review has no condition: the flow ends (this run went this way)",
        "start (this run went this way)",
    ]
    by_task = {g.get("data-task"): g for g in groups(root, "data-node") if g.get("data-node") == "task"}
    assert by_task["check"].get("data-status") == "success"
    assert "not run" in by_task["accepted"].find(f"{SVG}title").text
    assert "the way this run went" in [t.text for t in root.iter(f"{SVG}text")]


def test_render_svg__without_a_path_nothing_is_highlighted():
    root = parse(render_svg(CLAIM))

    assert not any(taken for *_, taken in edges(root))
    assert "not run" not in render_svg(CLAIM)


def test_render_svg__running_and_failed_tasks_have_their_status():
    root = parse(render_svg(CLAIM, path=["extract", "check"], statuses={"extract": "failure", "check": "running"}))

    status = {g.get("data-task"): g.get("data-status") for g in groups(root, "data-node")}
    assert status["extract"] == "failure" and status["check"] == "running" and status["accepted"] is None


def test_render_svg__loops_are_drawn_around_the_tasks():
    svg = render_svg(LOOP, path=["ask", "wait", "ask", "done"], statuses={"ask": "success", "wait": "success"})
    root = parse(svg)

    loop_back = [g for g in groups(root, "data-edge") if g.find(f"{SVG}title").text.startswith("Condition waited")]
    assert len(loop_back) == 1 and loop_back[0].get("data-taken") == "true"
    path_data = [p.get("d") for p in loop_back[0].iter(f"{SVG}path")]
    assert all("Q" in d for d in path_data)  # routed along a lane with rounded corners, not a straight line
    to_itself = [g for g in groups(root, "data-edge") if g.find(f"{SVG}title").text.startswith("Condition again")]
    assert len(to_itself) == 1 and "C" in to_itself[0].find(f"{SVG}path").get("d")
    assert "×2" in [t.text for t in root.iter(f"{SVG}text")]  # "ask" ran twice


def test_render_svg__unreachable_tasks_and_unknown_targets_are_still_drawn():
    definition = copy.deepcopy(CLAIM)
    definition["tasks"].append({"name": "orphan", "agent": "pass"})
    definition["conditions"][0]["target_task_success"] = "chek"

    root = parse(render_svg(definition))

    nodes = {g.get("data-task"): g.get("data-node") for g in groups(root, "data-node")}
    assert nodes["orphan"] == "task"
    assert nodes["chek"] == "unknown"
    assert "not a task (an error)" in [t.text for t in root.iter(f"{SVG}text")]


@pytest.mark.parametrize(
    "definition",
    [
        None,
        "a string",
        [],
        {},
        {"tasks": "x"},
        {"tasks": []},
        {"tasks": [1, None, {"name": 3}, {"name": ""}]},
        {"tasks": [{"name": "end"}]},
        {"tasks": [{"name": "a"}], "conditions": "x"},
        {"tasks": [{"name": "a"}, {"name": "a"}], "start_task": ["a"], "conditions": [{"source_task": "a"}]},
        {"tasks": [{"name": "a", "agent": 5, "description": {}}], "conditions": [None, {"source_task": 1}]},
        {"tasks": [{"name": "a"}], "conditions": [{"source_task": "a", "when": 7, "target_task_success": ["b"]}]},
        {
            "tasks": [{"name": "a"}],
            "start_task": "nope",
            "conditions": [{"source_task": "a", "target_task_success": "a"}],
        },
    ],
)
def test_render_svg__never_fails_on_an_invalid_definition(definition):
    svg = render_svg(definition, path=["a", 3, None], statuses={"a": "weird", 1: 2})

    parse(svg)


def test_render_svg__says_why_it_cannot_draw():
    assert "Cannot draw this flow: the definition is not a JSON object." in render_svg([1, 2])
    assert "Cannot draw this flow: no task has a name." in render_svg({"tasks": [{"agent": "pass"}]})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(["a", "b", "end", "<x>", "success", "failure", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["name", "x"]), inner, max_size=3),
    max_leaves=12,
)
NAME = st.sampled_from(["a", "b", "c", "end", "", "<&>"]) | JSON
TASK = st.fixed_dictionaries({"name": NAME}, optional={"agent": NAME, "description": NAME})
CONDITION = st.fixed_dictionaries(
    {"source_task": NAME},
    optional={
        "name": NAME,
        "outcome": NAME,
        "when": NAME,
        "target_task_success": NAME,
        "target_task_failure": NAME,
    },
)
DEFINITION = st.fixed_dictionaries(
    {"tasks": st.lists(TASK | JSON, max_size=6)},
    optional={"start_task": NAME, "conditions": st.lists(CONDITION | JSON, max_size=8)},
)


@settings(max_examples=300, deadline=None)
@given(definition=DEFINITION | JSON, path=st.lists(NAME, max_size=6))
def test_render_svg__any_json_gives_well_formed_svg(definition, path):
    parse(render_svg(definition, path=path, statuses={"a": "success", "b": "running"}))
