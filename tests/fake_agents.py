"""Agents used only by the tests: they leave evidence outside the database process."""

import asyncio
import os
import time

from agentrunner.agents import (
    Agent,
    AgentContext,
    AsyncAgentContext,
    ConcurrencyPolicy,
    NonRetryableAgentError,
    OnBusy,
    RetryableAgentError,
    register,
)


@register
class RecordingAgent(Agent):
    """Append one line per execution to a file, then sleep: counts real executions across processes."""

    name = "test-recorder"
    description = "Test agent: records each execution in a file."
    input_schema = {
        "type": "object",
        "properties": {"path": {"type": "string"}, "seconds": {"type": "number", "minimum": 0}},
        "required": ["path"],
    }
    concurrency = ConcurrencyPolicy(limit=None, on_busy=OnBusy.QUEUE)

    def run(self, context: AgentContext) -> dict:
        with open(context.input["path"], "a") as f:
            f.write(f"{context.run_id} {os.getpid()} {time.time()}\n")
        context.sleep(context.input.get("seconds", 0))
        return {"pid": os.getpid()}


@register
class FlakyAgent(Agent):
    """Fail with a retryable error until the given attempt."""

    name = "test-flaky"
    description = "Test agent: fails retryably before attempt `succeed_on`."
    input_schema = {"type": "object", "properties": {"succeed_on": {"type": "integer", "minimum": 1}}}
    max_attempts = 3
    backoff_seconds = 1  # not the default 2: retries after 1 and 2 s keep the tests that wait for them short

    def run(self, context: AgentContext) -> dict:
        if context.attempt < context.input.get("succeed_on", 1):
            raise RetryableAgentError(f"attempt {context.attempt} failed on purpose")
        return {"attempt": context.attempt}


@register
class GateAgent(Agent):
    """Succeed only while a file exists: lets a test fix the outside world between attempts."""

    name = "test-gate"
    description = "Test agent: fails (non-retryably) unless the file at `path` exists."
    input_schema = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}

    def run(self, context: AgentContext) -> dict:
        if not os.path.exists(context.input["path"]):
            raise NonRetryableAgentError(f"gate closed: {context.input['path']} does not exist")
        return {"gate": "open"}


@register
class AsyncRecordingAgent(Agent):
    """Async: record each start and each completion in a file, waiting in between on the event loop."""

    name = "test-async-recorder"
    description = "Test agent: async; records starts and completions in a file."
    input_schema = {
        "type": "object",
        "properties": {"path": {"type": "string"}, "seconds": {"type": "number", "minimum": 0}},
        "required": ["path"],
    }
    max_attempts = 2  # a lost worker's attempt is retried elsewhere

    async def run(self, context: AsyncAgentContext) -> dict:
        with open(context.input["path"], "a") as f:
            f.write(f"start {context.run_id} {os.getpid()} {context.attempt} {time.time()}\n")
        await context.sleep(context.input.get("seconds", 0))
        with open(context.input["path"], "a") as f:
            f.write(f"done {context.run_id} {os.getpid()} {context.attempt} {time.time()}\n")
        return {"pid": os.getpid(), "attempt": context.attempt}


@register
class AsyncFlakyAgent(Agent):
    """Async: fail with a retryable error until the given attempt."""

    name = "test-async-flaky"
    description = "Test agent: async; fails retryably before attempt `succeed_on`."
    input_schema = {"type": "object", "properties": {"succeed_on": {"type": "integer", "minimum": 1}}}
    max_attempts = 3
    backoff_seconds = 1  # not the default 2: retries after 1 and 2 s keep the tests that wait for them short

    async def run(self, context: AsyncAgentContext) -> dict:
        await asyncio.sleep(0.05)
        if context.attempt < context.input.get("succeed_on", 1):
            raise RetryableAgentError(f"attempt {context.attempt} failed on purpose")
        return {"attempt": context.attempt}


@register
class BlockingAgent(Agent):
    """Sync: block the thread for `seconds`, ignoring cancel (a badly behaved sync agent)."""

    name = "test-block"
    description = "Test agent: sync; blocks its thread."
    input_schema = {"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0}}}
    max_attempts = 1  # a blocker killed by django-q2's timeout fails (not retried, as the default would)

    def run(self, context: AgentContext) -> dict:
        time.sleep(context.input.get("seconds", 1))
        return {"blocked": context.input.get("seconds", 1)}
