"""Flow definitions: the flow-manager JSON format, extended; validated, parsed and routed without a database.

    {"name": ..., "start_task": ..., "tasks": [...], "conditions": [...],
     "max_steps": 100, "concurrency": {"limit": 1, "key": "input.customer_id", "on_busy": "queue"}}

A task runs an agent (`agent`, defaulting to the task's `name`) on `input`, a template filled in from the
run input and earlier steps (see `flows.references`). After a step, the conditions whose `source_task` is
that task are tried in definition order: the first that matches (its `outcome` equals the step's status,
or its CEL `when` is true) sends the flow to its `target_task_success`; when none matches, the last one's
`target_task_failure` (default "end") decides. A task without conditions ends the flow. With one
`outcome: success` condition per task this is exactly the flow-manager behaviour.

A `when` that fails to evaluate (a missing key, a type mismatch, a non-boolean result) does not match;
`choose_next` returns the error messages in `NextStep.errors` for the engine to record, and carries on.

Optional keys may also be given as null, meaning "use the default".
"""

from __future__ import annotations

import copy
import json
import math
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jsonschema

from agentrunner.agents import base as agent_defaults
from agentrunner.agents.registry import all_agents
from agentrunner.errors import ServiceError
from agentrunner.validators import INT32_MAX
from flows.expressions import ExpressionError, ExpressionTooCostly, compile_expression, evaluate
from flows.references import (
    INPUT,
    STEPS,
    Location,
    Reference,
    ReferenceNotFound,
    ReferenceSyntaxError,
    format_location,
    iter_templates,
    json_kind,
    lookup,
    parse_reference,
    parse_template,
    references_in,
    resolve,
)

__all__ = [
    "END",
    "Condition",
    "FlowConcurrency",
    "FlowDefinition",
    "InvalidFlowDefinition",
    "NextStep",
    "Problem",
    "ReferenceNotFound",
    "RetryPolicy",
    "Task",
    "choose_next",
    "concurrency_key_value",
    "parse_definition",
    "resolve_input",
    "validate_definition",
]

END = "end"  # the target that finishes the flow
SUCCESS = "success"
FAILURE = "failure"
STATUSES = (SUCCESS, FAILURE)
ERROR = "error"
WARNING = "warning"
ON_BUSY_CHOICES = ("queue", "reject")
FLOW_KEY = "flow"  # concurrency.key meaning one key for the whole flow

CONDITION_VARIABLES = frozenset({"output", "status", "error", "input", "steps"})

DEFAULT_MAX_STEPS = 100
MAX_MAX_STEPS = 10_000
MAX_TIMEOUT_SECONDS = 86_400
# A task's retry settings left out are its agent's (agentrunner.agents.base: by default 5 attempts, after 2, 4, 8
# and 16 s); these apply to an agent not registered in this process.
DEFAULT_MAX_ATTEMPTS = agent_defaults.DEFAULT_MAX_ATTEMPTS
MAX_MAX_ATTEMPTS = 100
DEFAULT_BACKOFF_SECONDS = agent_defaults.DEFAULT_BACKOFF_SECONDS
DEFAULT_MAX_BACKOFF_SECONDS = agent_defaults.DEFAULT_MAX_BACKOFF_SECONDS
MAX_BACKOFF_SECONDS = 86_400

_FLOW_KEYS = ("name", "description", "start_task", "max_steps", "concurrency", "budget", "tasks", "conditions")
MAX_TOKEN_BUDGET = 1_000_000_000
# Checking a definition costs time in proportion to its size (conditions are compiled): anyone may ask
# (POST /flows/validate, /flow/execute), so a definition larger than this is refused before it is checked.
MAX_TASKS = 200
MAX_CONDITIONS = 400
MAX_CONDITION_TEXT = 40_000  # characters of `when` in all (~0.3 s to compile)
_TASK_KEYS = ("name", "description", "agent", "input", "retry", "timeout_seconds")
_CONDITION_KEYS = (
    "name",
    "description",
    "source_task",
    "outcome",
    "when",
    "target_task_success",
    "target_task_failure",
)
_RETRY_KEYS = ("max_attempts", "backoff_seconds", "max_backoff_seconds")
_CONCURRENCY_KEYS = ("limit", "key", "on_busy")

