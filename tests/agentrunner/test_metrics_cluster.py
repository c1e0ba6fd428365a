"""/metrics scraped from gunicorn (2 workers) while 2 real qcluster processes finish runs started through the API."""

import json
import urllib.error
import urllib.request
from collections import Counter

import pytest
from rest_framework.authtoken.models import Token

from runs.models import RUN_FINISHED, Run
from tests.agentrunner.test_metrics import samples, value
from tests.conftest import join, wait_for

pytestmark = pytest.mark.cluster

METRICS_TOKEN = "scrape-token"
RECORDER_SECONDS = 0.3


def request(port, path, *, method="GET", body=None, headers=None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def worker_files(directory) -> set[str]:
    """The pids of the gunicorn workers that wrote HTTP series (prometheus_client names files <kind>_<pid>.db)."""
    return {path.stem.rsplit("_", 1)[1] for path in directory.glob("*.db")}


def test_scrape_of_gunicorn_matches_the_runs_made_and_the_requests_of_both_workers(
    web, clusters, django_user_model, tmp_path
):
    user = django_user_model.objects.create_user("starter")
    join(user)
    auth = {"Authorization": f"Token {Token.objects.create(user=user).key}"}
    recorder_path = str(tmp_path / "recorded.txt")
    clusters(2, workers=1)
    metrics_dir = tmp_path / "prometheus"
    port = web(WEB_CONCURRENCY="2", METRICS_TOKEN=METRICS_TOKEN, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    made: Counter = Counter()  # (view, status) -> requests sent

    def send(path, view, **kwargs):
        status, body = request(port, path, **kwargs)
        made[(view, str(status))] += 1
        return status, body

    run_ids = []
    for body in [{"agent_type": "test-recorder", "input": {"path": recorder_path, "seconds": RECORDER_SECONDS}}] * 6 + [
        {"agent_type": "test-flaky", "input": {"succeed_on": 9}}  # fails its 3 attempts
    ] * 2:
        status, answer = send("/api/v1/runs", "runs-list", method="POST", body=body, headers=auth)
        assert status == 202, answer
        run_ids.append(json.loads(answer)["id"])
    # New connections until both workers have served (the kernel hands each to either); all are counted.
    wait_for(
        lambda: send("/api/v1/agents", "agents-list", headers=auth) and len(worker_files(metrics_dir)) >= 2,
        timeout=10,
        message="both gunicorn workers to serve a request",
    )
    wait_for(
        lambda: Run.objects.filter(pk__in=run_ids, status__in=RUN_FINISHED).count() == len(run_ids),
        timeout=20,
        message="the runs to finish",
    )

    status, text = request(port, "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200, text
    scraped = samples(text)

    assert value(scraped, "agent_runs_total", agent="test-recorder", status="COMPLETED") == 6
    assert value(scraped, "agent_runs_total", agent="test-flaky", status="FAILED") == 2
    runs = Run.objects.filter(agent_type="test-recorder")
    labels = {"agent": "test-recorder", "status": "COMPLETED"}
    assert value(scraped, "agent_run_duration_seconds_count", **labels) == 6
    assert value(scraped, "agent_run_duration_seconds_bucket", le="0.25", **labels) == 0  # each slept 0.3 s
    assert value(scraped, "agent_run_duration_seconds_sum", **labels) == pytest.approx(
        sum((r.finished_at - r.started_at).total_seconds() for r in runs), abs=1e-3
    )
    assert value(scraped, "agent_step_duration_seconds_count", agent="test-recorder") == 6
    assert value(scraped, "agent_queue_depth", agent="test-recorder", state="queued") is None  # nothing left
    assert value(scraped, "agent_queue_lag_seconds") == 0
    assert value(scraped, "workers_alive") == 2
    # Every request made, whichever worker served it, once; the scrape itself is counted after it answers.
    for (view, code), n in made.items():
        assert value(scraped, "http_requests_total", view=view, status=code) == n, (view, code)
    assert value(scraped, "http_request_duration_seconds_count", view="runs-list") == 8
