"""Every list of the runs API answers in a number of queries that does not grow with its rows."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from flows import services as flow_services
from runs import engine, services

pytestmark = pytest.mark.django_db

FLOW = {
    "name": "two steps",
    "start_task": "first",
    "tasks": [{"name": "first", "agent": "pass"}, {"name": "second", "agent": "pass"}],
    "conditions": [
        {
            "name": "then",
            "source_task": "first",
            "outcome": "success",
            "target_task_success": "second",
            "target_task_failure": "end",
        }
    ],
}


def queries(api, path: str) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = api.get(path)
    assert response.status_code == 200, response.content
    return len(captured), response.json()


def finished_run(owner, *, flow=None):
    """A run that ran: a flow run has two steps, each with an attempt; an agent run one."""
    if flow is None:
        run, _ = services.run_create(agent_type="pass", input={"x": 1}, created_by=owner)
    else:
        run, _ = services.flow_run_create(version=flow.current_version, input={}, created_by=owner)
    for _ in range(3):  # a flow's next step is queued when the previous one finishes
        for step in run.steps.filter(status="QUEUED"):
            engine.step_execute(step_id=step.pk)
    return run


@pytest.fixture
def flow(owner):
    return flow_services.flow_create(slug="two-steps", name="Two steps", definition=FLOW, owner=owner)


def test_runs_list__queries_do_not_grow_with_runs(api, owner, flow):
    finished_run(owner)
    finished_run(owner, flow=flow)
    few, _ = queries(api, "/api/v1/runs?limit=100")
    for _ in range(5):
        finished_run(owner)
        finished_run(owner, flow=flow)
    many, body = queries(api, "/api/v1/runs?limit=100")

    assert body["count"] == 12
    assert {r["flow"]["slug"] for r in body["results"] if r["flow"]} == {"two-steps"}
    assert many == few, f"{few} queries for 2 runs, {many} for 12"


def test_run_steps__queries_do_not_grow_with_steps_or_attempts(api, owner, flow):
    short = finished_run(owner)
    few, _ = queries(api, f"/api/v1/runs/{short.pk}/steps")
    long = finished_run(owner, flow=flow)
    many, body = queries(api, f"/api/v1/runs/{long.pk}/steps")

    assert [s["name"] for s in body["results"]] == ["first", "second"]
    assert all(len(s["attempts"]) == 1 for s in body["results"])
    assert many == few


def test_run_metrics__queries_do_not_grow_with_steps(api, owner, flow):
    few, _ = queries(api, f"/api/v1/runs/{finished_run(owner).pk}/metrics")
    many, body = queries(api, f"/api/v1/runs/{finished_run(owner, flow=flow).pk}/metrics")

    assert len(body["steps"]) == 2
    assert many == few


def test_agents_list__queries_do_not_grow_with_overrides(staff_api):
    few, _ = queries(staff_api, "/api/v1/agents")
    for agent_type in ("wait", "pass", "http-request"):
        services.agent_policy_update(agent_type=agent_type, limit=2, on_busy="queue")
    many, body = queries(staff_api, "/api/v1/agents")

    assert sum(a["overridden"] for a in body["results"]) == 3
    assert many == few
