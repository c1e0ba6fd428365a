"""The flow-manager document's own sample (task1 -> task2 -> task3) runs as written through /flow/execute.

samples/sample_flow.json is the document's request body, unchanged; samples/flow_manager.py holds its task
functions (`@task`), which `make run` loads (AGENT_MODULES' development default).
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentrunner.agents import TaskResult, all_agents, registry
from flows.api import execute
from runs.models import RunStatus, Step
from tests.conftest import client_for
from tests.flows.test_flow_engine import drive

pytestmark = pytest.mark.django_db

BASE_DIR = Path(__file__).resolve().parents[2]
SAMPLE_REQUEST = json.loads((BASE_DIR / "samples" / "sample_flow.json").read_text())
# The document's response: its execution history, task by task.
EXPECTED_HISTORY = {
    "task1": {"status": "success", "data": {"raw_data": "data"}},
    "task2": {"status": "success", "data": {"processed_data": "data"}},
    "task3": {"status": "success", "data": {"storage_id": "12345"}},
}


@pytest.fixture
def samples_enabled(settings, monkeypatch):
    """The samples module in AGENT_MODULES, imported as AgentRunnerConfig.ready does at start-up.

    For this test only: its tasks go into a copy of the registry (other tests list every agent type there is),
    and the module is imported afresh so that it registers them there.
    """
    monkeypatch.setattr(registry, "_AGENTS", dict(registry._AGENTS))
    monkeypatch.delitem(sys.modules, "samples.flow_manager", raising=False)
    settings.AGENT_MODULES = [*settings.AGENT_MODULES, "samples.flow_manager"]
    for module in settings.AGENT_MODULES:
        importlib.import_module(module)


@pytest.fixture
def inline_worker(monkeypatch):
    """Execute a started run's steps in this process before /flow/execute waits for it (no cluster here)."""
    wait = execute.selectors.flow_run_wait

    def drive_then_wait(*, run, seconds):
        return wait(run=drive(run), seconds=0)

    monkeypatch.setattr(execute.selectors, "flow_run_wait", drive_then_wait)


def test_the_documents_request_is_the_sample_file():
    flow = SAMPLE_REQUEST["flow"]
    assert list(SAMPLE_REQUEST) == ["flow"]  # no input, no wait: exactly the document's body
    assert [t["name"] for t in flow["tasks"]] == ["task1", "task2", "task3"]
    assert all(set(t) == {"name", "description"} for t in flow["tasks"])


def test_sample_flow__runs_to_completed_with_the_documents_results(samples_enabled, owner, outsider):
    api = client_for(owner)
    response = api.post("/api/v1/flow/execute", SAMPLE_REQUEST, format="json")
    assert response.status_code == 202, response.json()
    run_id = response.json()["run_id"]
    run = drive(Step.objects.get(run_id=run_id).run)
    assert run.status == RunStatus.COMPLETED
    body = api.get(f"/api/v1/runs/{run_id}").json()
    assert body["status"] == RunStatus.COMPLETED
    assert body["result"]["path"] == ["task1", "task2", "task3"]
    assert body["result"]["execution_history"] == EXPECTED_HISTORY
    assert body["result"]["output"] == {"storage_id": "12345"}
    assert client_for(outsider).get(f"/api/v1/runs/{run_id}").status_code == 404  # another team's run


def test_sample_flow__answers_as_the_document_does_when_it_ends_within_the_wait(samples_enabled, inline_worker, owner):
    response = client_for(owner).post("/api/v1/flow/execute", SAMPLE_REQUEST, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["message"] == "Flow executed successfully"
    assert body["execution_history"] == EXPECTED_HISTORY
    assert body["status"] == RunStatus.COMPLETED and body["flow_id"].startswith("inline-")


def test_sample_flow__a_failed_task_ends_the_flow(samples_enabled, inline_worker, owner, monkeypatch):
    monkeypatch.setattr(all_agents()["task2"], "function", staticmethod(lambda: TaskResult(status="failure")))
    response = client_for(owner).post("/api/v1/flow/execute", SAMPLE_REQUEST, format="json")
    body = response.json()
    assert body["status"] == RunStatus.FAILED
    assert body["message"] == "Flow failed: Task 'task2' reported failure."
    assert body["execution_history"] == {
        "task1": EXPECTED_HISTORY["task1"],
        "task2": {"status": "failure", "data": {"error": "Task 'task2' reported failure."}},
    }


def test_make_run_loads_the_samples_module_and_production_does_not():
    """`make run` sets DEBUG=1 and no AGENT_MODULES: the sample tasks are there; with DEBUG=0, not."""
    script = (
        "from agentrunner.agents import all_agents; from django.conf import settings; "
        "print(settings.AGENT_MODULES, sorted(a for a in all_agents() if a.startswith('task')))"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"AGENT_MODULES", "DJANGO_SETTINGS_MODULE"}}
    env.update(DJANGO_SETTINGS_MODULE="agentrunner.settings", SECRET_KEY="x")
    shown = {}
    for debug in ("1", "0"):
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=BASE_DIR,
            env={**env, "DEBUG": debug},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        shown[debug] = result.stdout.strip().splitlines()[-1]
    assert shown["1"] == "['samples.flow_manager'] ['task1', 'task2', 'task3']"
    assert shown["0"] == "[] []"
