"""The rate limiter (agentrunner.ratelimit) on both stores, and the run-start limit on the API.

The limiter's unit tests give it the time (`now=`), so windows are checked to the microsecond; every one runs
on the database store and on Redis (db 7; skipped only when Redis is down and REQUIRE_REDIS is unset). The API's
run starts count against two keys: the acting team's (RUN_STARTS_PER_TEAM_PER_MINUTE or the team's own limit) and
the member's in that team (RUN_STARTS_PER_USER_PER_MINUTE or the team's own).
"""

import os
import re
import threading
import uuid

import pytest
import redis
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from agentrunner import ratelimit
from agentrunner.models import RateLimitKey, Role, Team
from agentrunner.ratelimit import Decision, acquire, run_start_limits
from agentrunner.teams.services import team_default
from runs.models import Run
from tests.conftest import client_for, free_port, join, team_named, wait_for
from tests.flows.factories import chain, flow

REDIS_URL = os.environ.get("TEST_RATELIMIT_REDIS_URL", "redis://127.0.0.1:6379/7")
USER_ID = "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"


def redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("REQUIRE_REDIS"):
            raise
        pytest.skip(f"no Redis at {REDIS_URL} (CI sets REQUIRE_REDIS=1)")
    return client


@pytest.fixture(autouse=True)
def no_prune_on_the_way(monkeypatch):
    """The clean-up runs once a minute per process, in whichever test is running then: here only when asked."""
    monkeypatch.setattr(ratelimit, "_next_prune", float("inf"))


