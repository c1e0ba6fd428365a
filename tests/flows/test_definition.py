import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrunner.agents import all_agents
from flows.definition import (
    Condition,
    FlowConcurrency,
    InvalidFlowDefinition,
    NextStep,
    Problem,
    ReferenceNotFound,
    RetryPolicy,
    Task,
    choose_next,
    concurrency_key_value,
    parse_definition,
    resolve_input,
    validate_definition,
)

CLAIM_INTAKE = {
    "name": "Claim intake",
    "start_task": "extract",
    "max_steps": 50,
    "concurrency": {"limit": 1, "key": "input.customer_id", "on_busy": "queue"},
    "tasks": [
        {
            "name": "extract",
            "description": "Pull the policy fields out of the document.",
            "agent": "document-extractor",
            "input": {"text": "{{ input.document }}"},
            "retry": {"max_attempts": 3, "backoff_seconds": 1, "max_backoff_seconds": 60},
            "timeout_seconds": 120,
        },
        {
            "name": "check",
            "agent": "policy-checker",
            "input": {"fields": "{{ steps.extract.output.fields }}", "check_date": "2025-06-01"},
        },
        {"name": "accepted", "agent": "pass", "input": {"result": {"route": "accepted"}}},
        {
            "name": "manual_review",
            "agent": "pass",
            "input": {"result": {"route": "manual review"}, "reasons": "{{ steps.check.output.reasons }}"},
        },
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
            "name": "approved?",
            "source_task": "check",
            "when": 'output.decision == "approved"',
            "target_task_success": "accepted",
            "target_task_failure": "manual_review",
        },
    ],
}

# The sample from the flow-manager reference, exactly.
FLOW_MANAGER_SAMPLE = {
    "name": "Data processing flow",
    "start_task": "task1",
    "tasks": [
        {"name": "task1", "description": "Fetch data"},
        {"name": "task2", "description": "Process data"},
        {"name": "task3", "description": "Store data"},
    ],
    "conditions": [
        {
            "name": "condition_task1_result",
            "description": "Evaluate task1. If success -> task2, else -> end",
            "source_task": "task1",
            "outcome": "success",
            "target_task_success": "task2",
            "target_task_failure": "end",
        },
        {
            "name": "condition_task2_result",
            "description": "Evaluate task2. If success -> task3, else -> end",
            "source_task": "task2",
            "outcome": "success",
            "target_task_success": "task3",
            "target_task_failure": "end",
        },
    ],
}


def claim_intake(**changes) -> dict:
    definition = copy.deepcopy(CLAIM_INTAKE)
    definition.update(changes)
    return definition


def with_task(index: int, **changes) -> dict:
    definition = claim_intake()
    definition["tasks"][index].update(changes)
    return definition


def with_condition(index: int, **changes) -> dict:
    definition = claim_intake()
    definition["conditions"][index].update(changes)
    for key, value in changes.items():
        if value is None:
            del definition["conditions"][index][key]
    return definition


def errors(definition) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in validate_definition(definition):
        if problem.severity == "error":
            found.setdefault(problem.path, []).append(problem.message)
    return found


def warnings(definition) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in validate_definition(definition):
        if problem.severity == "warning":
            found.setdefault(problem.path, []).append(problem.message)
    return found


def assert_only_error(definition, path: str, fragment: str = ""):
    found = errors(definition)
    assert list(found) == [path], found
    assert any(fragment in message for message in found[path]), found


# Validation: valid definitions


def test_validate_definition__claim_intake_has_no_problems():
    assert validate_definition(CLAIM_INTAKE) == []


def test_validate_definition__flow_manager_sample_names_no_agents_so_each_task_is_an_unknown_agent():
    found = errors(FLOW_MANAGER_SAMPLE)
    assert list(found) == ["tasks[0].agent", "tasks[1].agent", "tasks[2].agent"]
    assert "unknown agent 'task1'" in found["tasks[0].agent"][0]
    assert "the task name is used" in found["tasks[0].agent"][0]
    assert "valid agents: " + ", ".join(all_agents()) in found["tasks[0].agent"][0]


def test_validate_definition__flow_manager_sample_with_agents_declared_is_valid():
    definition = copy.deepcopy(FLOW_MANAGER_SAMPLE)
    for task, agent in zip(definition["tasks"], ["pass", "pass", "pass"], strict=True):
        task["agent"] = agent
    assert validate_definition(definition) == []


def test_validate_definition__flow_manager_file_with_tasks_named_after_agents_is_valid():
    definition = {
        "name": "Agents by name",
        "start_task": "document-extractor",
        "tasks": [{"name": "document-extractor"}, {"name": "policy-checker"}, {"name": "pass"}],
        "conditions": [
            {
                "name": "c1",
                "source_task": "document-extractor",
                "outcome": "success",
                "target_task_success": "policy-checker",
                "target_task_failure": "end",
            },
            {
                "name": "c2",
                "source_task": "policy-checker",
                "outcome": "success",
                "target_task_success": "pass",
                "target_task_failure": "end",
            },
        ],
    }
    assert validate_definition(definition) == []


