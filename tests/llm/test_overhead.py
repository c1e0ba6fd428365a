"""Gateway overhead per call against the local fake server: printed, never asserted (timings vary by machine)."""

import statistics
import time

import pytest
from asgiref.sync import async_to_sync

from agentrunner.llm import acomplete, complete
from agentrunner.llm.providers import OPENAI, new_client
from tests.llm.fake_providers import ok

CALLS = 50
WARM_UP = 5
HELLO = [{"role": "user", "content": "Say hello."}]


def measure(server, call) -> list[float]:
    """Milliseconds per call spent outside the server's handler."""
    for _ in range(WARM_UP):
        call()
    overheads = []
    for _ in range(CALLS):
        handled_before = len(server.handler_seconds)
        started = time.perf_counter()
        call()
        elapsed = time.perf_counter() - started
        overheads.append((elapsed - sum(server.handler_seconds[handled_before:])) * 1000)
    return overheads


async def ameasure(server, call) -> list[float]:
    """`measure` for coroutine functions, every call on the same event loop (as on a worker's)."""
    for _ in range(WARM_UP):
        await call()
    overheads = []
    for _ in range(CALLS):
        handled_before = len(server.handler_seconds)
        started = time.perf_counter()
        await call()
        elapsed = time.perf_counter() - started
        overheads.append((elapsed - sum(server.handler_seconds[handled_before:])) * 1000)
    return overheads


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"mean {statistics.mean(values):.2f} ms, median {statistics.median(values):.2f} ms, "
        f"p95 {ordered[int(len(ordered) * 0.95) - 1]:.2f} ms"
    )


@pytest.mark.django_db
def test_gateway_overhead__is_printed(local_server, llm_settings, make_context, capsys):
    local_server.default = ok("hi", prompt_tokens=5, completion_tokens=2)
    plain = make_context(token_budget=None, user=None, asynchronous=True)
    budgeted = make_context(token_budget=10**9, asynchronous=True)
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 10**9

    async def on_one_loop():
        client = new_client(OPENAI, "local", local_server.base_url, float(llm_settings.LLM_TIMEOUT_SECONDS))

        async def bare():
            await client.chat.completions.create(model="llama-test", messages=HELLO, max_tokens=16)

        try:
            return (
                await ameasure(local_server, bare),
                await ameasure(local_server, lambda: acomplete(messages=HELLO, max_tokens=16, context=plain)),
                await ameasure(local_server, lambda: acomplete(messages=HELLO, max_tokens=16, context=budgeted)),
            )
        finally:
            await client.close()

    # Under async_to_sync the database work runs on this thread, as a worker's runs on its one shared thread.
    sdk, without_budgets, with_budgets = async_to_sync(on_one_loop)()
    sync_budgeted = make_context(token_budget=10**9)
    sync = measure(local_server, lambda: complete(messages=HELLO, max_tokens=16, context=sync_budgeted))

    with capsys.disabled():
        print(f"\nLLM gateway overhead per call ({CALLS} calls, local fake server, server time subtracted):")
        print(f"  bare async OpenAI SDK call (HTTP + SDK only):  {summary(sdk)}")
        print(f"  acomplete(), no budgets:                       {summary(without_budgets)}")
        print(f"  acomplete(), run + owner monthly budgets:      {summary(with_budgets)}")
        print(f"  complete() (sync: a new loop and client each): {summary(sync)}")
        own = [statistics.mean(values) - statistics.mean(sdk) for values in (without_budgets, with_budgets)]
        print(f"  gateway's own share (mean minus bare SDK):     {own[0]:.2f} ms / {own[1]:.2f} ms")