@pytest.fixture(params=["database", "redis"])
def store(request, settings):
    """The limiter's store; yields a key maker whose keys are this test's own (runs in parallel share Redis)."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    made: list[str] = []

    def key(name: str) -> str:
        made.append(f"{prefix}:{name}")
        return made[-1]

    if request.param == "database":
        request.getfixturevalue("db")
        settings.REDIS_URL = ""
        yield key
        return
    client = redis_or_skip()
    settings.REDIS_URL = REDIS_URL
    yield key
    if made:
        client.delete(*[ratelimit.REDIS_PREFIX + k for k in made])


def refused(seconds: int, key: str, limit: int) -> Decision:
    return Decision(allowed=False, retry_after_seconds=seconds, key=key, limit=limit)


# --- the window ------------------------------------------------------------------------------------------------


def test_acquire__limit_starts_in_any_60_s_then_refused_until_the_oldest_leaves(store):
    user = store("user")
    for t in (1000.0, 1010.0, 1020.0):
        assert acquire([(user, 3)], now=t).allowed
    assert acquire([(user, 3)], now=1030.0) == refused(30, user, 3)
    assert acquire([(user, 3)], now=1059.999) == refused(1, user, 3)  # 1 ms left is a whole second
    assert acquire([(user, 3)], now=1060.0).allowed  # the start at 1000 left the window at 1060 exactly
    assert acquire([(user, 3)], now=1060.5) == refused(10, user, 3)  # now the oldest is 1010: 9.5 s, rounded up
    assert acquire([(user, 3)], now=1070.0).allowed


def test_acquire__a_refused_start_consumes_nothing(store):
    user = store("user")
    assert acquire([(user, 2)], now=0.0).allowed
    assert acquire([(user, 2)], now=1.0).allowed
    for t in range(2, 60):
        assert not acquire([(user, 2)], now=float(t)).allowed
    # Had the 58 refusals been recorded, the key would stay full until 119.
    assert acquire([(user, 2)], now=60.0).allowed
    assert acquire([(user, 2)], now=61.0).allowed
    assert acquire([(user, 2)], now=62.0) == refused(58, user, 2)


def test_acquire__two_keys__the_stricter_refuses_and_nothing_is_recorded_under_either(store):
    team = store("team")
    a, b, c = store("a"), store("b"), store("c")

    def start(user: str, t: float) -> Decision:
        return acquire([(user, 1), (team, 2)], now=t)

    assert start(a, 0.0).allowed
    assert start(a, 10.0) == refused(50, a, 1)  # the user's key; the team has room
    assert start(b, 30.0).allowed  # the team is full now, until 60 (the start at 0)
    assert start(b, 40.0) == refused(50, b, 1)  # both keys refuse: the longer wait (b's own, until 90) wins
    assert start(c, 40.0) == refused(20, team, 2)  # c has room; the team does not
    assert start(c, 60.0).allowed  # the team's start at 0 left; c's refusal at 40 did not count for c
    assert start(a, 70.0) == refused(20, team, 2)  # a has room again, the team (30, 60) does not


def test_acquire__retry_after_is_rounded_up_to_whole_seconds_without_float_noise(store):
    user = store("user")
    assert acquire([(user, 1)], now=0.7).allowed
    # 0.7 + 60 - 30.7 is 30.000000000000004 in floating point: 30 s, not 31.
    assert acquire([(user, 1)], now=30.7) == refused(30, user, 1)
    assert acquire([(user, 1)], now=30.8) == refused(30, user, 1)  # 29.9 s
    assert acquire([(user, 1)], now=60.69) == refused(1, user, 1)  # 0.01 s


def test_acquire__a_lowered_limit_waits_for_enough_starts_to_leave(store):
    user = store("user")
    for t in (0.0, 10.0, 20.0, 30.0):
        assert acquire([(user, 5)], now=t).allowed
    # 4 starts in the window, limit now 2: one more fits when 3 of them have left, at 20 + 60.
    assert acquire([(user, 2)], now=40.0) == refused(40, user, 2)


def test_acquire__limit_0_means_no_limit_and_a_repeated_key_takes_its_stricter_limit(store):
    user = store("user")
    assert all(acquire([(user, 0)], now=float(t)).allowed for t in range(10))
    assert acquire([], now=0.0).allowed
    assert acquire([(user, 5), (user, 1)], now=100.0).allowed
    assert acquire([(user, 1), (user, 5)], now=101.0) == refused(59, user, 1)


def test_acquire__refuses_a_negative_limit(store):
    with pytest.raises(ValueError, match="negative"):
        acquire([(store("user"), -1)], now=0.0)


# --- the database store ----------------------------------------------------------------------------------------


def test_acquire__database__one_row_per_key_holding_only_the_window(db, settings):
    settings.REDIS_URL = ""
    for t in (0.0, 20.0, 70.0):
        assert acquire([("user:1", 2), ("team:1", 100)], now=t).allowed
    rows = {row.key: row for row in RateLimitKey.objects.all()}
    assert set(rows) == {"user:1", "team:1"}
    assert rows["user:1"].hits == [20.0, 70.0]  # the start at 0 left the window and the log
    assert rows["user:1"].expires_at.timestamp() == 130.0


def test_acquire__database__locks_its_keys_in_sorted_order_with_an_update_first(db, settings):
    settings.REDIS_URL = ""
    acquire([("a", 5), ("b", 5), ("c", 5)], now=0.0)  # the rows exist
    with CaptureQueriesContext(connection) as queries:
        acquire([("c", 5), ("a", 5), ("b", 5)], now=1.0)
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    locks = statements[:3]
    assert all(s.startswith("UPDATE") and "hits" not in s for s in locks), statements
    assert [re.search(r"""key["']? = '(\w)'""", s).group(1) for s in locks] == ["a", "b", "c"]


def test_prune__deletes_rows_whose_window_has_passed_a_batch_at_a_time(db, settings):
    settings.REDIS_URL = ""
    for i in range(5):
        acquire([(f"old:{i}", 3)], now=float(i))
    acquire([("fresh", 3)], now=100.0)
    assert ratelimit.prune(now=120.0, batch=3) == 3  # old:0..4 left by 64; fresh holds until 160
    assert ratelimit.prune(now=120.0, batch=3) == 2
    assert ratelimit.prune(now=120.0) == 0
    assert list(RateLimitKey.objects.values_list("key", flat=True)) == ["fresh"]
    assert acquire([("old:0", 1)], now=121.0).allowed  # a pruned key starts afresh


