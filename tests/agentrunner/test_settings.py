"""Settings are strict, deployments are checked, and SQLite is configured for the engine's locking."""

import os
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection

from agentrunner.checks import check_queue_timing

BASE_DIR = Path(__file__).resolve().parents[2]


def run_manage(*args, **env) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_SETTINGS_MODULE", "DEBUG", "SECRET_KEY", "SECURE_SSL_REDIRECT"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "agentrunner.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_typo_in_a_boolean_stops_start_up():
    result = run_manage("check", DEBUG="yes please", SECRET_KEY="x")
    assert result.returncode != 0
    assert "DEBUG='yes please' is not a boolean" in result.stderr


def test_no_secret_key_default_outside_development():
    result = run_manage("check", DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_check_deploy_is_clean_with_real_values():
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="agents.example.com",
        EMAIL_URL="smtp+tls://mailer:secret@smtp.example.com:587",
        SITE_URL="https://agents.example.com",
    )
    assert result.returncode == 0, result.stderr


def test_check_deploy_warns_when_digests_would_go_to_the_console():
    result = run_manage("check", "--deploy", DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50))
    assert "agentrunner.W010" in result.stderr and "agentrunner.W011" in result.stderr


def email_settings(**env) -> str:
    code = (
        "from django.conf import settings as s; print(s.EMAIL_BACKEND.rsplit('.', 2)[1], s.EMAIL_HOST, s.EMAIL_PORT, "
        "s.EMAIL_HOST_USER, s.EMAIL_USE_TLS, s.EMAIL_USE_SSL)"
    )
    result = run_manage("shell", "-c", code, DEBUG="1", LOG_LEVEL="WARNING", **env)
    return result.stdout.strip().splitlines()[-1] if result.returncode == 0 else result.stderr


EMAIL_CASES = [
    (
        {"EMAIL_URL": "smtp+tls://u%40x.com:p%2Fw@mail.example.com:2525"},
        "smtp mail.example.com 2525 u@x.com True False",
    ),
    ({"EMAIL_URL": "smtp+ssl://u:p@mail.example.com"}, "smtp mail.example.com 465 u False True"),
    ({"EMAIL_HOST": "relay.local", "EMAIL_PORT": "2526", "EMAIL_USE_TLS": "1"}, "smtp relay.local 2526  True False"),
    ({}, "console"),
    ({"EMAIL_HOST": "relay", "EMAIL_PORT": "twenty-five"}, "EMAIL_PORT='twenty-five' is not a int"),
]


def test_email_settings_from_the_environment():
    # One start-up per case, in parallel: each reads its own environment.
    with ThreadPoolExecutor(len(EMAIL_CASES)) as pool:
        results = list(pool.map(lambda case: email_settings(**case[0]), EMAIL_CASES))
    for (env, expected), result in zip(EMAIL_CASES, results, strict=True):
        assert expected in result, (env, result)


def test_queue_retry_must_exceed_timeout(settings):
    assert check_queue_timing(None) == []
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "retry": settings.Q_CLUSTER["timeout"]}
    assert [e.id for e in check_queue_timing(None)] == ["agentrunner.E001"]


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode_with_immediate_transactions():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_home_page__links_to_the_admin_the_api_docs_and_health(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    for href in ('href="/admin/"', 'href="/api/docs/"', 'href="/api/redoc/"', 'href="/api/v1/health"'):
        assert href in page


@pytest.mark.parametrize("days", ["3", "-1", "36501"])
def test_run_retention_below_a_weekly_digest_or_negative_stops_start_up(days):
    result = run_manage("check", DEBUG="1", RUN_RETENTION_DAYS=days)
    assert result.returncode != 0
    assert "RUN_RETENTION_DAYS must be 0 (keep every run) or from 8" in result.stderr


def test_llm_call_retention_shorter_than_a_budget_month_stops_start_up():
    result = run_manage("check", DEBUG="1", LLM_CALL_RETENTION_DAYS="31")
    assert result.returncode != 0
    assert "LLM_CALL_RETENTION_DAYS must be 0 (keep every call) or from 32" in result.stderr
