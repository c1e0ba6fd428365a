"""The workers check across a lapse of django-q2's cluster status (kept 3 s, renewed by a sentinel that can be
busy): a cluster seen running a moment ago still counts for STATUS_LAPSE_SECONDS; one that said it stops, or
has been gone for longer, does not."""

from types import SimpleNamespace

import pytest
from django_q.status import Stat

from agentrunner import health

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(monkeypatch):
    state = SimpleNamespace(stats=[], now=1000.0)
    monkeypatch.setattr(Stat, "get_all", staticmethod(lambda *args, **kwargs: list(state.stats)))
    monkeypatch.setattr(health, "_clock", lambda: state.now)
    monkeypatch.setattr(health, "_last_seen_running", {})
    return state


def cluster(status="Idle", cluster_id="c1"):
    return SimpleNamespace(cluster_id=cluster_id, status=status, workers=[1, 2], host="vm")


def workers():
    return health.checks()["workers"]


def test_a_lapsed_status_counts_for_a_few_seconds_then_not(world):
    world.stats = [cluster()]
    assert workers()["ok"] and workers()["detail"].startswith("1 cluster(s) running, 2 worker(s)")
    world.stats, world.now = [], world.now + 4  # the sentinel was busy: the status lapsed
    check = workers()
    assert check["ok"] and "status has lapsed" in check["detail"]
    world.now += health.STATUS_LAPSE_SECONDS  # gone for longer: not running
    assert not workers()["ok"]


def test_a_cluster_that_said_it_stops_is_not_counted_after_its_status_goes(world):
    world.stats = [cluster()]
    assert workers()["ok"]
    world.stats = [cluster(status="Stopping")]
    assert not workers()["ok"]
    world.stats, world.now = [], world.now + 1
    assert not workers()["ok"]


def test_without_any_cluster_seen_it_is_not_running(world):
    assert not workers()["ok"]
    assert "manage.py worker" in workers()["detail"]
