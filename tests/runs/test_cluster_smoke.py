import pytest

from runs import services
from runs.models import Run, RunStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.cluster


def test_run_completes_on_a_real_cluster(clusters):
    clusters(1)
    run, _ = services.run_create(agent_type="pass", input={"a": 1, "result": {"b": 2}})
    done = wait_for(
        lambda: Run.objects.filter(pk=run.pk, status=RunStatus.COMPLETED).first(), timeout=20, message="run done"
    )
    assert done.result == {"a": 1, "b": 2}
    assert done.steps.get().attempt_set.count() == 1
