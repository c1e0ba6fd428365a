"""Settings are strict, deployments are checked, and SQLite is configured for the engine's locking."""

import os
import secrets
import subprocess
import sys
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
    )
    assert result.returncode == 0, result.stderr


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
