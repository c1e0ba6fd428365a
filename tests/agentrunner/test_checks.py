"""Start-up checks refuse configurations that would fail later, at run time."""

from agentrunner.checks import check_http_agent_allowlist
from tests.agentrunner.test_settings import run_manage


def test_check_http_agent_allowlist__names_every_malformed_entry(settings):
    settings.HTTP_AGENT_ALLOWLIST = ["api.internal:8443", "bad*entry", "[::1]:8080", "host:99999", "10.0.0.0/8"]

    errors = check_http_agent_allowlist(None)

    assert [e.id for e in errors] == ["agentrunner.E004", "agentrunner.E004"]
    assert "'bad*entry'" in errors[0].msg
    assert "'host:99999' has an invalid port" in errors[1].msg


def test_check_http_agent_allowlist__well_formed_entries_pass(settings):
    settings.HTTP_AGENT_ALLOWLIST = ["api.internal", "*.svc.example:443", "127.0.0.1:8080", "[::1]:8080", "fd00::/8"]

    assert check_http_agent_allowlist(None) == []


def test_a_malformed_allowlist_entry_stops_start_up():
    result = run_manage("check", DEBUG="1", HTTP_AGENT_ALLOWLIST="api.internal,http://api.internal/v1")

    assert result.returncode != 0
    assert "agentrunner.E004" in result.stderr
    assert "'http://api.internal/v1' is a URL" in result.stderr
