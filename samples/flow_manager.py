"""The flow-manager's sample tasks (task1 -> task2 -> task3), registered as agents with `@task`.

Loaded by `make run` (the development default of AGENT_MODULES), so the flow-manager's own sample request,
samples/sample_flow.json (the document's app/sample_flow.json), runs as written:

    curl -H "Authorization: Token $TOKEN" -H "Content-Type: application/json" \\
      -d @samples/sample_flow.json http://127.0.0.1:8000/api/v1/flow/execute
"""

import structlog

from agentrunner.agents import TaskResult, task

log = structlog.get_logger(__name__)


@task("task1")
def fetch_data() -> TaskResult:
    """Fetch data."""
    log.info("task1_fetch_data")
    return TaskResult(status="success", data={"raw_data": "data"})


@task("task2")
def process_data() -> TaskResult:
    """Process data."""
    log.info("task2_process_data")
    return TaskResult(status="success", data={"processed_data": "data"})


@task("task3")
def store_data() -> TaskResult:
    """Store data."""
    log.info("task3_store_data")
    return TaskResult(status="success", data={"storage_id": "12345"})
