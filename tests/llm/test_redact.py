"""Provider errors never carry the operator's credentials: redacted where they become the gateway's errors."""

import json
import logging

import pytest
from django.apps import apps

from agentrunner.llm.redact import REDACTED, redact
from runs import engine, services
from runs.models import Run, RunStatus
from tests.llm.fake_providers import echo_credentials

# Shaped like nothing the patterns know: only the list of configured secrets can find them.
OPENAI_KEY = "operator-openai-credential-5f2c9e"
ANTHROPIC_KEY = "operator-anthropic-credential-81ad07"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HTTP 401: Authorization: Bearer abc.def-ghi_jkl", f"HTTP 401: Authorization: Bearer {REDACTED}"),
        ("headers {'authorization': 'Token 0123456789'}", f"headers {{'authorization': 'Token {REDACTED}'}}"),
        ('{"x-api-key": "whatever-it-is"}', f'{{"x-api-key": "{REDACTED}"}}'),
        ("x-api-key=short; next", f"x-api-key={REDACTED}; next"),
        ("api_key: abc", f"api_key: {REDACTED}"),
        ("proxy-authorization: Basic dXNlcjpwYXNz", f"proxy-authorization: Basic {REDACTED}"),
        ("token was bearer eyJhbGciOiJIUzI1NiJ9.e30.x", f"token was bearer {REDACTED}"),
        ("key sk-proj-AbCdEf0123456789 refused", f"key {REDACTED} refused"),
        ("key sk-ant-api03-AbCdEf0123456789 refused", f"key {REDACTED} refused"),
        (
            "connection to http://user:pa55w0rd@llm.internal:8000/v1 failed",
            f"connection to http://{REDACTED}@llm.internal:8000/v1 failed",
        ),
    ],
)
def test_redact__credential_shapes(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "HTTP 400: max_tokens is too large",
        "Invalid authorization header",  # names the header, holds no value
        "use Bearer auth",  # prose, not a token
        "Incorrect API key provided: sk-proj-****abcd",  # the provider's own masked form
        "desk-management-console is down",
    ],
)
def test_redact__ordinary_messages_are_unchanged(text):
    assert redact(text) == text


def test_redact__configured_secrets_anywhere_in_the_text(settings):
    settings.OPENAI_API_KEY = OPENAI_KEY
    settings.LOCAL_LLM_API_KEY = "local"  # the placeholder default: too short to be a secret, left alone

    assert redact(f"invalid key {OPENAI_KEY}, local server") == f"invalid key {REDACTED}, local server"
    assert redact("key xyz-0123456789 refused", secrets=["xyz-0123456789"]) == f"key {REDACTED} refused"


def test_redact__a_value_already_redacted_stays_readable(settings):
    settings.OPENAI_API_KEY = OPENAI_KEY

    assert redact(f"Authorization: Bearer {OPENAI_KEY}") == f"Authorization: Bearer {REDACTED}"


@pytest.mark.django_db
def test_llm_run__provider_errors_echoing_the_keys_reach_no_run_row_or_log(
    openai_server, anthropic_server, llm_settings, owner, caplog
):
    llm_settings.OPENAI_API_KEY = OPENAI_KEY
    llm_settings.ANTHROPIC_API_KEY = ANTHROPIC_KEY
    openai_server.push(echo_credentials(401))
    anthropic_server.push(echo_credentials(401))
    run, _ = services.run_create(agent_type="llm", input={"prompt": "Answer?"}, created_by=owner)

    with caplog.at_level(logging.DEBUG):
        engine.step_execute(step_id=run.steps.get().id)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    # The servers did echo each key, so the test would see a leak.
    assert OPENAI_KEY in str(openai_server.requests[0].headers)
    assert ANTHROPIC_KEY in str(anthropic_server.requests[0].headers)
    assert "invalid API key [redacted]" in run.error
    stored = _every_row_as_text()
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    for key in (OPENAI_KEY, ANTHROPIC_KEY):
        assert key not in run.error
        assert key not in stored  # runs, steps, attempts, LLM calls, breakers: every table
        assert key not in logged
    assert "llm_call_failed" in logged  # the failures were logged, redacted


def _every_row_as_text() -> str:
    rows = [row for model in apps.get_models() for row in model.objects.values()]
    assert any(isinstance(row.get("error"), str) and REDACTED in row["error"] for row in rows)
    assert Run.objects.exists()
    return json.dumps(rows, default=str)
