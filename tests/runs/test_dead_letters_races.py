"""Two decisions on one failure, raced on two PostgreSQL connections: the second waits for the first, then sees it."""

import threading

import pytest
from django.db import connection, connections

from runs import services
from runs.exceptions import RunAlreadyDecided
from runs.models import Run, RunDecision
from tests.conftest import wait_for
from tests.runs.test_dead_letters import failed_agent_run

postgres_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="two connections with row locks: PostgreSQL (SQLite serialises all)"
)


def someone_waits_for_a_lock() -> bool:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_retry_against_dismiss__the_dismissal_waits_for_the_retry_then_is_refused(monkeypatch):
    failed = failed_agent_run()
    locked, go_on = threading.Event(), threading.Event()
    real_rerun = services.run_rerun

    def rerun_then_pause(**kwargs):
        locked.set()  # the retry holds the run's row lock, its decision not yet written
        assert go_on.wait(10), "the dismissal never came"
        return real_rerun(**kwargs)

    monkeypatch.setattr(services, "run_rerun", rerun_then_pause)
    outcomes: dict[str, object] = {}

    def decide(name, call):
        try:
            outcomes[name] = call()
        except Exception as exc:  # noqa: BLE001 (checked below)
            outcomes[name] = exc
        finally:
            connection.close()

    retry = threading.Thread(target=decide, args=("retry", lambda: services.run_retry(run_id=failed.pk)))
    dismiss = threading.Thread(
        target=decide, args=("dismiss", lambda: services.run_dismiss(run_id=failed.pk, reason="seen"))
    )
    retry.start()
    assert locked.wait(10), "the retry never took its locks"
    dismiss.start()
    wait_for(someone_waits_for_a_lock, timeout=10, message="the dismissal waiting for the run's lock")
    go_on.set()
    retry.join(15)
    dismiss.join(15)

    assert isinstance(outcomes["retry"], RunDecision), outcomes
    assert isinstance(outcomes["dismiss"], RunAlreadyDecided), outcomes
    assert RunDecision.objects.filter(run=failed).count() == 1
    assert Run.objects.filter(rerun_of=failed).count() == 1