def test_acquire__database__prunes_on_the_way_at_most_once_per_minute(db, settings, monkeypatch):
    settings.REDIS_URL = ""
    acquire([("old", 1)], now=0.0)
    monkeypatch.setattr(ratelimit, "_next_prune", 0.0)  # due
    acquire([("new", 1)], now=100.0)
    assert list(RateLimitKey.objects.values_list("key", flat=True)) == ["new"]
    acquire([("other", 1)], now=300.0)  # "new" has expired too, but the next clean-up is a minute away
    assert set(RateLimitKey.objects.values_list("key", flat=True)) == {"new", "other"}


def test_acquire__database__a_pruned_or_missing_row_is_created_again(db, settings):
    settings.REDIS_URL = ""
    assert acquire([("user:1", 1)], now=0.0).allowed
    RateLimitKey.objects.all().delete()
    assert acquire([("user:1", 1)], now=1.0).allowed


@pytest.mark.django_db(transaction=True)
def test_acquire__database__concurrent_first_starts_of_a_new_key__exactly_limit_allowed(settings):
    """Threads race to create the key's row; ON CONFLICT DO NOTHING then the lock count each start once."""
    settings.REDIS_URL = ""
    threads_count, limit = 8, 3
    barrier = threading.Barrier(threads_count)
    decisions: list[Decision] = []

    def start():
        try:
            barrier.wait()
            decisions.append(acquire([("new-key", limit)]))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(d.allowed for d in decisions) == limit, decisions
    assert len(decisions) == threads_count
    assert len(RateLimitKey.objects.get(key="new-key").hits) == limit


@pytest.mark.django_db(transaction=True)
def test_acquire__database__a_second_start_waits_for_the_key_lock_then_sees_the_first(settings):
    """PostgreSQL: while one transaction holds the key's row, another acquire blocks; after the commit it counts
    the first start and is refused. (SQLite serialises whole transactions at BEGIN IMMEDIATE instead.)"""
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite's write lock is taken at BEGIN (the process test covers it)")
    settings.REDIS_URL = ""
    from django.db import transaction

    assert acquire([("shared", 1)], now=0.0) == Decision(allowed=True)  # the row exists, empty after 60
    holding = threading.Event()
    release = threading.Event()
    second: list[Decision] = []
    backend_pid: list[int] = []

    def first():
        try:
            with transaction.atomic():
                ratelimit._lock("shared")
                RateLimitKey.objects.filter(key="shared").update(hits=[100.0])
                holding.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()

    def other():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend_pid.append(cursor.fetchone()[0])
            second.append(acquire([("shared", 1)], now=110.0))
        finally:
            connections.close_all()

    holder = threading.Thread(target=first)
    holder.start()
    assert holding.wait(timeout=30)
    waiter = threading.Thread(target=other)
    waiter.start()

    def waiting_for_a_lock() -> bool:
        if not backend_pid:
            return False
        with connection.cursor() as cursor:
            cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [backend_pid[0]])
            row = cursor.fetchone()
        return bool(row) and row[0] == "Lock"

    wait_for(waiting_for_a_lock, timeout=30, message="the second acquire to wait for the key's row lock")
    assert not second
    release.set()
    holder.join(timeout=30)
    waiter.join(timeout=30)
    assert second == [refused(50, "shared", 1)]  # it saw the start at 100 committed while it waited


# --- Redis ----------------------------------------------------------------------------------------------------


def test_acquire__redis__keys_expire_after_the_window(settings):
    client = redis_or_skip()
    settings.REDIS_URL = REDIS_URL
    user = f"test-{uuid.uuid4().hex[:12]}:user"
    try:
        assert acquire([(user, 2)]).allowed  # Redis' own clock
        assert 0 < client.pttl(ratelimit.REDIS_PREFIX + user) <= 60_000
    finally:
        client.delete(ratelimit.REDIS_PREFIX + user)


