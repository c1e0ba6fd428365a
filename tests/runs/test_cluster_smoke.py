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


def test_health_is_200_while_a_cluster_runs_and_503_after_it_stops(clusters):
    from rest_framework.test import APIClient

    (cluster,) = clusters(1)
    body = wait_for(
        lambda: (r := APIClient().get("/api/v1/health")).status_code == 200 and r.json(),
        timeout=10,
        message="healthy",
    )
    assert body["checks"]["workers"]["detail"].startswith("1 cluster(s) running, 2 worker(s)")
    cluster.stop()
    wait_for(lambda: APIClient().get("/api/v1/health").status_code == 503, timeout=10, message="unhealthy")


def test_extractor_then_checker_on_the_sample_policy(clusters):
    import json
    from pathlib import Path

    samples = Path(__file__).resolve().parents[2] / "samples"
    clusters(1)
    extract, _ = services.run_create(
        agent_type="document-extractor", input={"text": (samples / "policy.txt").read_text()}
    )
    extracted = wait_for(
        lambda: Run.objects.filter(pk=extract.pk, status=RunStatus.COMPLETED).first(), timeout=20, message="extract"
    )
    claim = json.loads((samples / "claim.json").read_text())
    assert extracted.result["fields"] == claim["fields"]
    check, _ = services.run_create(agent_type="policy-checker", input=claim)
    checked = wait_for(
        lambda: Run.objects.filter(pk=check.pk, status=RunStatus.COMPLETED).first(), timeout=20, message="check"
    )
    assert checked.result["decision"] == "approved", checked.result
