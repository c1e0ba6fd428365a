"""The same engine on the Redis broker (REDIS_URL): runs complete, and a lost message is sent again."""

import os
import subprocess
import sys
import uuid

import pytest
import redis

from runs.models import Run, RunStatus, Step, StepStatus
from tests.conftest import BASE_DIR, test_database_url, wait_for

pytestmark = pytest.mark.cluster
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_env():
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("REQUIRE_REDIS"):
            raise
        pytest.skip(f"no Redis at {REDIS_URL} (CI sets REQUIRE_REDIS=1)")
    # A queue name of its own, so nothing else on this Redis sees our messages.
    return {"REDIS_URL": REDIS_URL, "Q_CLUSTER_NAME": f"test-{uuid.uuid4().hex[:8]}"}


def manage_shell(code: str, env: dict) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": test_database_url(),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_runs_complete_on_the_redis_broker(clusters, redis_env):
    clusters(1, **redis_env)
    run_id = manage_shell(
        "from runs import services; print(services.run_create(agent_type='pass', input={'a': 1})[0].id)", redis_env
    )
    run = wait_for(lambda: Run.objects.filter(pk=run_id, status=RunStatus.COMPLETED).first(), timeout=20, message="run")
    assert run.result == {"a": 1}


def test_a_lost_redis_message_is_sent_again(clusters, redis_env):
    # Redis has no delivery receipts: a message pulled by a cluster that died is gone.
    # Simulate it by emptying the queue after the run is created, before any cluster runs.
    run_id = manage_shell(
        "from runs import services; from django_q.brokers import get_broker; "
        "r = services.run_create(agent_type='pass', input={})[0]; get_broker().purge_queue(); print(r.id)",
        redis_env,
    )
    assert Step.objects.get(run_id=run_id).status == StepStatus.QUEUED
    clusters(1, STEP_REDISPATCH_SECONDS=1, **redis_env)
    run = wait_for(lambda: Run.objects.filter(pk=run_id, status=RunStatus.COMPLETED).first(), timeout=20, message="run")
    assert run.steps.get().attempt_set.count() == 1