def test_validate_definition__a_single_task_needs_no_conditions():
    assert validate_definition({"name": "One", "start_task": "pass", "tasks": [{"name": "pass"}]}) == []


def test_validate_definition__null_optional_keys_mean_defaults():
    definition = claim_intake(max_steps=None, concurrency=None, conditions=None)
    definition["tasks"][0].update(retry=None, timeout_seconds=None, description=None)
    assert errors(definition) == {}


def test_validate_definition__loops_back_to_earlier_tasks_are_allowed():
    definition = claim_intake()
    definition["conditions"][1]["target_task_failure"] = "extract"
    assert errors(definition) == {}


# Validation: one error each, at its exact path


@pytest.mark.parametrize(
    ("definition", "path", "fragment"),
    [
        ([], "", "must be a JSON object"),
        ("flow", "", "must be a JSON object"),
        (claim_intake(name=None), "name", "non-empty string"),
        (claim_intake(name="  "), "name", "non-empty string"),
        (claim_intake(name=5), "name", "non-empty string"),
        (claim_intake(description=["x"]), "description", "must be a string"),
        (claim_intake(start_task=None), "start_task", "required"),
        (claim_intake(start_task="nope"), "start_task", "'nope' is not a task; tasks: accepted, check, extract"),
        (claim_intake(conditions={"a": 1}), "conditions", "must be a list"),
        (claim_intake(max_steps=0), "max_steps", "from 1 to 10000"),
        (claim_intake(max_steps=10_001), "max_steps", "from 1 to 10000"),
        (claim_intake(max_steps="5"), "max_steps", "from 1 to 10000"),
        (claim_intake(max_steps=True), "max_steps", "from 1 to 10000"),
        (claim_intake(max_steps=2.5), "max_steps", "from 1 to 10000"),
    ],
)
def test_validate_definition__top_level_errors(definition, path, fragment):
    assert_only_error(definition, path, fragment)


def test_validate_definition__max_steps_limit_lowers_what_the_author_may_ask_for():
    assert validate_definition(claim_intake(max_steps=20), max_steps_limit=20) == []
    problems = validate_definition(claim_intake(max_steps=21), max_steps_limit=20)
    assert [(p.path, p.severity) for p in problems] == [("max_steps", "error")]
    assert "from 1 to 20 (the most you may ask for" in problems[0].message
    # Left out, max_steps would be the default (100): more than this author may ask for.
    problems = validate_definition(claim_intake(max_steps=None), max_steps_limit=20)
    assert [(p.path, p.severity) for p in problems] == [("max_steps", "error")]
    assert "the default is 100" in problems[0].message
    assert validate_definition(claim_intake(max_steps=None), max_steps_limit=100) == []


@pytest.mark.parametrize(
    ("tasks", "fragment"),
    [(None, "required"), ({"name": "x"}, "must be a list"), ([], "at least one task")],
)
def test_validate_definition__tasks_must_be_a_non_empty_list(tasks, fragment):
    found = errors(claim_intake(tasks=tasks))
    assert "tasks" in found
    assert fragment in found["tasks"][0]


def test_validate_definition__task_that_is_not_an_object():
    definition = claim_intake()
    definition["tasks"].append("cleanup")
    assert_only_error(definition, "tasks[4]", "must be an object, not a string")


@pytest.mark.parametrize(
    ("changes", "path", "fragment"),
    [
        ({"description": 3}, "tasks[2].description", "must be a string"),
        ({"agent": "checker"}, "tasks[2].agent", "unknown agent 'checker'; valid agents: document-extractor"),
        ({"agent": ""}, "tasks[2].agent", "non-empty string"),
        ({"input": ["a"]}, "tasks[2].input", "must be an object, not a list"),
        ({"input": "text"}, "tasks[2].input", "must be an object"),
        ({"retry": 3}, "tasks[2].retry", "must be an object"),
        ({"retry": {"max_attempts": 0}}, "tasks[2].retry.max_attempts", "from 1 to 100"),
        ({"retry": {"max_attempts": 2.0}}, "tasks[2].retry.max_attempts", "whole number"),
        ({"retry": {"backoff_seconds": 0}}, "tasks[2].retry.backoff_seconds", "above 0"),
        ({"retry": {"backoff_seconds": "1"}}, "tasks[2].retry.backoff_seconds", "above 0"),
        ({"retry": {"backoff_seconds": float("nan")}}, "tasks[2].retry.backoff_seconds", "above 0"),
        (
            {"retry": {"backoff_seconds": 10, "max_backoff_seconds": 5}},
            "tasks[2].retry.max_backoff_seconds",
            "from backoff_seconds (10)",
        ),
        ({"retry": {"max_backoff_seconds": 0.5}}, "tasks[2].retry.max_backoff_seconds", "from backoff_seconds (2)"),
        ({"timeout_seconds": 0}, "tasks[2].timeout_seconds", "above 0"),
        ({"timeout_seconds": -1}, "tasks[2].timeout_seconds", "above 0"),
        ({"timeout_seconds": 86_401}, "tasks[2].timeout_seconds", "at most 86400"),
        ({"timeout_seconds": "60"}, "tasks[2].timeout_seconds", "above 0"),
        ({"timeout_seconds": float("inf")}, "tasks[2].timeout_seconds", "above 0"),
    ],
)
def test_validate_definition__task_errors(changes, path, fragment):
    assert_only_error(with_task(2, **changes), path, fragment)