# Schema keywords whose verdict on an object or list depends only on its keys, length or type, not on the
# values inside: still meaningful when a value below is a template we cannot know yet.
_STRUCTURAL_KEYWORDS = frozenset(
    {"type", "additionalProperties", "propertyNames", "minProperties", "maxProperties", "minItems", "maxItems"}
)
# Missing properties are warnings, not errors: only present, static values are held against the schema.
_PRESENCE_KEYWORDS = frozenset({"required", "dependentRequired"})
_QUOTE_LIMIT = 80  # characters of a value quoted in a schema error message


@dataclass(frozen=True)
class Problem:
    path: str  # JSON path: "tasks[2].agent", "conditions[0].when"; "" for the definition as a whole
    message: str
    severity: str  # ERROR or WARNING

    def as_dict(self) -> dict:
        return {"path": self.path, "message": self.message, "severity": self.severity}


class InvalidFlowDefinition(ServiceError):
    """The flow definition is invalid."""

    status_code = 400
    code = "invalid_definition"

    def __init__(self, problems: list[Problem]):
        self.problems = problems  # warnings may ride along; the message names the errors
        details = "; ".join(f"{p.path or '(definition)'}: {p.message}" for p in problems if p.severity == ERROR)
        super().__init__(f"{(self.__doc__ or '').strip()} {details}".strip())

    def body(self) -> dict:
        """Errors and warnings by JSON path; the detail counts the errors."""
        errors: dict[str, list[str]] = {}
        warnings: dict[str, list[str]] = {}
        for problem in self.problems:
            (errors if problem.severity == ERROR else warnings).setdefault(problem.path, []).append(problem.message)
        count = sum(len(v) for v in errors.values())
        detail = f"Invalid flow definition: {count} problem{'s' if count != 1 else ''}."
        return {"detail": detail, "code": self.code, "errors": errors, "warnings": warnings}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based): doubling, capped."""
        if attempt < 1:
            raise ValueError(f"attempt must be 1 or more, not {attempt}")
        exponent = min(attempt - 1, 64)  # beyond this every delay is capped anyway; keeps the float finite
        return float(min(self.backoff_seconds * 2**exponent, self.max_backoff_seconds))


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    agent: str
    input: Any  # a template: see flows.references
    retry: RetryPolicy
    timeout_seconds: float | None


@dataclass(frozen=True)
class Condition:
    name: str
    source_task: str
    outcome: str | None
    when: str | None
    target_task_success: str  # a task name or END
    target_task_failure: str  # a task name or END

    def matches(self, *, status: str, variables: dict) -> bool:
        """Return whether this condition holds; raise ExpressionError if `when` cannot be evaluated."""
        if self.outcome is not None:
            return status == self.outcome
        return evaluate(self.when, variables)


@dataclass(frozen=True)
class FlowConcurrency:
    limit: int
    on_busy: str
    key_path: str | None  # "customer_id" for input.customer_id; None: one key for the whole flow


@dataclass(frozen=True)
class FlowDefinition:
    name: str
    start_task: str
    tasks: dict[str, Task]
    conditions: tuple[Condition, ...]
    concurrency: FlowConcurrency | None
    max_steps: int
    token_budget: int | None = None  # `budget.max_tokens`: LLM tokens one run of the flow may use

    @cached_property
    def _conditions_by_task(self) -> dict[str, list[Condition]]:
        by_task: dict[str, list[Condition]] = {}
        for condition in self.conditions:
            by_task.setdefault(condition.source_task, []).append(condition)
        return by_task

    def conditions_for(self, task_name: str) -> list[Condition]:
        return list(self._conditions_by_task.get(task_name, ()))


@dataclass(frozen=True)
class NextStep:
    task: str | None  # None: the flow ends
    condition: str | None  # the condition that decided; None when the task has no conditions
    errors: tuple[str, ...] = ()  # `when` evaluation errors met on the way (those conditions did not match)
    # Set when a `when` went over its evaluation budget: the flow cannot tell where to go, and stops failed.
    too_costly: str | None = None


# Validation


def validate_definition(definition: Any, *, max_steps_limit: int = MAX_MAX_STEPS) -> list[Problem]:
    """Return every problem in the definition, errors and warnings, in document order.

    `max_steps_limit` is the most steps its author may ask for: lower than MAX_MAX_STEPS for some users.
    """
    return _Validator(definition, max_steps_limit=max_steps_limit).run()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _given(mapping: dict, key: str) -> bool:
    return mapping.get(key) is not None


class _Validator:
    def __init__(self, definition: Any, *, max_steps_limit: int = MAX_MAX_STEPS):
        self.definition = definition
        self.max_steps_limit = min(max_steps_limit, MAX_MAX_STEPS)
        self.problems: list[Problem] = []
        self.agents = all_agents()
        self.task_names: set[str] = set()  # every well-formed task name, for references and targets

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, ERROR))

    def warning(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, WARNING))

    def run(self) -> list[Problem]:
        flow = self.definition
        if not isinstance(flow, dict):
            self.error("", f"a flow definition must be a JSON object, not {json_kind(flow)}")
            return self.problems
        if self.too_large(flow):
            return self.problems
        self.unknown_keys(flow, _FLOW_KEYS, "")
        if not _is_name(flow.get("name")):
            self.error("name", "required: a non-empty string")
        if _given(flow, "description") and not isinstance(flow["description"], str):
            self.error("description", "must be a string")
        tasks = flow.get("tasks")
        tasks_ok = isinstance(tasks, list) and bool(tasks)
        if tasks_ok:
            self.task_names = {t["name"] for t in tasks if isinstance(t, dict) and _is_name(t.get("name"))}
            self.task_names.discard(END)
        start = flow.get("start_task")
        if not _is_name(start):
            self.error("start_task", "required: the name of the first task")
        elif tasks_ok and start not in self.task_names:
            self.error("start_task", f"{start!r} is not a task; tasks: {self.task_list()}")
        self.check_max_steps(flow)
        self.check_budget(flow)
        self.check_concurrency(flow)
        if tasks is None:
            self.error("tasks", "required: a non-empty list of tasks")
        elif not isinstance(tasks, list):
            self.error("tasks", f"must be a list of tasks, not {json_kind(tasks)}")
        elif not tasks:
            self.error("tasks", "must contain at least one task")
        else:
            seen: dict[str, int] = {}
            for index, task in enumerate(tasks):
                self.check_task(index, task, seen)
        conditions = flow.get("conditions")
        if conditions is not None and not isinstance(conditions, list):
            self.error("conditions", f"must be a list of conditions, not {json_kind(conditions)}")
        elif conditions:
            self.check_conditions(conditions, check_targets=tasks_ok)
        if tasks_ok and _is_name(start) and start in self.task_names:
            self.check_reachable(tasks, conditions if isinstance(conditions, list) else [], start)
        return self.problems

    def too_large(self, flow: dict) -> bool:
        """Refuse at once a definition too large to check cheaply (every check below grows with it)."""
        tasks, conditions = flow.get("tasks"), flow.get("conditions")
        large = False
        if isinstance(tasks, list) and len(tasks) > MAX_TASKS:
            self.error("tasks", f"too many: {len(tasks):,} tasks; at most {MAX_TASKS}")
            large = True
        if isinstance(conditions, list) and len(conditions) > MAX_CONDITIONS:
            self.error("conditions", f"too many: {len(conditions):,} conditions; at most {MAX_CONDITIONS}")
            large = True
        elif isinstance(conditions, list):
            text = sum(len(c["when"]) for c in conditions if isinstance(c, dict) and isinstance(c.get("when"), str))
            if text > MAX_CONDITION_TEXT:
                self.error(
                    "conditions", f"too long: {text:,} characters of `when` in all; at most {MAX_CONDITION_TEXT:,}"
                )
                large = True
        return large

    def task_list(self) -> str:
        return ", ".join(sorted(self.task_names)) or "(none)"

    def unknown_keys(self, mapping: dict, known: tuple[str, ...], path: str) -> None:
        for key in mapping:
            if key not in known:
                self.warning(f"{path}.{key}" if path else str(key), f"unknown key {key!r} is ignored")

    def check_max_steps(self, flow: dict) -> None:
        value = flow.get("max_steps")
        limit = self.max_steps_limit
        lowered = (
            f" (the most you may ask for; up to {MAX_MAX_STEPS} needs the editor role in the team)"
            if limit < MAX_MAX_STEPS
            else ""
        )
        if value is not None and not (_is_int(value) and 1 <= value <= limit):
            self.error("max_steps", f"must be a whole number from 1 to {limit}{lowered}")
        elif value is None and limit < DEFAULT_MAX_STEPS:
            self.error(
                "max_steps", f"required: a whole number from 1 to {limit}{lowered}; the default is {DEFAULT_MAX_STEPS}"
            )

    def check_budget(self, flow: dict) -> None:
        budget = flow.get("budget")
        if budget is None:
            return
        if not isinstance(budget, dict):
            self.error("budget", f'must be an object like {{"max_tokens": 20000}}, not {json_kind(budget)}')
            return
        self.unknown_keys(budget, ("max_tokens",), "budget")
        value = budget.get("max_tokens")
        if not (_is_int(value) and 1 <= value <= MAX_TOKEN_BUDGET):
            self.error("budget.max_tokens", f"must be a whole number from 1 to {MAX_TOKEN_BUDGET}")

    def check_concurrency(self, flow: dict) -> None:
        concurrency = flow.get("concurrency")
        if concurrency is None:
            return
        if not isinstance(concurrency, dict):
            self.error("concurrency", f"must be an object, not {json_kind(concurrency)}")
            return
        self.unknown_keys(concurrency, _CONCURRENCY_KEYS, "concurrency")
        limit = concurrency.get("limit")
        if not (_is_int(limit) and 1 <= limit <= INT32_MAX):
            self.error("concurrency.limit", f"required: a whole number, 1 or more (at most {INT32_MAX})")
        on_busy = concurrency.get("on_busy")
        if on_busy is not None and on_busy not in ON_BUSY_CHOICES:
            self.error("concurrency.on_busy", f"must be one of: {', '.join(ON_BUSY_CHOICES)}")
        key = concurrency.get("key")
        if key is not None and key != FLOW_KEY:
            try:
                _key_path(key)
            except ValueError as exc:
                self.error("concurrency.key", str(exc))

    def check_task(self, index: int, task: Any, seen: dict[str, int]) -> None:
        path = f"tasks[{index}]"
        if not isinstance(task, dict):
            self.error(path, f"a task must be an object, not {json_kind(task)}")
            return
        self.unknown_keys(task, _TASK_KEYS, path)
        name = task.get("name")
        if not _is_name(name):
            self.error(f"{path}.name", "required: a non-empty string")
        elif name == END:
            self.error(f"{path}.name", f"{END!r} is reserved for the end of the flow")
        elif name in seen:
            self.error(f"{path}.name", f"duplicate task name {name!r} (also tasks[{seen[name]}])")
        else:
            seen[name] = index
        if _given(task, "description") and not isinstance(task["description"], str):
            self.error(f"{path}.description", "must be a string")
        agent_class = self.check_agent(path, task)
        if "input" in task:
            self.check_input(f"{path}.input", task["input"], agent_class)
        self.check_retry(f"{path}.retry", task.get("retry"))
        timeout = task.get("timeout_seconds")
        if timeout is not None and not (_is_number(timeout) and 0 < timeout <= MAX_TIMEOUT_SECONDS):
            self.error(f"{path}.timeout_seconds", f"must be a number of seconds above 0, at most {MAX_TIMEOUT_SECONDS}")

    def check_agent(self, path: str, task: dict) -> type | None:
        explicit = _given(task, "agent")
        agent = task["agent"] if explicit else task.get("name")
        if explicit and not _is_name(agent):
            self.error(f"{path}.agent", "must be a non-empty string: the agent's name")
            return None
        if not _is_name(agent):
            return None  # no name either: reported there
        if agent not in self.agents:
            origin = "" if explicit else ' (no "agent" given, so the task name is used)'
            self.error(f"{path}.agent", f"unknown agent {agent!r}{origin}; valid agents: {', '.join(self.agents)}")
            return None
        return self.agents[agent]

    def check_input(self, path: str, value: Any, agent_class: type | None) -> None:
        if value is None:
            return
        if isinstance(value, str):
            # The whole input may be one reference, e.g. "{{ input }}"; the agent checks it at run time.
            try:
                parsed = parse_template(value)
            except ReferenceSyntaxError as exc:
                self.error(path, str(exc))
                return
            if not isinstance(parsed, Reference):
                self.error(path, "must be an object, or a single {{ reference }} to one")
                return
        elif not isinstance(value, dict):
            self.error(path, f"must be an object, not {json_kind(value)}")
            return
        dynamic: list[Location] = []
        for location, text in iter_templates(value):
            dynamic.append(location)
            where = format_location(location, path)
            try:
                references = references_in(text)
            except ReferenceSyntaxError as exc:
                self.error(where, str(exc))
                continue
            for ref in references:
                if ref.root == STEPS and ref.task not in self.task_names:
                    self.error(
                        where, f"{{{{ {ref.text} }}}} names unknown task {ref.task!r}; tasks: {self.task_list()}"
                    )
        if agent_class is not None and isinstance(value, dict):
            self.check_static_input(path, value, dynamic, agent_class)

    def check_static_input(self, path: str, value: dict, dynamic: list[Location], agent_class: type) -> None:
        """Check the input's static values against the agent's schema; templates are unknown until run time."""
        validator = jsonschema.Draft202012Validator(agent_class.input_schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
        for error in errors:
            location = tuple(error.absolute_path)
            if error.validator in _PRESENCE_KEYWORDS:
                self.warning(format_location(location, path), f"{error.message}: the agent will refuse this input")
                continue
            if any(location[: len(d)] == d for d in dynamic):
                continue  # the value is, or is inside, a template
            if error.validator not in _STRUCTURAL_KEYWORDS and any(d[: len(location)] == location for d in dynamic):
                continue  # the verdict depends on a template below
            self.error(format_location(location, path), _schema_message(error))

    def check_retry(self, path: str, retry: Any) -> None:
        if retry is None:
            return
        if not isinstance(retry, dict):
            self.error(path, f"must be an object, not {json_kind(retry)}")
            return
        self.unknown_keys(retry, _RETRY_KEYS, path)
        attempts = retry.get("max_attempts")
        if attempts is not None and not (_is_int(attempts) and 1 <= attempts <= MAX_MAX_ATTEMPTS):
            self.error(f"{path}.max_attempts", f"must be a whole number from 1 to {MAX_MAX_ATTEMPTS}")
        backoff = retry.get("backoff_seconds")
        if backoff is not None and not (_is_number(backoff) and 0 < backoff <= MAX_BACKOFF_SECONDS):
            self.error(f"{path}.backoff_seconds", f"must be a number of seconds above 0, at most {MAX_BACKOFF_SECONDS}")
            backoff = None
        cap = retry.get("max_backoff_seconds")
        if cap is not None:
            floor = backoff if backoff is not None else DEFAULT_BACKOFF_SECONDS
            if not (_is_number(cap) and floor <= cap <= MAX_BACKOFF_SECONDS):
                self.error(
                    f"{path}.max_backoff_seconds",
                    f"must be a number of seconds from backoff_seconds ({floor}) to {MAX_BACKOFF_SECONDS}",
                )

    def check_conditions(self, conditions: list, *, check_targets: bool) -> None:
        seen: dict[str, int] = {}
        by_source: dict[str, list[int]] = {}
        for index, condition in enumerate(conditions):
            path = f"conditions[{index}]"
            if not isinstance(condition, dict):
                self.error(path, f"a condition must be an object, not {json_kind(condition)}")
                continue
            self.unknown_keys(condition, _CONDITION_KEYS, path)
            name = condition.get("name")
            if not _is_name(name):
                self.error(f"{path}.name", "required: a non-empty string")
            elif name in seen:
                self.error(f"{path}.name", f"duplicate condition name {name!r} (also conditions[{seen[name]}])")
            else:
                seen[name] = index
            if _given(condition, "description") and not isinstance(condition["description"], str):
                self.error(f"{path}.description", "must be a string")
            source = condition.get("source_task")
            if not _is_name(source):
                self.error(f"{path}.source_task", "required: the name of the task this condition follows")
            elif check_targets and source not in self.task_names:
                self.error(f"{path}.source_task", f"{source!r} is not a task; tasks: {self.task_list()}")
            else:
                by_source.setdefault(source, []).append(index)
            self.check_test(path, condition)
            for key, required in (("target_task_success", True), ("target_task_failure", False)):
                self.check_target(f"{path}.{key}", condition.get(key), required=required, check=check_targets)
        self.check_ignored_fallbacks(conditions, by_source)

    def check_test(self, path: str, condition: dict) -> None:
        has_outcome, has_when = _given(condition, "outcome"), _given(condition, "when")
        if has_outcome and has_when:
            self.error(path, 'give either "outcome" or "when", not both')
        elif not (has_outcome or has_when):
            self.error(path, 'needs a test: "outcome" ("success" or "failure") or "when" (a CEL expression)')
        if has_outcome and condition["outcome"] not in STATUSES:
            self.error(f"{path}.outcome", f"must be one of: {', '.join(STATUSES)}")
        if has_when:
            try:
                compiled = compile_expression(condition["when"])
            except ExpressionError as exc:
                self.error(f"{path}.when", str(exc))
                return
            unknown = sorted(compiled.variables - CONDITION_VARIABLES)
            if unknown:
                self.error(
                    f"{path}.when",
                    f"unknown variable {', '.join(map(repr, unknown))}; "
                    f"a condition can read: {', '.join(sorted(CONDITION_VARIABLES))}",
                )

    def check_target(self, path: str, target: Any, *, required: bool, check: bool) -> None:
        if target is None:
            if required:
                self.error(path, f'required: a task name or "{END}"')
        elif not _is_name(target):
            self.error(path, f'must be a task name or "{END}"')
        elif check and target != END and target not in self.task_names:
            self.error(path, f'{target!r} is not a task nor "{END}"; tasks: {self.task_list()}')

    def check_ignored_fallbacks(self, conditions: list, by_source: dict[str, list[int]]) -> None:
        """Warn about a target_task_failure that can never be used: only the task's last condition's is."""
        for source, indexes in by_source.items():
            fallback = conditions[indexes[-1]].get("target_task_failure") or END
            for index in indexes[:-1]:
                target = conditions[index].get("target_task_failure")
                if target is not None and target != fallback:
                    self.warning(
                        f"conditions[{index}].target_task_failure",
                        f"ignored: when no condition for {source!r} matches, the last one "
                        f"(conditions[{indexes[-1]}]) decides, going to {fallback!r}",
                    )

    def check_reachable(self, tasks: list, conditions: list, start: str) -> None:
        edges: dict[str, list[str]] = {}
        for condition in conditions:
            if isinstance(condition, dict) and isinstance(condition.get("source_task"), str):
                edges.setdefault(condition["source_task"], []).append(condition)
        successors = {
            source: [c.get("target_task_success") for c in group] + [group[-1].get("target_task_failure")]
            for source, group in edges.items()
        }
        reached, queue = {start}, deque([start])
        while queue:
            for target in successors.get(queue.popleft(), ()):
                if isinstance(target, str) and target in self.task_names and target not in reached:
                    reached.add(target)
                    queue.append(target)
        for index, task in enumerate(tasks):
            name = task.get("name") if isinstance(task, dict) else None
            if _is_name(name) and name in self.task_names and name not in reached:
                self.warning(f"tasks[{index}]", f"task {name!r} is unreachable from start_task {start!r}")


def _schema_message(error: jsonschema.ValidationError) -> str:
    """The schema error's message, with a long quoted value (a whole document, say) shortened."""
    quoted = repr(error.instance)
    if len(quoted) <= _QUOTE_LIMIT:
        return error.message
    return error.message.replace(quoted, quoted[: _QUOTE_LIMIT - 3] + "...")


