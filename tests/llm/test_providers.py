"""Providers: the SDKs load on first use, not at start-up; async clients are kept per event loop."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from agentrunner.llm import providers
from agentrunner.llm.providers import Provider

BASE_DIR = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9/v1"  # never connected to: clients are only built and closed here


def test_import__of_the_gateway_does_not_load_the_provider_sdks():
    """Django start-up imports `agentrunner.llm` (agents, API, checks); the SDKs take seconds to import."""
    code = (
        "import django, sys; django.setup(); import agentrunner.llm; "
        "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}

    done = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_clients__each_event_loop_has_its_own_reused_by_its_requests_and_closed_when_it_ends(llm_settings):
    provider = Provider("openai", "gpt-test", "key", NOWHERE)
    made, loops = [], []

    async def two_requests():
        first = await providers._client(provider)
        assert await providers._client(provider) is first
        made.append(first)
        loops.append(asyncio.get_running_loop())

    asyncio.run(two_requests())
    asyncio.run(two_requests())

    assert made[0] is not made[1]  # a connection pool belongs to one loop
    assert all(client.is_closed() for client in made)  # asyncio.run shut its loop down: clients closed
    assert not any(loop in providers._loops for loop in loops)


def test_clients__differ_by_kind_key_url_and_timeout(llm_settings):
    async def clients():
        return [
            await providers._client(Provider("openai", "m", "key", NOWHERE)),
            await providers._client(Provider("local", "m", "key", NOWHERE)),  # same SDK, same settings
            await providers._client(Provider("openai", "m", "other key", NOWHERE)),
            await providers._client(Provider("anthropic", "m", "key", "http://127.0.0.1:9")),
        ]

    openai, local, other_key, anthropic = asyncio.run(clients())

    assert local is openai
    assert len({id(openai), id(other_key), id(anthropic)}) == 3
    assert type(anthropic).__name__ == "AsyncAnthropic"


def test_clients__of_a_loop_closed_without_shutting_down_are_forgotten(llm_settings):
    provider = Provider("openai", "gpt-test", "key", NOWHERE)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(providers._client(provider))
    loop.close()  # no shutdown_asyncgens(): its clients were not closed
    assert loop in providers._loops

    asyncio.run(providers._client(provider))  # the next loop to make clients clears it out

    assert loop not in providers._loops
