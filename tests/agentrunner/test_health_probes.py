"""The probes: /health/live answers whenever the process does (no query), /health/ready when the database and
the broker answer (the worker clusters only when asked). Both open, JSON, 200 or 503."""

import secrets
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.test import Client
from django_q.status import Stat

from agentrunner import health
from tests.agentrunner.test_settings import run_manage

pytestmark = pytest.mark.django_db


class SilentBroker:
    """A broker that does not answer its ping."""

    def ping(self):
        return False


@pytest.fixture
def no_clusters(monkeypatch):
    stats = []
    monkeypatch.setattr(Stat, "get_all", staticmethod(lambda *args, **kwargs: list(stats)))
    monkeypatch.setattr(health, "_last_seen_running", {})
    return stats


def test_live__200_without_authentication_or_any_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_live__answers_while_the_database_and_broker_are_down(monkeypatch):
    monkeypatch.setattr(health, "get_broker", SilentBroker)
    monkeypatch.setattr(health, "connection", None)  # any use of the database would raise
    assert Client().get("/health/live").status_code == 200


def test_ready__200_with_database_and_broker__workers_not_checked_unless_asked(no_clusters):
    response = Client().get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker"}
    assert all(check["ok"] for check in body["checks"].values())


def test_ready_with_workers__503_naming_the_workers_check_when_no_cluster_runs(no_clusters):
    response = Client().get("/health/ready?workers=1")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert not body["checks"]["workers"]["ok"] and "no worker cluster" in body["checks"]["workers"]["detail"]


def test_ready_with_workers__200_when_a_cluster_runs(no_clusters):
    no_clusters.append(SimpleNamespace(cluster_id="c1", status="Idle", workers=[1, 2], host="vm"))
    response = Client().get("/health/ready?workers=1")
    assert response.status_code == 200
    assert response.json()["checks"]["workers"]["ok"]


def test_ready__503_when_the_broker_does_not_answer(monkeypatch):
    monkeypatch.setattr(health, "get_broker", SilentBroker)
    response = Client().get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {"ok": False, "detail": "ConnectionError: broker did not answer"}


def test_probes_take_get_only():
    assert Client().post("/health/live").status_code == 405
    assert Client().post("/health/ready").status_code == 405


@pytest.mark.cluster
def test_probes_under_gunicorn_without_workers__alive_and_ready_while_the_full_report_is_503(web):
    """The image's web HEALTHCHECK (`healthcheck web --url .../health/live`) passes with no worker running."""
    import urllib.error
    import urllib.request

    port = web()

    def status(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert status("/health/live") == 200
    assert status("/health/ready") == 200
    assert status("/health/ready?workers=1") == 503
    assert status("/api/v1/health") == 503
    call_command("healthcheck", "web", "--url", f"http://127.0.0.1:{port}/health/live")


def test_probes_answer_over_plain_http_where_production_settings_enforce_https():
    """The image's HEALTHCHECK asks over http://127.0.0.1: a redirect to https would fail it."""
    code = (
        "from django.test import Client; c = Client(); "
        "print(c.get('/health/live').status_code, c.get('/admin/login/').status_code)"
    )
    result = run_manage(
        "shell",
        "-c",
        code,
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="testserver",
        LOG_LEVEL="ERROR",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["200", "301"]  # the probe answers; the rest is redirected to https
