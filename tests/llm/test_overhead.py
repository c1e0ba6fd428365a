"""Gateway overhead per call against the local fake server: printed, never asserted (timings vary by machine)."""

import statistics
import time

import pytest

from agentrunner.llm import complete
from agentrunner.llm.providers import _openai_client
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


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"mean {statistics.mean(values):.2f} ms, median {statistics.median(values):.2f} ms, "
        f"p95 {ordered[int(len(ordered) * 0.95) - 1]:.2f} ms"
    )


@pytest.mark.django_db
def test_gateway_overhead__is_printed(local_server, llm_settings, make_context, capsys):
    local_server.default = ok("hi", prompt_tokens=5, completion_tokens=2)
    client = _openai_client("local", local_server.base_url, float(llm_settings.LLM_TIMEOUT_SECONDS))

    def bare():
        client.chat.completions.create(model="llama-test", messages=HELLO, max_tokens=16)

    plain = make_context(token_budget=None, user=None)
    budgeted = make_context(token_budget=10**9)
    llm_settings.LLM_MONTHLY_TOKEN_BUDGET = 10**9

    sdk = measure(local_server, bare)
    without_budgets = measure(local_server, lambda: complete(messages=HELLO, max_tokens=16, context=plain))
    with_budgets = measure(local_server, lambda: complete(messages=HELLO, max_tokens=16, context=budgeted))

    with capsys.disabled():
        print(f"\nLLM gateway overhead per call ({CALLS} calls, local fake server, server time subtracted):")
        print(f"  bare OpenAI SDK call (HTTP + SDK only):     {summary(sdk)}")
        print(f"  complete(), no budgets:                     {summary(without_budgets)}")
        print(f"  complete(), run + owner monthly budgets:    {summary(with_budgets)}")
        own = [statistics.mean(values) - statistics.mean(sdk) for values in (without_budgets, with_budgets)]
        print(f"  gateway's own share (mean minus bare SDK):  {own[0]:.2f} ms / {own[1]:.2f} ms")