def test_acquire__redis_not_answering__the_start_is_allowed_and_logged(settings, caplog):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/7"  # nothing listens there
    caplog.set_level("INFO")
    assert acquire([("user:1", 1)], now=0.0).allowed
    assert acquire([("user:1", 1)], now=1.0).allowed
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert [e["event"] for e in events] == ["rate_limit_unavailable"] * 2
    assert events[0]["keys"] == ["user:1"]


# --- the API ---------------------------------------------------------------------------------------------------


class FakeClock:
    """The limiter's clock (the store's), moved by the test."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch, settings):
    settings.REDIS_URL = ""
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 100
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 20
    fake = FakeClock()
    monkeypatch.setattr(ratelimit, "_database_clock", fake)
    return fake


def start_run(client, i: int = 0, team: str | None = None, **extra):
    headers = {"HTTP_X_TEAM": team} if team else {}
    return client.post("/api/v1/runs", {"agent_type": "pass", "input": {"i": i}, **extra}, format="json", **headers)


def members(django_user_model, team: Team, count: int, role: str = Role.RUNNER, prefix: str = "m") -> list:
    users = [django_user_model.objects.create_user(username=f"{prefix}{i}-{team.slug}") for i in range(count)]
    for user in users:
        join(user, role, team)
    return users


def rate_limited_events(caplog) -> list[dict]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg["event"] == "rate_limited"]


def test_run_start_limits__the_team_key_and_the_members_key_with_the_settings_defaults(owner, settings):
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 100
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 20
    team = team_default()
    assert run_start_limits(user=owner, team=team) == [
        (f"run-starts:team:{team.pk}", 100),
        (f"run-starts:team:{team.pk}:user:{owner.pk}", 20),
    ]
    team.run_starts_per_minute, team.run_starts_per_user_per_minute = 0, 5  # the team's own: 0 = no limit
    assert [limit for _, limit in run_start_limits(user=owner, team=team)] == [0, 5]


def test_api__the_21st_start_in_a_minute_is_429_with_retry_after_and_logged(api, owner, outsider, clock, caplog):
    caplog.set_level("INFO")
    team = team_default()
    first = clock.now
    for i in range(20):
        clock.now = first + i
        assert start_run(api, i).status_code == 202
    clock.now = first + 30.5
    response = start_run(api, 20)
    assert response.status_code == 429
    assert response["Retry-After"] == "30"  # the first start leaves the window 29.5 s later
    assert response.json() == {
        "detail": "Too many requests: try again in 30 seconds.",
        "code": "rate_limited",
        "errors": {},
    }
    assert Run.objects.filter(created_by=owner).count() == 20
    (event,) = rate_limited_events(caplog)
    assert event["user_id"] == owner.pk and event["team"] == "default"
    assert event["key"] == f"run-starts:team:{team.pk}:user:{owner.pk}"
    assert event["retry_after"] == 30 and event["limit"] == 20
    assert event["level"] == "warning"

    assert start_run(client_for(outsider)).status_code == 202  # another user's own window

    clock.now = first + 59.5
    assert start_run(api, 21).json()["detail"] == "Too many requests: try again in 1 second."

    clock.now = first + 60.0
    assert start_run(api, 21).status_code == 202  # the first start has left


def test_api__the_member_limit_refuses_one_member_while_the_team_has_room(owner, django_user_model, clock):
    (colleague,) = members(django_user_model, team_default(), 1)
    api = client_for(owner)
    assert [start_run(api, i).status_code for i in range(21)] == [202] * 20 + [429]
    assert [start_run(client_for(colleague), i).status_code for i in range(20)] == [202] * 20  # 40 of 100


def test_api__the_101st_start_of_a_team_in_a_minute_is_429_whoever_sends_it(django_user_model, clock, caplog):
    caplog.set_level("INFO")
    acme = team_named("acme")
    team_members = members(django_user_model, acme, 6)
    first = clock.now
    statuses = []
    for i in range(101):  # 6 members, at most 17 each: under their own limit of 20
        clock.now = first + i * 0.25
        statuses.append(start_run(client_for(team_members[i % 6]), i).status_code)
    assert statuses == [202] * 100 + [429]
    (event,) = rate_limited_events(caplog)
    assert (event["key"], event["limit"], event["team"]) == (f"run-starts:team:{acme.pk}", 100, "acme")
    assert event["retry_after"] == 35  # the team's first start (at +0) leaves at +60; refused at +25
    assert Run.objects.filter(team=acme).count() == 100


def test_api__team_b_starts_while_team_a_is_over_its_limit(django_user_model, clock, settings):
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 3
    a_members = members(django_user_model, team_named("acme"), 4)
    b_members = members(django_user_model, team_named("globex"), 4)
    assert [start_run(client_for(user)).status_code for user in a_members] == [202, 202, 202, 429]
    assert [start_run(client_for(user)).status_code for user in b_members] == [202, 202, 202, 429]
    assert start_run(client_for(a_members[0])).status_code == 429  # B's starts gave A no room either


def test_api__a_member_of_two_teams_has_a_window_in_each(django_user_model, clock, settings):
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 2
    user = django_user_model.objects.create_user(username="both")
    join(user, Role.RUNNER, team_named("acme"))
    join(user, Role.RUNNER, team_named("globex"))
    api = client_for(user)
    assert [start_run(api, team="acme").status_code for _ in range(3)] == [202, 202, 429]
    assert [start_run(api, team="globex").status_code for _ in range(3)] == [202, 202, 429]


def test_api__a_teams_own_limits_replace_the_defaults(django_user_model, clock, settings):
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 1
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 1
    strict, free = team_named("strict"), team_named("free")
    Team.objects.filter(pk=strict.pk).update(run_starts_per_minute=3, run_starts_per_user_per_minute=2)
    Team.objects.filter(pk=free.pk).update(run_starts_per_minute=0, run_starts_per_user_per_minute=0)  # no limit
    first, second = members(django_user_model, strict, 2)
    assert [start_run(client_for(first)).status_code for _ in range(3)] == [202, 202, 429]  # the member's 2
    assert [start_run(client_for(second)).status_code for _ in range(2)] == [202, 429]  # the team's 3
    (loose,) = members(django_user_model, free, 1)
    assert [start_run(client_for(loose)).status_code for _ in range(5)] == [202] * 5
    assert not RateLimitKey.objects.filter(key__startswith=f"run-starts:team:{free.pk}").exists()


@pytest.fixture
def stored_flow(staff_user):
    return flow(slug="rl-flow")


ENDPOINTS = {
    "runs": lambda c: c.post("/api/v1/runs", {"agent_type": "pass", "input": {}}, format="json"),
    "runs-flow": lambda c: c.post("/api/v1/runs", {"flow": "rl-flow", "input": {}}, format="json"),
    "agents-run": lambda c: c.post(
        "/api/v1/agents/run", {"agent_type": "pass", "user_id": USER_ID, "input": {}}, format="json"
    ),
    "flows-run": lambda c: c.post("/api/v1/flows/rl-flow/runs", {"input": {}}, format="json"),
    "flow-execute": lambda c: c.post("/api/v1/flow/execute", {"flow": chain(("a", "pass", {}))}, format="json"),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_api__every_start_operation_is_limited_staff_included(endpoint, staff_api, stored_flow, clock, settings):
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 2
    post = ENDPOINTS[endpoint]
    assert [post(staff_api).status_code for _ in range(2)] == [202, 202]
    response = post(staff_api)
    assert response.status_code == 429 and response["Retry-After"] == "60"
    assert response.json()["code"] == "rate_limited"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_api__every_start_operation_counts_for_the_team(endpoint, staff_api, owner, stored_flow, clock, settings):
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 2
    post = ENDPOINTS[endpoint]
    assert post(staff_api).status_code == 202
    assert start_run(client_for(owner)).status_code == 202  # another member of the team: the team's 2nd
    response = post(staff_api)
    assert response.status_code == 429 and response["Retry-After"] == "60"


def test_api__the_start_operations_share_one_limit(staff_api, stored_flow, clock, settings):
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 4
    statuses = [ENDPOINTS[name](staff_api).status_code for name in ENDPOINTS]
    assert statuses == [202, 202, 202, 202, 429]


def test_api__superusers_are_limited_in_the_team_they_act_in(django_user_model, clock, settings):
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 1
    root = django_user_model.objects.create_superuser(username="root", password="pw")
    team_named("acme")
    api = client_for(root)
    assert [start_run(api, team="acme").status_code for _ in range(2)] == [202, 429]
    assert start_run(api).status_code == 202  # without X-Team: the default team, another window


def test_api__reading_and_other_writes_are_not_limited(api, owner, clock, settings):
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 1
    run_id = start_run(api).json()["id"]
    assert start_run(api).status_code == 429
    assert api.get("/api/v1/runs").status_code == 200
    assert api.get(f"/api/v1/runs/{run_id}").status_code == 200
    assert api.delete(f"/api/v1/runs/{run_id}").status_code in (202, 409)


def test_api__an_idempotent_replay_is_neither_counted_nor_refused(api, owner, clock, settings):
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 2
    first = start_run(api, idempotency_key="order-1")
    assert first.status_code == 202
    for _ in range(5):  # retries of one request: the same run, no start
        replay = start_run(api, idempotency_key="order-1")
        assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert start_run(api, 1).status_code == 202  # the second start of the minute
    assert start_run(api, 2).status_code == 429
    assert start_run(api, idempotency_key="order-1").status_code == 200  # at the limit, a replay still answers
    assert start_run(api, 2, idempotency_key="order-2").status_code == 429  # a new key is a new start


def test_api__limit_0_counts_nothing(api, clock, settings):
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 0
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 0
    assert [start_run(api, i).status_code for i in range(3)] == [202, 202, 202]
    assert not RateLimitKey.objects.exists()


def test_api__unauthenticated_forbidden_and_teamless_requests_count_nothing(
    client, api, django_user_model, clock, settings
):
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 1
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 1
    assert client.post("/api/v1/runs", {"agent_type": "pass"}, content_type="application/json").status_code == 401
    viewer = django_user_model.objects.create_user(username="viewer")
    join(viewer, Role.VIEWER)
    assert start_run(client_for(viewer)).json()["code"] == "permission_denied"  # below runner
    loner = django_user_model.objects.create_user(username="loner")
    assert start_run(client_for(loner)).json()["code"] == "no_team"
    assert start_run(api, team="nope").status_code == 404
    assert not RateLimitKey.objects.exists()
    assert start_run(api).status_code == 202


def test_api__redis_store(django_user_model, settings):
    client = redis_or_skip()
    settings.REDIS_URL = REDIS_URL
    settings.RUN_STARTS_PER_TEAM_PER_MINUTE = 4
    settings.RUN_STARTS_PER_USER_PER_MINUTE = 3
    # Other test databases number their teams from 1 too, and share this Redis: a team id of this test's own.
    team = Team.objects.create(slug="redis-team", name="Redis team", id=10**9 + uuid.uuid4().int % 10**9)
    first, second = members(django_user_model, team, 2)
    team_key = ratelimit.REDIS_PREFIX + f"run-starts:team:{team.pk}"
    member_key = ratelimit.REDIS_PREFIX + f"run-starts:team:{team.pk}:user:{first.pk}"
    try:
        assert [start_run(client_for(first), i).status_code for i in range(4)] == [202, 202, 202, 429]
        assert [start_run(client_for(second), i).status_code for i in range(2)] == [202, 429]  # the team's 4th
        assert (client.zcard(team_key), client.zcard(member_key)) == (4, 3)
        assert not RateLimitKey.objects.exists()  # nothing in the database
    finally:
        client.delete(*client.keys(team_key + "*"))
