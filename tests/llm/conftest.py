"""Fixtures for the LLM gateway tests: fake providers on real sockets, fast timings, runs to charge."""

from __future__ import annotations

import pytest

from agentrunner.agents.base import AgentContext, AsyncAgentContext
from agentrunner.teams.services import team_default
from runs.models import Run, Step
from tests.llm.fake_providers import ANTHROPIC, OPENAI, FakeProvider

PRICES = {
    "gpt-test": [1.0, 2.0],  # USD per million prompt / completion tokens
    "claude-test": [3.0, 15.0],
}


@pytest.fixture
def llm_settings(settings):
    """No provider configured; small timeouts, retries and backoffs; no budgets and no team request limit."""
    settings.LLM_PROVIDERS = ["openai", "anthropic", "local"]
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    settings.OPENAI_MODEL = "gpt-test"
    settings.ANTHROPIC_API_KEY = ""
    settings.ANTHROPIC_BASE_URL = ""
    settings.ANTHROPIC_MODEL = "claude-test"
    settings.LOCAL_LLM_BASE_URL = ""
    settings.LOCAL_LLM_API_KEY = "local"
    settings.LOCAL_LLM_MODEL = "llama-test"
    settings.LLM_TIMEOUT_SECONDS = 0.5
    settings.LLM_MAX_RETRIES = 2
    settings.LLM_RETRY_BACKOFF_SECONDS = 0.01
    settings.LLM_BREAKER_FAILURES = 5
    settings.LLM_BREAKER_RESET_SECONDS = 30.0
    settings.LLM_MONTHLY_TOKEN_BUDGET = 0
    settings.TEAM_MONTHLY_TOKEN_BUDGET = 0
    settings.LLM_REQUESTS_PER_TEAM_PER_MINUTE = 0
    settings.LLM_BUDGET_WARNING_RATIO = 0.8
    settings.LLM_PRICES = PRICES
    return settings


@pytest.fixture
def openai_server(llm_settings):
    """A fake OpenAI, configured as the `openai` provider."""
    server = FakeProvider(OPENAI)
    llm_settings.OPENAI_API_KEY = "test-openai-key"
    llm_settings.OPENAI_BASE_URL = server.base_url
    yield server
    server.stop()


@pytest.fixture
def anthropic_server(llm_settings):
    """A fake Anthropic, configured as the `anthropic` provider."""
    server = FakeProvider(ANTHROPIC)
    llm_settings.ANTHROPIC_API_KEY = "test-anthropic-key"
    llm_settings.ANTHROPIC_BASE_URL = server.base_url
    yield server
    server.stop()


@pytest.fixture
def local_server(llm_settings):
    """A fake OpenAI-compatible server, configured as the `local` provider."""
    server = FakeProvider(OPENAI)
    llm_settings.LOCAL_LLM_BASE_URL = server.base_url
    yield server
    server.stop()


def new_run(**fields) -> Run:
    """A run row (no step), in the default team unless `team` is given."""
    fields.setdefault("team", team_default())
    return Run.objects.create(**fields)


def context_for(run: Run, context_class=AgentContext, **fields) -> AgentContext:
    """The context the engine gives a step of `run`: its owner, team and token budget."""
    return context_class(
        run_id=run.pk,
        step_name="ask",
        attempt=1,
        input={},
        owner_id=run.created_by_id,
        team_id=run.team_id,
        token_budget=run.token_budget,
        **fields,
    )


@pytest.fixture
def make_context(db, owner):
    """`make_context(token_budget=None, user=owner, team=None)`: a run with one step (rows only) and its agent context.

    The run is in `team` (default: the default team).

    `asynchronous=True` gives an AsyncAgentContext, what the engine passes to async agents.
    """

    def make(
        *,
        token_budget: int | None = None,
        user=owner,
        input: dict | None = None,
        run: Run | None = None,
        asynchronous: bool = False,
        team=None,
    ):
        if run is None:
            run = new_run(agent_type="llm", created_by=user, token_budget=token_budget, team=team or team_default())
        step = Step.objects.create(run=run, sequence=run.steps.count(), name="ask", agent_type="llm")
        context_class = AsyncAgentContext if asynchronous else AgentContext
        return context_class(
            run_id=run.id,
            step_name=step.name,
            attempt=1,
            input=input or {},
            step_id=step.pk,
            owner_id=user.pk if user else None,
            team_id=run.team_id,
            token_budget=token_budget,
        )

    return make


@pytest.fixture
def context(make_context):
    return make_context()


def events(caplog, name: str) -> list[dict]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]
