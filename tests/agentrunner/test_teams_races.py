"""Two admins demoting each other at once, on two PostgreSQL connections: the team keeps an admin."""

import threading

import pytest
from django.db import connection

from agentrunner.models import Membership, Role
from agentrunner.teams import services
from agentrunner.teams.exceptions import LastAdmin
from tests.conftest import join, team_named, wait_for
from tests.runs.test_dead_letters_races import postgres_only, someone_waits_for_a_lock


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_admins_demoting_each_other__the_second_waits_then_is_refused(django_user_model, monkeypatch):
    team = team_named("acme")
    for name in ("ada", "bob"):
        join(django_user_model.objects.create_user(name), Role.ADMIN, team)
    locked, go_on = threading.Event(), threading.Event()
    real_count = services._admins_left_after

    def count_then_pause(team, membership):
        if not locked.is_set():
            locked.set()  # the first demotion holds the team's lock, its change not yet written
            assert go_on.wait(10), "the second demotion never came"
        return real_count(team, membership)

    monkeypatch.setattr(services, "_admins_left_after", count_then_pause)
    outcomes: dict[str, object] = {}

    def demote(name):
        try:
            outcomes[name] = services.member_role_set(team=team, username=name, role=Role.VIEWER)
        except Exception as exc:  # noqa: BLE001 (checked below)
            outcomes[name] = exc
        finally:
            connection.close()

    first = threading.Thread(target=demote, args=("ada",))
    second = threading.Thread(target=demote, args=("bob",))
    first.start()
    assert locked.wait(10), "the first demotion never took its locks"
    second.start()
    wait_for(someone_waits_for_a_lock, timeout=10, message="the second demotion waiting for the team's lock")
    go_on.set()
    first.join(15)
    second.join(15)

    assert isinstance(outcomes["ada"], Membership), outcomes
    assert isinstance(outcomes["bob"], LastAdmin), outcomes
    roles = dict(Membership.objects.filter(team=team).values_list("user__username", "role"))
    assert roles == {"ada": Role.VIEWER, "bob": Role.ADMIN}