def _key_path(key: Any) -> str:
    """Return the path inside the run input that `concurrency.key` names ("customer_id" for "input.customer_id")."""
    expected = f'must be "{FLOW_KEY}" or "input.<field>", e.g. "input.customer_id"'
    if not isinstance(key, str):
        raise ValueError(f"{expected}; not {json_kind(key)}")
    if not key.strip().startswith(INPUT):
        raise ValueError(f"{expected}; not {key!r}")
    try:
        ref = parse_reference(key)
    except ReferenceSyntaxError as exc:
        raise ValueError(f"{expected}: {exc}") from None
    if not ref.segments:
        raise ValueError(f"{expected}: name a field of the input, not the whole input")
    return ref.text.removeprefix(INPUT).removeprefix(".")


# Parsing


def parse_definition(definition: Any) -> FlowDefinition:
    """Return the parsed definition; raise InvalidFlowDefinition with its errors (warnings are not raised)."""
    errors = [p for p in validate_definition(definition) if p.severity == ERROR]
    if errors:
        raise InvalidFlowDefinition(errors)
    tasks = {}
    agents = all_agents()
    for raw in definition["tasks"]:
        retry = raw.get("retry") or {}
        agent_name = raw.get("agent") or raw["name"]
        agent = agents.get(agent_name)
        backoff = retry.get("backoff_seconds") or (agent.backoff_seconds if agent else DEFAULT_BACKOFF_SECONDS)
        cap = agent.max_backoff_seconds if agent else DEFAULT_MAX_BACKOFF_SECONDS
        tasks[raw["name"]] = Task(
            name=raw["name"],
            description=raw.get("description") or "",
            agent=agent_name,
            input=copy.deepcopy(raw["input"]) if raw.get("input") is not None else {},
            retry=RetryPolicy(
                max_attempts=retry.get("max_attempts") or (agent.max_attempts if agent else DEFAULT_MAX_ATTEMPTS),
                backoff_seconds=backoff,
                # A backoff above the default cap raises the cap rather than being cut to it.
                max_backoff_seconds=retry.get("max_backoff_seconds") or max(cap, backoff),
            ),
            timeout_seconds=raw.get("timeout_seconds"),
        )
    conditions = tuple(
        Condition(
            name=raw["name"],
            source_task=raw["source_task"],
            outcome=raw.get("outcome"),
            when=raw.get("when"),
            target_task_success=raw["target_task_success"],
            target_task_failure=raw.get("target_task_failure") or END,
        )
        for raw in definition.get("conditions") or ()
    )
    concurrency = None
    if (raw := definition.get("concurrency")) is not None:
        key = raw.get("key")
        concurrency = FlowConcurrency(
            limit=raw["limit"],
            on_busy=raw.get("on_busy") or "queue",
            key_path=None if key in (None, FLOW_KEY) else _key_path(key),
        )
    return FlowDefinition(
        name=definition["name"],
        start_task=definition["start_task"],
        tasks=tasks,
        conditions=conditions,
        concurrency=concurrency,
        max_steps=definition.get("max_steps") or DEFAULT_MAX_STEPS,
        token_budget=(definition.get("budget") or {}).get("max_tokens"),
    )