@pytest.mark.parametrize(
    ("extra_task", "fragment"),
    [
        ({"agent": "pass"}, "required"),
        ({"name": "", "agent": "pass"}, "non-empty string"),
        ({"name": "end", "agent": "pass"}, "reserved"),
        ({"name": "extract", "agent": "pass"}, "duplicate task name 'extract' (also tasks[0])"),
    ],
)
def test_validate_definition__task_name_errors(extra_task, fragment):
    definition = claim_intake()
    definition["tasks"].append(extra_task)
    assert_only_error(definition, "tasks[4].name", fragment)


@pytest.mark.parametrize(
    ("concurrency", "path", "fragment"),
    [
        ("one", "concurrency", "must be an object"),
        ({"key": "flow"}, "concurrency.limit", "required"),
        ({"limit": 0}, "concurrency.limit", "1 or more"),
        ({"limit": True}, "concurrency.limit", "1 or more"),
        ({"limit": 2**31}, "concurrency.limit", "at most 2147483647"),
        ({"limit": 1, "on_busy": "drop"}, "concurrency.on_busy", "one of: queue, reject"),
        ({"limit": 1, "key": "customer_id"}, "concurrency.key", 'must be "flow" or "input.<field>"'),
        ({"limit": 1, "key": "input"}, "concurrency.key", "not the whole input"),
        ({"limit": 1, "key": "steps.extract.output"}, "concurrency.key", 'must be "flow" or "input.<field>"'),
        ({"limit": 1, "key": "input..id"}, "concurrency.key", "not a dotted path"),
        ({"limit": 1, "key": 7}, "concurrency.key", "not a number"),
    ],
)
def test_validate_definition__concurrency_errors(concurrency, path, fragment):
    assert_only_error(claim_intake(concurrency=concurrency), path, fragment)


@pytest.mark.parametrize(
    ("key", "expected"),
    [(None, None), ("flow", None), ("input.customer_id", "customer_id"), ("input.customer.ids[0]", "customer.ids[0]")],
)
def test_parse_definition__concurrency_key_path(key, expected):
    definition = claim_intake(concurrency={"limit": 2, "key": key, "on_busy": "reject"})
    assert parse_definition(definition).concurrency == FlowConcurrency(limit=2, on_busy="reject", key_path=expected)


@pytest.mark.parametrize(
    ("index", "changes", "path", "fragment"),
    [
        (0, {"name": None}, "conditions[0].name", "required"),
        (1, {"name": "extracted"}, "conditions[1].name", "duplicate condition name 'extracted' (also conditions[0])"),
        (0, {"description": 1}, "conditions[0].description", "must be a string"),
        (0, {"source_task": None}, "conditions[0].source_task", "required"),
        (0, {"source_task": "fetch"}, "conditions[0].source_task", "'fetch' is not a task"),
        (0, {"target_task_success": None}, "conditions[0].target_task_success", "required"),
        (
            0,
            {"target_task_success": "finish"},
            "conditions[0].target_task_success",
            "'finish' is not a task nor \"end\"",
        ),
        (0, {"target_task_success": 3}, "conditions[0].target_task_success", "must be a task name"),
        (1, {"target_task_failure": "review"}, "conditions[1].target_task_failure", "'review' is not a task"),
        (0, {"when": "output != null"}, "conditions[0]", 'either "outcome" or "when", not both'),
        (0, {"outcome": None}, "conditions[0]", 'needs a test: "outcome"'),
        (0, {"outcome": "succeeded"}, "conditions[0].outcome", "one of: success, failure"),
        (1, {"when": 'output.decision = "approved"'}, "conditions[1].when", "syntax error at line 1, column 17"),
        (1, {"when": "output.decision =="}, "conditions[1].when", "unexpected end of expression"),
        (1, {"when": "   "}, "conditions[1].when", "empty expression"),
        (1, {"when": ["output"]}, "conditions[1].when", "must be a string"),
        (1, {"when": 'outptu.decision == "approved"'}, "conditions[1].when", "unknown variable 'outptu'"),
    ],
)
def test_validate_definition__condition_errors(index, changes, path, fragment):
    assert_only_error(with_condition(index, **changes), path, fragment)


