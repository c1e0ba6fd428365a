"""The runs admin speaks to people, not developers: plain agent descriptions, attempts and policies in words."""

import json
import re

import pytest
from django.urls import reverse

from agentrunner.agents import all_agents
from runs.admin.display import attempt_words, worker_short
from runs.models import AgentPolicy, RunStatus
from tests.runs.factories import make_run

pytestmark = pytest.mark.django_db

AGENT_LIST = reverse("admin:runs_agentpolicy_changelist")
# An environment variable's name as settings spell them: HTTP_AGENT_ALLOWLIST, ALLOW_EXTERNAL_REQUESTS.
ENV_NAME = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b")
# The agents the product ships (the tests register agents of their own).
BUILT_IN = sorted(name for name, cls in all_agents().items() if cls.__module__.startswith("agentrunner.agents.builtin"))


def schema_descriptions(schema) -> list[str]:
    found = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "description" and isinstance(value, str):
                found.append(value)
            else:
                found += schema_descriptions(value)
    elif isinstance(schema, list):
        for item in schema:
            found += schema_descriptions(item)
    return found


@pytest.mark.parametrize("name", BUILT_IN)
def test_agent_descriptions__no_backticks_nor_setting_names(name):
    agent = all_agents()[name]
    texts = [agent.description, *schema_descriptions(agent.input_schema)]

    assert agent.description
    for text in texts:
        assert "`" not in text, text
        assert not ENV_NAME.search(text), text


@pytest.mark.parametrize(
    ("number", "most", "words"),
    [
        (1, 2, "attempt 1 of at most 2"),
        (2, 2, "attempt 2 of at most 2"),
        (1, 1, "attempt 1 (no retries)"),
        (3, 2, "attempt 3"),  # a step handed back by a stopping worker
    ],
)
def test_attempt_words(number, most, words):
    assert attempt_words(number, most) == words


def test_worker_short__host_and_process_with_the_whole_id_on_hover():
    html = worker_short("4f1c2a9e8b7d5e6f:12345:140234567890123")

    assert html == '<span title="worker 4f1c2a9e8b7d5e6f:12345:140234567890123">4f1c2a9e8b7…:12345</span>'
    assert worker_short("") == "—"


def test_run_page__a_step_not_started_says_so(admin_client):
    run = make_run(RunStatus.PENDING)

    content = admin_client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()

    assert "not started yet" in content and "waits for a worker" in content


def test_agent_types__policy_source_in_words_not_a_red_cross(admin_client):
    AgentPolicy.objects.filter(agent_type="wait").update(override=True, concurrency_limit=2)

    content = admin_client.get(AGENT_LIST).content.decode()

    assert "<strong>your override</strong>" in content
    assert "built-in default" in content
    assert "icon-no.svg" not in content and "icon-yes.svg" not in content


def test_start_page__agent_descriptions_are_the_plain_ones(admin_client):
    content = admin_client.get(reverse("admin:runs_run_start")).content.decode()

    assert "Waits the given number of seconds" in content
    assert "`" not in json.dumps([all_agents()[name].description for name in BUILT_IN])


def test_a_cancelled_run_is_not_shown_as_an_error(admin_client):
    from django.utils import timezone

    from runs.models import AttemptStatus, StepAttempt

    run = make_run(RunStatus.CANCELLED, error="Cancelled.", error_code="cancelled", cancel_requested_at=timezone.now())
    StepAttempt.objects.filter(step__run=run).update(
        status=AttemptStatus.CANCELLED, error="Stopped (cancelled).", error_code="cancelled"
    )
    page = admin_client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert "Cancel requested" in page or "cancel requested" in page
    assert ">Error<" not in page and "error message" not in page.lower()
    assert "<code>cancelled</code>" not in page and 'color:#a41515">' not in page
    assert "Stopped (cancelled)." in page

    failed = make_run(RunStatus.FAILED, error="boom", error_code="agent_crashed")
    page = admin_client.get(reverse("admin:runs_run_change", args=[failed.pk])).content.decode()
    assert ">Error<" in page and "boom" in page


@pytest.mark.parametrize(
    "url,heading",
    [("admin:runs_run_changelist", "Runs"), (AGENT_LIST, "Agent types"), ("admin:flows_flow_changelist", "Flows")],
)
def test_list_pages_are_headed_by_what_they_list(admin_client, url, heading):
    page = admin_client.get(url if url.startswith("/") else reverse(url)).content.decode()
    assert f"<h1>{heading}</h1>" in page and "Select " not in page
    assert f"<title>{heading} | Agent Runner</title>" in page
