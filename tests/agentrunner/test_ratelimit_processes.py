"""The team's run-start limit across processes: two gunicorn processes against one database (and then one Redis)
share one window, so of 150 concurrent starts by the members of one team (limit 100), exactly 100 are accepted,
and every 429's Retry-After is when the team's first accepted start leaves the window, to the second.
"""

import json
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from rest_framework.authtoken.models import Token

from agentrunner import ratelimit
from agentrunner.models import Role, Team
from runs.models import Run
from tests.agentrunner.test_ratelimit import REDIS_URL, redis_or_skip
from tests.conftest import join

pytestmark = pytest.mark.cluster

STARTS = 150
LIMIT = 100  # RUN_STARTS_PER_TEAM_PER_MINUTE's default
MEMBERS = 10  # 15 starts each: under the member limit (20), so only the team's limit refuses
MEMBER_LIMIT = 20
CLIENT_THREADS = 16  # as many as the two servers' threads: requests are served, not queued, so times are tight
SERVER_THREADS = "8"
WINDOW_SECONDS = ratelimit.WINDOW_SECONDS


@dataclass
class Answer:
    port: int
    sent: float  # time.time() just before sending
    received: float  # ... and just after the answer
    status: int
    retry_after: int | None
    body: dict


def start_run(port: int, token: str, i: int) -> Answer:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/runs",
        data=json.dumps({"agent_type": "pass", "input": {"i": i}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
    )
    sent = time.time()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, error.headers, error.read()
    received = time.time()
    retry_after = headers.get("Retry-After")
    return Answer(port, sent, received, status, int(retry_after) if retry_after else None, json.loads(body))


@pytest.fixture
def redis_store():
    """The web processes' environment for the Redis store (db 7), with a task queue of this test's own."""
    client = redis_or_skip()
    name = f"test-ratelimit-{uuid.uuid4().hex[:8]}"
    yield {"REDIS_URL": REDIS_URL, "Q_CLUSTER_NAME": name}
    leftovers = list(client.scan_iter(match=f"*{name}*"))
    if leftovers:
        client.delete(*leftovers)


@pytest.mark.parametrize("store", ["database", "redis"])
def test_150_starts_of_one_team_on_two_web_processes__exactly_100_accepted_and_retry_after_to_the_second(
    store, web, transactional_db, django_user_model, tmp_path, request, settings
):
    assert settings.RUN_STARTS_PER_TEAM_PER_MINUTE == LIMIT  # the default, which the team below keeps (null)
    env = {
        "RUN_STARTS_PER_TEAM_PER_MINUTE": str(LIMIT),
        "RUN_STARTS_PER_USER_PER_MINUTE": str(MEMBER_LIMIT),
        "WEB_THREADS": SERVER_THREADS,
    }
    if store == "redis":
        env.update(request.getfixturevalue("redis_store"))
    # Every test database numbers its teams from 1 and a Redis is shared: a team id, so keys, of this test's own.
    team = Team.objects.create(slug="flood", name="Flood", id=10**9 + uuid.uuid4().int % 10**9)
    tokens = []
    for i in range(MEMBERS):
        user = django_user_model.objects.create_user(username=f"member-{i}")
        join(user, Role.RUNNER, team)
        tokens.append(Token.objects.create(user=user).key)
    team_key = f"run-starts:team:{team.pk}"
    ports = [web(**env), web(**env)]

    def send(i: int) -> Answer:
        # Member i % 10; the servers alternate, and swap after each round of members, so each member's starts
        # reach both processes and each process gets half.
        return start_run(ports[(i + i // MEMBERS) % 2], tokens[i % MEMBERS], i)

    try:
        with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
            answers = list(pool.map(send, range(STARTS)))
        counted = redis.Redis.from_url(REDIS_URL).zcard(ratelimit.REDIS_PREFIX + team_key) if store == "redis" else None
    finally:
        if store == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            leftovers = list(client.scan_iter(match=f"{ratelimit.REDIS_PREFIX}{team_key}*"))
            if leftovers:
                client.delete(*leftovers)

    accepted = [a for a in answers if a.status == 202]
    limited = [a for a in answers if a.status == 429]
    span = max(a.received for a in answers) - min(a.sent for a in answers)
    # The premise: every start falls in the window of the first (the "150 starts in 10 s").
    assert span < WINDOW_SECONDS - 5, f"the 150 starts took {span:.1f} s"
    assert (len(accepted), len(limited)) == (LIMIT, STARTS - LIMIT), sorted({a.status for a in answers})
    assert Run.objects.filter(team=team).count() == LIMIT
    if store == "redis":
        assert counted == LIMIT
    for port in ports:  # both processes took starts: the window is shared, not per process
        assert any(a.port == port for a in accepted)
        assert sum(a.status in (202, 429) for a in answers if a.port == port) == STARTS // 2

    # Every refusal was the team's: no member reached their own limit.
    logged_keys = [
        line
        for port in ports
        for line in Path(tmp_path, f"gunicorn-{port}.log").read_text().splitlines()
        if "rate_limited" in line
    ]
    assert len(logged_keys) == STARTS - LIMIT
    assert all(f"key={team_key} limit={LIMIT} " in line for line in logged_keys), logged_keys[:3]

    # The team's first accepted start was recorded while one of the accepted requests was in flight, no later than the
    # first of them answered. Retry-After = ceil(first + 60 - decided), decided while the 429's request was in
    # flight; so: first + 60 - received <= Retry-After < first + 61 - sent.
    first_earliest = min(a.sent for a in accepted)
    first_latest = min(a.received for a in accepted)
    for answer in limited:
        assert answer.body == {
            "detail": f"Too many requests: try again in {answer.retry_after} seconds.",
            "code": "rate_limited",
            "errors": {},
        }
        lowest = first_earliest + WINDOW_SECONDS - answer.received
        highest = first_latest + WINDOW_SECONDS + 1 - answer.sent
        assert lowest <= answer.retry_after < highest, (answer, first_earliest, first_latest)
    uncertainty = (first_latest - first_earliest) + max(a.received - a.sent for a in limited)
    print(f"{store}: 150 starts in {span:.2f} s; Retry-After checked to 1 s + {uncertainty:.3f} s of request time")
