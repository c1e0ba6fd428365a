"""The operating files (issue 14): the compose stack, Prometheus' scrape config and alert rules, the Grafana
dashboard. There is no Docker daemon here: the compose file is read as YAML and checked for the topology; the
rules are checked and unit-tested by promtool (Debian's `prometheus` package, installed by .ci/run), and every
query of the dashboard must parse (promtool) and name only series that /metrics exposes.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BASE_DIR

DEPLOY = BASE_DIR / "deploy"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("REQUIRE_PROMTOOL") != "1",
    reason="promtool (Debian package prometheus) is not installed",
)
SERIES_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")
# PromQL words that look like series names.
PROMQL_WORDS = {"sum", "max", "min", "by", "rate", "increase", "histogram_quantile", "quantile_over_time", "le"}


def compose() -> dict:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())


def test_compose__the_topology_the_issue_asks_for():
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "prometheus", "grafana"}
    assert services["migrate"]["command"] == ["migrate"] and services["migrate"]["restart"] == "no"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://redis:")
    assert services["web"]["command"] == ["web"] and services["worker"]["command"] == ["worker"]
    # `--scale worker=N` needs a worker with no fixed name or host port.
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    # The commands are the image's roles (docker-entrypoint.sh).
    entrypoint = (BASE_DIR / "docker-entrypoint.sh").read_text()
    for role in ("web)", "worker)", "migrate)"):
        assert role in entrypoint
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            assert (BASE_DIR / source).exists(), volume


def test_prometheus_scrapes_the_webs_metrics_with_the_token_and_loads_the_rules():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["web:8000"]
    web_env = compose()["services"]["web"]["environment"]
    assert job["authorization"]["credentials"] in web_env["METRICS_TOKEN"]  # the compose default
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


@needs_promtool
def test_alert_rules__valid_and_their_unit_tests_pass():
    rules = DEPLOY / "prometheus" / "alerts.yml"
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    names = {rule["alert"] for group in yaml.safe_load(rules.read_text())["groups"] for rule in group["rules"]}
    assert names == {
        "LLMBudgetExceeded",
        "LLMCircuitBreakerOpen",
        "AgentRunFailureRateHigh",
        "AgentBacklogHigh",
        "NoLiveWorker",
        "QueueLagHigh",
    }
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=DEPLOY / "prometheus", capture_output=True, text=True
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus" / "alerts.test.yml").read_text()))
    assert tested == names  # every rule has a unit test


def exposed_series(client) -> set[str]:
    """Every series name /metrics can answer with (a family's name with each of its sample suffixes)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    families = text_string_to_metric_families(response.content.decode())
    return {family.name + suffix for family in families for suffix in SERIES_SUFFIXES}


def queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "agentrunner.json").read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return found + [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@pytest.mark.django_db
def test_dashboard_and_rules__query_only_series_that_metrics_exposes(client):
    exposed = exposed_series(client)
    for expr in queries():
        without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
        names = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", without_labels)) - PROMQL_WORDS
        names = {n for n in names if n.startswith(("agent_", "llm_", "workers_", "http_"))}
        assert names, expr
        assert names <= exposed, (expr, names - exposed)


def test_dashboard__the_panels_the_issue_asks_for():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "agentrunner.json").read_text())
    exprs = " ".join(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
    for series in (
        "agent_runs_total",  # runs/s by status
        "agent_run_duration_seconds_bucket",  # duration p95
        "agent_queue_depth",
        "agent_queue_lag_seconds",
        "agent_steps_in_flight",
        "llm_tokens_total",
        "llm_cost_usd_total",
        "llm_circuit_breaker_state",
        "workers_alive",
    ):
        assert series in exprs, series
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert yaml.safe_load((provisioning / "dashboards" / "agentrunner.yml").read_text())["providers"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"


@needs_promtool
def test_dashboard__every_query_parses(tmp_path: Path):
    """promtool checks PromQL in rule files: the dashboard's queries, as recording rules, must pass."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "agentrunner.json").read_text())
    rules = [
        {"record": f"dashboard:panel_{panel['id']}:{target['refId']}", "expr": target["expr"]}
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
