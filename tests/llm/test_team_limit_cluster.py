"""The team's LLM request limit with real workers: a busy team's llm steps wait for their turn and all complete.

The workers ask a fake OpenAI on a real socket; they count the limit per 2 s (tests/llm/worker_settings.py).
"""

import pytest

from agentrunner.models import LLMCall, LLMOutcome
from runs import services
from runs.models import Run, RunStatus, Step, StepAttempt
from tests.conftest import join, team_named, wait_for
from tests.llm.fake_providers import ok

pytestmark = pytest.mark.cluster

RUNS = 10
PER_WINDOW = 2
WINDOW_SECONDS = 2.0  # as in tests/llm/worker_settings.py
# A request is counted (on the database's clock) a moment before it reaches the server (on this process's).
CLOCK_SLACK_SECONDS = 0.5


def test_a_teams_llm_steps_over_its_limit_wait_for_their_turn_and_none_fails(clusters, openai_server, owner):
    openai_server.default = ok("42")
    team = team_named("claims")
    team.llm_requests_per_minute = PER_WINDOW
    team.save()
    join(owner, team=team)
    clusters(
        1,
        workers=1,
        DJANGO_SETTINGS_MODULE="tests.llm.worker_settings",
        LLM_PROVIDERS="openai",
        OPENAI_API_KEY="test-openai-key",
        OPENAI_BASE_URL=openai_server.base_url,
        OPENAI_MODEL="gpt-test",
        LLM_TIMEOUT_SECONDS=5,
    )

    # The first call of a process loads the provider's SDK (a second or so) after it was counted: a run of
    # another team gets that done first, so that each request below reaches the server as it is counted.
    warm_up, _ = services.run_create(agent_type="llm", input={"prompt": "Hello?"}, created_by=owner)
    wait_for(lambda: Run.objects.get(pk=warm_up.pk).status == RunStatus.COMPLETED, timeout=30, message="warm-up")
    openai_server.requests.clear()

    runs = [
        services.run_create(agent_type="llm", input={"prompt": f"Question {i}?"}, created_by=owner, team=team)[0]
        for i in range(RUNS)
    ]

    finished = Run.objects.filter(pk__in=[r.pk for r in runs], finished_at__isnull=False)
    wait_for(lambda: finished.count() == RUNS, timeout=60, message=f"{RUNS} runs finish")
    assert set(finished.values_list("status", flat=True)) == {RunStatus.COMPLETED}
    # Never more than PER_WINDOW requests sent in any window.
    arrivals = sorted(request.at for request in openai_server.requests)
    assert len(arrivals) == RUNS
    for first, after_limit in zip(arrivals, arrivals[PER_WINDOW:], strict=False):
        assert after_limit - first >= WINDOW_SECONDS - CLOCK_SLACK_SECONDS
    assert LLMCall.objects.filter(team=team, outcome=LLMOutcome.SUCCESS).count() == RUNS
    # Each step made one real attempt; every other attempt was a wait, which added one to max_attempts.
    deferrals = []
    for step in Step.objects.filter(run__in=runs):
        waits = StepAttempt.objects.filter(step=step, error_code="llm_rate_limited").count()
        assert step.attempts == waits + 1
        assert step.max_attempts == 3 + waits  # the llm agent's 3, none used up by waiting
        deferrals.append(waits)
    # The last steps waited through more windows than the agent has attempts: waiting does not fail a step.
    assert max(deferrals) >= 3, deferrals