def test_validate_definition__condition_that_is_not_an_object():
    assert_only_error(
        claim_intake(conditions=[CLAIM_INTAKE["conditions"][0], "x"]), "conditions[1]", "must be an object"
    )


def test_validate_definition__target_task_failure_may_be_omitted():
    assert errors(with_condition(0, target_task_failure=None)) == {}


# Validation: templates in task inputs


@pytest.mark.parametrize(
    ("task_input", "path", "fragment"),
    [
        ({"text": "{{ }}"}, "tasks[0].input.text", "empty reference"),
        ({"text": "{{input.document"}, "tasks[0].input.text", "unclosed"),
        ({"text": "{{ inputs.document }}"}, "tasks[0].input.text", "must start with 'input' or 'steps.<task>'"),
        ({"text": "{{ steps.fetch.output.text }}"}, "tasks[0].input.text", "unknown task 'fetch'"),
        ({"text": "{{ steps.check.result }}"}, "tasks[0].input.text", "must continue with .output or .status"),
        ({"text": "Doc: {{ input.doc }} / {{ step.x }}"}, "tasks[0].input.text", "must start with 'input'"),
        ("{{ steps.nope.output }}", "tasks[0].input", "unknown task 'nope'"),
        ("{{ nope }}", "tasks[0].input", "must start with 'input'"),
    ],
)
def test_validate_definition__reference_errors_in_input(task_input, path, fragment):
    assert_only_error(with_task(0, input=task_input), path, fragment)


def test_validate_definition__reference_errors_inside_nested_lists_and_objects():
    definition = with_task(3, input={"result": {"notes": ["ok", "{{ steps.nope.output }}"]}})
    assert_only_error(definition, "tasks[3].input.result.notes[1]", "unknown task 'nope'")


def test_validate_definition__whole_input_may_be_one_reference():
    assert errors(with_task(3, input="{{ input }}")) == {}
    assert errors(with_task(3, input="{{ steps.check.output }}")) == {}


def test_validate_definition__references_may_name_any_task_including_later_ones():
    assert errors(with_task(0, input={"text": "{{ steps.manual_review.status }}"})) == {}


# Validation: static input against the agent's input schema


def wait_flow(task_input) -> dict:
    return {"name": "Wait", "start_task": "pause", "tasks": [{"name": "pause", "agent": "wait", "input": task_input}]}


def test_validate_definition__static_value_failing_the_agent_schema_is_an_error():
    assert_only_error(wait_flow({"seconds": "abc"}), "tasks[0].input.seconds", "'abc' is not of type 'number'")
    assert_only_error(wait_flow({"seconds": 7200}), "tasks[0].input.seconds", "7200 is greater than the maximum")


def test_validate_definition__templated_value_is_not_checked_against_the_schema():
    assert validate_definition(wait_flow({"seconds": "{{ input.seconds }}"})) == []
    assert validate_definition(wait_flow({"seconds": "{{ input.seconds }}s"})) == []


def test_validate_definition__unknown_static_key_is_an_error_even_with_a_templated_value():
    assert_only_error(wait_flow({"secs": "{{ input.seconds }}"}), "tasks[0].input", "'secs' was unexpected")


def test_validate_definition__missing_required_property_is_only_a_warning():
    assert errors(wait_flow({})) == {}
    assert warnings(wait_flow({})) == {
        "tasks[0].input": ["'seconds' is a required property: the agent will refuse this input"]
    }


def test_validate_definition__task_without_input_is_not_checked_against_the_schema():
    assert validate_definition({"name": "W", "start_task": "wait", "tasks": [{"name": "wait"}]}) == []


def test_validate_definition__nested_static_values_are_checked_and_templates_inside_them_are_not():
    found = errors(with_task(1, input={"fields": {"premium": -1, "currency": "{{ input.currency }}"}}))
    assert list(found) == ["tasks[1].input.fields.premium"]
    assert errors(with_task(1, input={"fields": {"premium": "{{ input.premium }}"}})) == {}


def test_validate_definition__static_list_items_are_checked_by_index():
    definition = with_task(1, input={"required_fields": ["premium", "{{ input.extra }}", ""]})
    assert_only_error(definition, "tasks[1].input.required_fields[2]", "should be non-empty")


def test_validate_definition__schema_errors_do_not_quote_long_values():
    definition = with_task(0, input={"text": "x" * 2000, "pdf_base64": 5})
    message = errors(definition)["tasks[0].input.pdf_base64"][0]
    assert message == "5 is not of type 'string'"
    long_text = "y" * 2000
    definition = with_task(1, input={"check_date": long_text})
    (message,) = errors(definition)["tasks[1].input.check_date"]
    assert len(message) < 200