# Running


def choose_next(
    defn: FlowDefinition, task_name: str, *, status: str, output: Any, error: str, run_input: dict, steps: dict
) -> NextStep:
    """Return where the flow goes after a step of `task_name` finished with `status`."""
    if task_name not in defn.tasks:
        raise ValueError(f"flow {defn.name!r} has no task {task_name!r}")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    conditions = defn.conditions_for(task_name)
    if not conditions:
        return NextStep(task=None, condition=None)
    variables = {
        "output": output if status == SUCCESS else None,
        "status": status,
        "error": (error or "") if status == FAILURE else "",
        "input": run_input,
        "steps": steps or {},
    }
    errors: list[str] = []
    for condition in conditions:
        try:
            matched = condition.matches(status=status, variables=variables)
        except ExpressionTooCostly as exc:
            return NextStep(task=None, condition=condition.name, too_costly=f"condition {condition.name!r}: {exc}")
        except ExpressionError as exc:
            errors.append(f"condition {condition.name!r} ({condition.when}): {exc}")
            matched = False
        if matched:
            return NextStep(
                task=_task_or_end(condition.target_task_success), condition=condition.name, errors=tuple(errors)
            )
    last = conditions[-1]
    return NextStep(task=_task_or_end(last.target_task_failure), condition=last.name, errors=tuple(errors))


def _task_or_end(target: str) -> str | None:
    return None if target == END else target


def resolve_input(template: Any, *, run_input: dict, steps: dict) -> Any:
    """Fill in a task's input template; raise ReferenceNotFound for a reference the run cannot satisfy."""
    return resolve(template, run_input=run_input, steps=steps)


def concurrency_key_value(defn: FlowDefinition, run_input: dict) -> str | None:
    """Return the run's concurrency key value (strings as they are, other values as JSON); None: flow-wide."""
    if defn.concurrency is None or defn.concurrency.key_path is None:
        return None
    key_path = defn.concurrency.key_path
    ref = parse_reference(INPUT + ("" if key_path.startswith("[") else ".") + key_path)
    value = lookup(ref, run_input=run_input, steps={}, path="concurrency.key")
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
