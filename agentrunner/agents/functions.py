"""Plain functions as agents: `@task("name")`, the flow-manager's task registry on top of the agent SDK.

    @task("fetch")
    def fetch() -> TaskResult:
        return TaskResult(status="success", data={"raw_data": "data"})

The function takes nothing (as the flow-manager's tasks do), or the step's input as its one positional
argument, and/or the agent context as a parameter named `context`; it may be `async def`. It returns a
`TaskResult`: "success" makes `data` the step's output, "failure" fails the step (not retried: the
function decided) so the flow takes `target_task_failure`. Any other return value is a success with that
value as the output. An exception fails the step as any agent's does (an `AgentError` keeps its meaning,
e.g. `RetryableAgentError` is retried; anything else is a crash).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from agentrunner.agents.base import Agent, AgentContext, ConcurrencyPolicy, NonRetryableAgentError
from agentrunner.agents.registry import register

__all__ = ["FunctionAgent", "TaskFailed", "TaskResult", "task"]

SUCCESS = "success"
FAILURE = "failure"
CONTEXT_PARAMETER = "context"
_FAILURE_DATA_CHARS = 1000  # of a failure's data quoted in the step's error


@dataclass(frozen=True)
class _Arguments:
    """How `@task` calls its function: the input by which parameter (if any), and whether with the context."""

    input_parameter: str | None
    input_positional_only: bool
    passes_context: bool


@dataclass(frozen=True)
class TaskResult:
    """What a task function returns: its status ("success" or "failure") and optional data."""

    status: str = SUCCESS
    data: Any = None

    def __post_init__(self):
        if self.status not in (SUCCESS, FAILURE):
            raise ValueError(f"TaskResult.status must be {SUCCESS!r} or {FAILURE!r}, not {self.status!r}.")


class TaskFailed(NonRetryableAgentError):
    """The task reported failure."""

    code = "task_failed"


class FunctionAgent(Agent):
    """An agent whose work is a plain function; made by `@task`, not subclassed by hand."""

    function: ClassVar[Callable[..., Any]]
    arguments: ClassVar[_Arguments]

    def _call(self, context: AgentContext):
        how = self.arguments
        args, kwargs = (), {}
        if how.input_parameter is not None:
            if how.input_positional_only:
                args = (context.input,)
            else:
                kwargs[how.input_parameter] = context.input
        if how.passes_context:
            kwargs[CONTEXT_PARAMETER] = context
        return type(self).function(*args, **kwargs)

    def _output(self, returned: Any) -> Any:
        if not isinstance(returned, TaskResult):
            return returned
        if returned.status == FAILURE:
            message = f"Task {self.name!r} reported failure"
            if returned.data is not None:
                data = json.dumps(returned.data, default=str)
                message += f": {data[:_FAILURE_DATA_CHARS]}"
            raise TaskFailed(message + ".")
        return returned.data


class _SyncFunctionAgent(FunctionAgent):
    def run(self, context: AgentContext) -> Any:
        return self._output(self._call(context))


class _AsyncFunctionAgent(FunctionAgent):
    async def run(self, context: AgentContext) -> Any:
        return self._output(await self._call(context))


def task(
    name: str,
    *,
    description: str | None = None,
    input_schema: dict | None = None,
    concurrency: ConcurrencyPolicy | None = None,
    max_attempts: int | None = None,
) -> Callable[[Callable], Callable]:
    """Register a plain function (sync or async) as the agent type `name`; the function is returned unchanged.

    Defaults: the docstring's first line as description, any object as input, no concurrency limit, the
    SDK's attempts (`Agent.max_attempts`).
    """

    def decorate(function: Callable) -> Callable:
        arguments = _arguments(function, name)
        base = _AsyncFunctionAgent if inspect.iscoroutinefunction(function) else _SyncFunctionAgent
        attributes: dict[str, Any] = {
            "name": name,
            "description": description if description is not None else _first_line(function.__doc__),
            "function": staticmethod(function),
            "arguments": arguments,
            "__module__": function.__module__,
            "__qualname__": f"task[{name}]",
            "__doc__": function.__doc__,
        }
        if input_schema is not None:
            attributes["input_schema"] = input_schema
        if concurrency is not None:
            attributes["concurrency"] = concurrency
        if max_attempts is not None:
            attributes["max_attempts"] = max_attempts
        register(type(f"task[{name}]", (base,), attributes))
        return function

    return decorate


def _arguments(function: Callable, name: str) -> _Arguments:
    """How to call `function`, or TypeError for a signature `@task` cannot call."""
    required = []
    passes_context = False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.name == CONTEXT_PARAMETER and parameter.kind != parameter.POSITIONAL_ONLY:
            passes_context = True
        elif parameter.default is parameter.empty:
            required.append(parameter)
    if len(required) > 1 or any(p.kind == p.KEYWORD_ONLY for p in required):
        raise TypeError(
            f"@task({name!r}): the function may take nothing, the input (one argument) and/or `context`; "
            f"it requires {', '.join(p.name for p in required)}."
        )
    return _Arguments(
        input_parameter=required[0].name if required else None,
        input_positional_only=bool(required) and required[0].kind == required[0].POSITIONAL_ONLY,
        passes_context=passes_context,
    )


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""