# Validation: warnings


def test_validate_definition__unreachable_task_is_a_warning():
    definition = claim_intake()
    definition["tasks"].append({"name": "orphan", "agent": "pass"})
    assert errors(definition) == {}
    assert warnings(definition) == {"tasks[4]": ["task 'orphan' is unreachable from start_task 'extract'"]}


def test_validate_definition__tasks_after_a_task_without_conditions_are_unreachable():
    definition = {"name": "N", "start_task": "pass", "tasks": [{"name": "pass"}, {"name": "wait"}]}
    assert list(warnings(definition)) == ["tasks[1]"]


def test_validate_definition__unknown_keys_are_warnings():
    definition = claim_intake(owner="ops")
    definition["tasks"][0]["retries"] = 3
    definition["tasks"][0]["retry"]["jitter"] = True
    definition["conditions"][0]["priority"] = 1
    definition["concurrency"]["scope"] = "global"
    assert errors(definition) == {}
    assert sorted(warnings(definition)) == [
        "concurrency.scope",
        "conditions[0].priority",
        "owner",
        "tasks[0].retries",
        "tasks[0].retry.jitter",
    ]
    assert warnings(definition)["owner"] == ["unknown key 'owner' is ignored"]


def test_validate_definition__failure_target_of_a_condition_that_is_not_the_last_is_a_warning():
    definition = claim_intake()
    definition["conditions"].insert(
        1,
        {
            "name": "rejected?",
            "source_task": "check",
            "when": 'output.decision == "rejected"',
            "target_task_success": "end",
            "target_task_failure": "accepted",
        },
    )
    assert errors(definition) == {}
    assert list(warnings(definition)) == ["conditions[1].target_task_failure"]
    assert "the last one (conditions[2]) decides" in warnings(definition)["conditions[1].target_task_failure"][0]


def test_validate_definition__reports_every_problem_at_once():
    definition = claim_intake(start_task="nope", max_steps=0)
    definition["tasks"][1]["agent"] = "checker"
    definition["conditions"][1]["when"] = "output.decision =="
    assert sorted(errors(definition)) == ["conditions[1].when", "max_steps", "start_task", "tasks[1].agent"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
NAMES = st.sampled_from(["extract", "check", "pass", "end", "wait", "", "x"]) | JSON
TASK = st.fixed_dictionaries(
    {},
    optional={
        "name": NAMES,
        "agent": NAMES,
        "input": JSON | st.just({"text": "{{ input.a }}"}) | st.just({"seconds": "{{ steps.x.output"}),
        "retry": JSON | st.fixed_dictionaries({}, optional={"max_attempts": JSON, "backoff_seconds": JSON}),
        "timeout_seconds": JSON,
    },
)
CONDITION = st.fixed_dictionaries(
    {},
    optional={
        "name": NAMES,
        "source_task": NAMES,
        "outcome": NAMES,
        "when": JSON | st.sampled_from(["output.x == 1", "1 +", "nosuch", 'status == "success"']),
        "target_task_success": NAMES,
        "target_task_failure": NAMES,
    },
)
DEFINITION = st.fixed_dictionaries(
    {},
    optional={
        "name": JSON,
        "start_task": NAMES,
        "tasks": st.lists(TASK | JSON, max_size=4) | JSON,
        "conditions": st.lists(CONDITION | JSON, max_size=4) | JSON,
        "concurrency": JSON | st.fixed_dictionaries({}, optional={"limit": JSON, "key": NAMES, "on_busy": NAMES}),
        "max_steps": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(DEFINITION | JSON)
def test_validate_definition__never_raises_and_parse_agrees(definition):
    problems = validate_definition(definition)
    assert all(isinstance(p, Problem) and p.severity in ("error", "warning") for p in problems)
    if any(p.severity == "error" for p in problems):
        with pytest.raises(InvalidFlowDefinition):
            parse_definition(definition)
    else:
        parse_definition(definition)


def test_problem__as_dict():
    problem = Problem("tasks[0].agent", "unknown agent 'x'", "error")
    assert problem.as_dict() == {"path": "tasks[0].agent", "message": "unknown agent 'x'", "severity": "error"}


# Parsing


def test_parse_definition__builds_tasks_conditions_and_settings():
    flow = parse_definition(CLAIM_INTAKE)
    assert flow.name == "Claim intake"
    assert flow.start_task == "extract"
    assert flow.max_steps == 50
    assert list(flow.tasks) == ["extract", "check", "accepted", "manual_review"]
    assert flow.tasks["extract"] == Task(
        name="extract",
        description="Pull the policy fields out of the document.",
        agent="document-extractor",
        input={"text": "{{ input.document }}"},
        retry=RetryPolicy(max_attempts=3, backoff_seconds=1, max_backoff_seconds=60),
        timeout_seconds=120,
    )
    assert flow.conditions[1] == Condition(
        name="approved?",
        source_task="check",
        outcome=None,
        when='output.decision == "approved"',
        target_task_success="accepted",
        target_task_failure="manual_review",
    )
    assert flow.concurrency == FlowConcurrency(limit=1, on_busy="queue", key_path="customer_id")


def test_parse_definition__defaults():
    flow = parse_definition(
        {
            "name": "Minimal",
            "start_task": "pass",
            "tasks": [{"name": "pass"}, {"name": "second", "agent": "pass"}],
            "conditions": [{"name": "c", "source_task": "pass", "outcome": "success", "target_task_success": "second"}],
        }
    )
    # The platform's retries (5 attempts, after 2, 4, 8, 16 s): the `pass` agent says nothing else.
    assert flow.tasks["pass"] == Task(
        name="pass", description="", agent="pass", input={}, retry=RetryPolicy(5, 2, 300), timeout_seconds=None
    )
    assert flow.conditions[0].target_task_failure == "end"
    assert flow.concurrency is None
    assert flow.max_steps == 100


def test_parse_definition__a_task_without_retry_retries_as_its_agent_says():
    flow = parse_definition(
        {
            "name": "Agents' own",
            "start_task": "fetch",
            "tasks": [
                {"name": "fetch", "agent": "http-request", "input": {"url": "https://example.com"}},
                {"name": "once", "agent": "http-request", "retry": {"max_attempts": 1}},
            ],
        }
    )
    assert flow.tasks["fetch"].retry == RetryPolicy(3, 2, 300)  # HttpRequestAgent.max_attempts = 3
    assert flow.tasks["once"].retry == RetryPolicy(1, 2, 300)  # the task's own setting wins


def test_parse_definition__concurrency_on_busy_defaults_to_queue():
    assert parse_definition(claim_intake(concurrency={"limit": 3})).concurrency == FlowConcurrency(3, "queue", None)


def test_parse_definition__backoff_above_the_default_cap_raises_the_cap():
    flow = parse_definition(with_task(0, retry={"max_attempts": 2, "backoff_seconds": 600}))
    assert flow.tasks["extract"].retry == RetryPolicy(max_attempts=2, backoff_seconds=600, max_backoff_seconds=600)


def test_parse_definition__copies_the_input_template():
    definition = claim_intake()
    flow = parse_definition(definition)
    definition["tasks"][0]["input"]["text"] = "changed"
    assert flow.tasks["extract"].input == {"text": "{{ input.document }}"}


def test_parse_definition__raises_with_errors_only():
    definition = claim_intake(start_task="nope", owner="ops")
    with pytest.raises(InvalidFlowDefinition) as caught:
        parse_definition(definition)
    assert [(p.path, p.severity) for p in caught.value.problems] == [("start_task", "error")]
    assert "start_task: 'nope' is not a task" in str(caught.value)


def test_invalid_flow_definition__message_names_the_errors_not_the_warnings():
    problems = [Problem("owner", "unknown key 'owner' is ignored", "warning"), Problem("name", "required", "error")]
    assert str(InvalidFlowDefinition(problems)) == "The flow definition is invalid. name: required"


def test_parse_definition__warnings_do_not_prevent_parsing():
    definition = claim_intake(owner="ops")
    definition["tasks"].append({"name": "orphan", "agent": "pass"})
    assert "orphan" in parse_definition(definition).tasks


def test_conditions_for__in_definition_order():
    definition = claim_intake()
    definition["conditions"].append(
        {"name": "later", "source_task": "check", "outcome": "failure", "target_task_success": "end"}
    )
    flow = parse_definition(definition)
    assert [c.name for c in flow.conditions_for("check")] == ["approved?", "later"]
    assert flow.conditions_for("accepted") == []


# Retry policy


def test_retry_policy__delay_doubles_from_the_backoff_up_to_the_cap():
    policy = RetryPolicy(max_attempts=10, backoff_seconds=1.5, max_backoff_seconds=10)
    assert [policy.delay(attempt) for attempt in range(1, 6)] == [1.5, 3.0, 6.0, 10.0, 10.0]


def test_retry_policy__delay_of_a_huge_attempt_is_the_cap():
    assert RetryPolicy(backoff_seconds=1, max_backoff_seconds=300).delay(10_000) == 300.0


def test_retry_policy__attempts_start_at_one():
    with pytest.raises(ValueError):
        RetryPolicy().delay(0)


# Choosing the next task

CLAIM_FLOW = parse_definition(CLAIM_INTAKE)


def next_after(task, *, status="success", output=None, error="", run_input=None, steps=None, flow=CLAIM_FLOW):
    return choose_next(
        flow, task, status=status, output=output, error=error, run_input=run_input or {}, steps=steps or {}
    )


def test_choose_next__success_goes_to_the_success_target():
    assert next_after("extract", output={"fields": {}}) == NextStep(task="check", condition="extracted", errors=())


def test_choose_next__failure_of_a_success_outcome_goes_to_the_failure_target_end():
    assert next_after("extract", status="failure", error="boom") == NextStep(
        task=None, condition="extracted", errors=()
    )


def test_choose_next__task_without_conditions_ends_the_flow():
    assert next_after("accepted", output={"route": "accepted"}) == NextStep(task=None, condition=None, errors=())


def test_choose_next__failure_outcome_routes_failures_to_its_success_target():
    definition = claim_intake()
    definition["conditions"][0] = {
        "name": "extract failed",
        "source_task": "extract",
        "outcome": "failure",
        "target_task_success": "manual_review",
        "target_task_failure": "check",
    }
    flow = parse_definition(definition)
    assert next_after("extract", status="failure", error="unreadable", flow=flow).task == "manual_review"
    assert next_after("extract", status="success", output={}, flow=flow).task == "check"


def test_choose_next__when_on_output_picks_the_branch():
    assert next_after("check", output={"decision": "approved"}) == NextStep("accepted", "approved?", ())
    assert next_after("check", output={"decision": "rejected"}) == NextStep("manual_review", "approved?", ())


def test_choose_next__when_sees_null_output_on_failure():
    assert next_after("check", status="failure", output={"decision": "approved"}).task == "manual_review"


ROUTER = {
    "name": "Router",
    "start_task": "score",
    "tasks": [
        {"name": "score", "agent": "pass"},
        {"name": "low", "agent": "pass"},
        {"name": "medium", "agent": "pass"},
        {"name": "high", "agent": "pass"},
        {"name": "broken", "agent": "pass"},
    ],
    "conditions": [
        {"name": "failed", "source_task": "score", "outcome": "failure", "target_task_success": "broken"},
        {"name": "is low", "source_task": "score", "when": "output.risk < 3", "target_task_success": "low"},
        {"name": "is medium", "source_task": "score", "when": "output.risk < 7", "target_task_success": "medium"},
        {
            "name": "is high",
            "source_task": "score",
            "when": "output.risk < 10",
            "target_task_success": "high",
            "target_task_failure": "end",
        },
    ],
}
ROUTER_FLOW = parse_definition(ROUTER)


@pytest.mark.parametrize(
    ("risk", "task", "condition"),
    [(1, "low", "is low"), (3, "medium", "is medium"), (9, "high", "is high"), (12, None, "is high")],
)
def test_choose_next__several_conditions_first_match_wins_else_last_failure_target(risk, task, condition):
    assert next_after("score", output={"risk": risk}, flow=ROUTER_FLOW) == NextStep(task, condition, ())


def test_choose_next__several_conditions_failure_matched_by_outcome():
    assert next_after("score", status="failure", error="x", flow=ROUTER_FLOW) == NextStep("broken", "failed", ())


def test_choose_next__evaluation_error_is_not_a_match_and_is_reported():
    definition = copy.deepcopy(ROUTER)
    definition["conditions"][1]["when"] = "output.missing == 1"
    flow = parse_definition(definition)
    nxt = next_after("score", output={"risk": 5}, flow=flow)
    assert (nxt.task, nxt.condition) == ("medium", "is medium")
    assert nxt.errors == ("condition 'is low' (output.missing == 1): no such member in mapping: 'missing'",)


def test_choose_next__evaluation_errors_everywhere_fall_back_to_the_last_failure_target():
    nxt = next_after("score", output={"score": 5}, flow=ROUTER_FLOW)
    assert (nxt.task, nxt.condition) == (None, "is high")
    assert len(nxt.errors) == 3


def test_choose_next__non_boolean_when_is_reported():
    definition = copy.deepcopy(ROUTER)
    definition["conditions"][1]["when"] = "output.risk"
    nxt = next_after("score", output={"risk": 1}, flow=parse_definition(definition))
    assert nxt.task == "medium"
    assert "must be true or false" in nxt.errors[0]


def test_choose_next__when_reads_status_error_input_and_steps():
    definition = copy.deepcopy(ROUTER)
    definition["conditions"] = [
        {
            "name": "vip retry",
            "source_task": "score",
            "when": 'status == "failure" && error.contains("timeout") && input.tier == "vip"'
            ' && steps.score.status == "failure"',
            "target_task_success": "score",
            "target_task_failure": "broken",
        }
    ]
    flow = parse_definition(definition)
    steps = {"score": {"status": "failure", "output": None}}
    vip = next_after("score", status="failure", error="timeout", run_input={"tier": "vip"}, steps=steps, flow=flow)
    assert vip.task == "score"
    basic = next_after("score", status="failure", error="timeout", run_input={"tier": "b"}, steps=steps, flow=flow)
    assert basic.task == "broken"


def test_choose_next__unknown_task_or_status_is_a_programming_error():
    with pytest.raises(ValueError, match="no task 'nope'"):
        next_after("nope")
    with pytest.raises(ValueError, match="status must be one of"):
        next_after("extract", status="done")


# Resolving inputs


def test_resolve_input__fills_references_from_run_input_and_steps():
    steps = {"extract": {"status": "success", "output": {"fields": {"premium": 12.5, "currency": "EUR"}}}}
    resolved = resolve_input(
        {
            "fields": "{{ steps.extract.output.fields }}",
            "note": "Premium {{ steps.extract.output.fields.premium }} {{ steps.extract.output.fields.currency }}",
            "nested": [{"first": "{{ input.items[0] }}", "second": "{{ input.items.1 }}"}],
            "static": 3,
        },
        run_input={"items": [{"id": 1}, "two"]},
        steps=steps,
    )
    assert resolved == {
        "fields": {"premium": 12.5, "currency": "EUR"},
        "note": "Premium 12.5 EUR",
        "nested": [{"first": {"id": 1}, "second": "two"}],
        "static": 3,
    }


def test_resolve_input__missing_reference_raises():
    with pytest.raises(ReferenceNotFound) as caught:
        resolve_input(CLAIM_FLOW.tasks["check"].input, run_input={}, steps={})
    assert str(caught.value) == (
        "Cannot resolve {{ steps.extract.output.fields }} (at fields): task 'extract' has not run yet."
    )


# Concurrency key


@pytest.mark.parametrize(
    ("run_input", "expected"),
    [
        ({"customer_id": "c-42"}, "c-42"),
        ({"customer_id": 42}, "42"),
        ({"customer_id": {"b": 1, "a": [2]}}, '{"a":[2],"b":1}'),
        ({"customer_id": None}, "null"),
    ],
)
def test_concurrency_key_value__value_at_the_key_path_as_text(run_input, expected):
    assert concurrency_key_value(CLAIM_FLOW, run_input) == expected


def test_concurrency_key_value__nested_path():
    flow = parse_definition(claim_intake(concurrency={"limit": 1, "key": "input.customer.ids[1]"}))
    assert concurrency_key_value(flow, {"customer": {"ids": ["a", "b"]}}) == "b"


def test_concurrency_key_value__none_for_a_flow_wide_key_or_no_concurrency():
    assert concurrency_key_value(parse_definition(claim_intake(concurrency={"limit": 1, "key": "flow"})), {}) is None
    assert concurrency_key_value(parse_definition(claim_intake(concurrency=None)), {}) is None


def test_concurrency_key_value__missing_value_raises():
    with pytest.raises(ReferenceNotFound) as caught:
        concurrency_key_value(CLAIM_FLOW, {"document": "x"})
    assert caught.value.path == "concurrency.key"
    assert "input has no key 'customer_id'" in str(caught.value)


def test_parsed_definition_round_trips_through_json():
    assert parse_definition(json.loads(json.dumps(CLAIM_INTAKE))) == CLAIM_FLOW


def test_budget__max_tokens_is_parsed_and_bad_values_are_errors_at_their_path():
    base = {"name": "b", "start_task": "a", "tasks": [{"name": "a", "agent": "pass"}]}
    assert parse_definition({**base, "budget": {"max_tokens": 5000}}).token_budget == 5000
    assert parse_definition(base).token_budget is None
    problems = validate_definition({**base, "budget": {"max_tokens": 0}})
    assert [(p.path, p.severity) for p in problems] == [("budget.max_tokens", "error")]
    problems = validate_definition({**base, "budget": 7})
    assert [(p.path, p.severity) for p in problems] == [("budget", "error")]


@pytest.mark.parametrize(
    "extra,path,message",
    [
        ({"tasks": [{"name": f"t{i}", "agent": "pass"} for i in range(201)]}, "tasks", "201 tasks; at most 200"),
        (
            {"conditions": [{"name": f"c{i}", "source_task": "a", "outcome": "success"} for i in range(401)]},
            "conditions",
            "401 conditions; at most 400",
        ),
        (
            {
                "conditions": [
                    {"name": f"c{i}", "source_task": "a", "when": "true && " * 240 + "true"} for i in range(25)
                ]
            },
            "conditions",
            "characters of `when` in all",
        ),
    ],
)
def test_validate_definition__too_large_to_check_cheaply_is_refused_at_once(extra, path, message):
    import time

    definition = {"name": "big", "start_task": "a", "tasks": [{"name": "a", "agent": "pass"}], **extra}
    started = time.monotonic()
    problems = validate_definition(definition)
    assert time.monotonic() - started < 2
    assert [(p.path, p.severity) for p in problems] == [(path, "error")]
    assert message in problems[0].message
