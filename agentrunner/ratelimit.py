"""Rate limits that hold across every web process and machine: a sliding-window log per key.

`acquire([(key, limit), ...])` decides one start: it is allowed if, for every key, fewer than `limit` starts were
accepted under that key in the last `window_seconds`; it is then recorded under every key, and a refused start
records nothing. The answer is exact, not an estimate: each key keeps the time of every start it accepted within
the window (at most `limit` of them), and a refusal says when the start that must leave the window leaves it.

The log lives in Redis when REDIS_URL is set (one Lua script over sorted sets, atomic for all the keys of a call),
else in the database (`RateLimitKey` rows, one per key, locked in a short transaction). Times come from the store
(Redis' clock, PostgreSQL's), so web machines whose clocks disagree still share one window.

`RunStartThrottle` applies the run-start limits to the API operations that start runs. Keys are plain strings
(`run-starts:team:3:user:7`); `run_start_limits` gives a start's pairs: its team's and its member's. A database row
rewrites its whole log on each accepted start: right for limits up to a few thousand per window; beyond that,
use Redis.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import redis
import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from rest_framework.throttling import BaseThrottle

from agentrunner.models import RateLimitKey

log = structlog.get_logger("agentrunner.ratelimit")

# The limits are per minute.
WINDOW_SECONDS = 60
# Key rows removed at most by one clean-up (each web process cleans up at most once per PRUNE_EVERY_SECONDS).
PRUNE_BATCH = 500
PRUNE_EVERY_SECONDS = 60.0
REDIS_PREFIX = "agentrunner:ratelimit:"
# A Redis that does not answer within this long lets the start through (see `acquire`).
REDIS_TIMEOUT_SECONDS = 2.0
# A key row deleted by a clean-up between creating it and locking it is created again, this many times at most.
LOCK_ATTEMPTS = 5


@dataclass(frozen=True)
class Decision:
    """The answer for one start: allowed, or refused by `key` (of `limit`) until `retry_after_seconds` from now."""

    allowed: bool
    retry_after_seconds: int = 0
    key: str | None = None
    limit: int | None = None


ALLOWED = Decision(allowed=True)


def acquire(
    limits: Iterable[tuple[str, int]], window_seconds: float = WINDOW_SECONDS, *, now: float | None = None
) -> Decision:
    """Count one start under every key if each allows it, else refuse it and count nothing.

    `limits`: (key, most starts per window) pairs; a limit of 0 means no limit for that key. `now`: seconds
    since the epoch, for tests; by default the store's own clock. Retry-After is when the start that must leave
    the window for the stricter key to allow one more leaves it, rounded up to a whole second.

    With Redis configured but not answering, the start is allowed and `rate_limit_unavailable` logged: the
    limits protect the service from floods, and with Redis down the run is still recorded in the database
    (and sent once Redis is back), so refusing every start would be the worse failure.
    """
    if window_seconds <= 0:
        raise ValueError("window_seconds must be above 0.")
    strictest: dict[str, int] = {}
    for key, limit in limits:
        if limit < 0:
            raise ValueError(f"The limit of {key!r} is negative.")
        if limit:
            strictest[key] = min(limit, strictest.get(key, limit))
    if not strictest:
        return ALLOWED
    # Sorted: two calls that share keys lock them in one order, so neither waits for the other in a cycle.
    ordered = sorted(strictest.items())
    if settings.REDIS_URL:
        try:
            return _acquire_redis(ordered, window_seconds, now)
        except redis.RedisError as exc:
            log.error("rate_limit_unavailable", keys=[key for key, _ in ordered], error=str(exc))
            return ALLOWED
    return _acquire_database(ordered, window_seconds, now)


def _decide(limits: list[tuple[str, int]], logs: dict[str, list[float]], window: float, now: float) -> Decision:
    """Refuse if a key holds `limit` starts in the window; the key whose start leaves it last decides the wait."""
    refusal: tuple[float, str, int] | None = None
    for key, limit in limits:
        hits = logs[key]
        if len(hits) >= limit:
            # One more start fits once len(hits) - limit + 1 of them have left (just the oldest, unless the
            # limit was lowered while the window was full).
            leaves = hits[len(hits) - limit] + window - now
            if refusal is None or leaves > refusal[0]:
                refusal = (leaves, key, limit)
    if refusal is None:
        return ALLOWED
    leaves, key, limit = refusal
    # Rounded to the microsecond first: 60.000000001 of float noise is 60 s, not 61.
    return Decision(allowed=False, retry_after_seconds=max(1, math.ceil(round(leaves, 6))), key=key, limit=limit)


# --- Redis: one script, atomic for every key of the call -----------------------------------------------------

# KEYS: one sorted set per key (member: a start, score: its time). ARGV: now ("" = Redis' clock), the window,
# the new start's member, then one limit per key. Returns {1} or {0, index of the refusing key, its wait}.
# A start at time t is in the window while t > now - window, as in the database version.
ACQUIRE_SCRIPT = """
local now = tonumber(ARGV[1])
if now == nil then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
local window = tonumber(ARGV[2])
local refusing, wait = 0, 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local limit = tonumber(ARGV[3 + i])
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local hit = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local leaves = tonumber(hit[2]) + window - now
    if refusing == 0 or leaves > wait then
      refusing, wait = i, leaves
    end
  end
end
if refusing > 0 then
  return {0, refusing, string.format('%.6f', wait)}
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
end
return {1}
"""


@cache
def _redis_script(url: str):
    """The registered script (EVALSHA, loading it on NOSCRIPT) on a client shared by the process's threads."""
    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )
    return client.register_script(ACQUIRE_SCRIPT)


def _acquire_redis(limits: list[tuple[str, int]], window: float, now: float | None) -> Decision:
    script = _redis_script(settings.REDIS_URL)
    answer = script(
        keys=[REDIS_PREFIX + key for key, _ in limits],
        args=["" if now is None else repr(float(now)), repr(float(window)), uuid.uuid4().hex]
        + [limit for _, limit in limits],
    )
    if answer[0] == 1:
        return ALLOWED
    key, limit = limits[int(answer[1]) - 1]
    leaves = float(answer[2])
    return Decision(allowed=False, retry_after_seconds=max(1, math.ceil(round(leaves, 6))), key=key, limit=limit)


# --- The database: a row per key, locked for the decision --------------------------------------------------


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _database_clock() -> float:
    """Seconds since the epoch by the database server's clock (PostgreSQL), which every web machine shares.

    clock_timestamp(), not now(): now() is when the transaction began, before it waited for the key's lock.
    SQLite is a file on this machine: this machine's clock is its clock.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())")
            return float(cursor.fetchone()[0])
    return time.time()


def _lock(key: str) -> None:
    """Lock the key's row, creating it if missing, for the rest of the transaction.

    An UPDATE as the lock: PostgreSQL row-locks what it updates (a second process waits here until the first
    commits, then sees its start), and on SQLite a write takes the database's write lock (already held here:
    our transactions BEGIN IMMEDIATE). A missing row is inserted with ON CONFLICT DO NOTHING, which waits for a
    concurrent insert of the same key and then keeps it; the UPDATE that follows locks whichever row won.
    """
    for _ in range(LOCK_ATTEMPTS):
        if RateLimitKey.objects.filter(key=key).update(expires_at=F("expires_at")):
            return
        empty = RateLimitKey(key=key, expires_at=_moment(time.time()))  # no start yet: nothing to keep
        RateLimitKey.objects.bulk_create([empty], ignore_conflicts=True)
    raise RuntimeError(f"Could not lock the rate-limit key {key!r}: its row kept disappearing.")


def _acquire_database(limits: list[tuple[str, int]], window: float, now: float | None) -> Decision:
    keys = [key for key, _ in limits]
    with transaction.atomic():
        for key in keys:
            _lock(key)
        # Read after every lock is held, so each process's time follows the starts recorded before it.
        moment = _database_clock() if now is None else float(now)
        stored = dict(RateLimitKey.objects.filter(key__in=keys).values_list("key", "hits"))
        logs = {key: sorted(hit for hit in stored[key] if hit > moment - window) for key in keys}
        decision = _decide(limits, logs, window, moment)
        if decision.allowed:
            for key in keys:
                RateLimitKey.objects.filter(key=key).update(
                    hits=[*logs[key], moment], expires_at=_moment(max([*logs[key], moment]) + window)
                )
    _prune_now_and_then(moment)
    return decision


_next_prune = 0.0  # time.monotonic() of this process's next clean-up


def _prune_now_and_then(now: float) -> None:
    """Prune at most once per PRUNE_EVERY_SECONDS in this process, on the clock the acquire just used."""
    global _next_prune
    if time.monotonic() < _next_prune:
        return
    _next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
    prune(now=now)


def prune(*, now: float | None = None, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` key rows none of whose starts is still in its window; return how many went."""
    moment = _moment(_database_clock() if now is None else now)
    stale = RateLimitKey.objects.filter(expires_at__lte=moment).order_by("expires_at").values("pk")[:batch]
    # The condition again on the DELETE itself: PostgreSQL re-checks it on a row that an acquire changed while
    # the DELETE waited for its lock (a subquery's ids are not re-checked), so a row just written stays.
    deleted, _ = RateLimitKey.objects.filter(pk__in=stale, expires_at__lte=moment).delete()
    return deleted


# --- Run starts ----------------------------------------------------------------------------------------------


def team_limit(value: int | None, default: int) -> int:
    """A team's own limit, or the setting's default where the team has none (0 = no limit)."""
    return default if value is None else value


def run_start_limits(*, user, team) -> list[tuple[str, int]]:
    """The (key, starts per minute) limits a run start by `user` acting in `team` counts against.

    The team's limit counts all its members' starts; the member's limit, that member's starts in this team.
    Staff and superusers are limited too: the limits protect the service, whoever floods it.
    """
    return [
        (f"run-starts:team:{team.pk}", team_limit(team.run_starts_per_minute, settings.RUN_STARTS_PER_TEAM_PER_MINUTE)),
        (
            f"run-starts:team:{team.pk}:user:{user.pk}",
            team_limit(team.run_starts_per_user_per_minute, settings.RUN_STARTS_PER_USER_PER_MINUTE),
        ),
    ]


def run_start_acquire(*, user, team) -> Decision:
    """Count one run start by `user` in `team` if the limits allow it (the API's throttle, the admin's start
    pages); a refusal is logged as `rate_limited` and counts nothing."""
    limits = [(key, limit) for key, limit in run_start_limits(user=user, team=team) if limit]
    if not limits:
        return ALLOWED
    decision = acquire(limits)
    if not decision.allowed:
        log.warning(
            "rate_limited",
            user_id=user.pk,
            team=team.slug,
            key=decision.key,
            limit=decision.limit,
            retry_after=decision.retry_after_seconds,
        )
    return decision


def refusal_message(decision: Decision) -> str:
    """e.g. "Too many run starts in this team: try again in 17 seconds." (for people, in the admin)."""
    whose = "by you in this team" if ":user:" in (decision.key or "") else "in this team"
    seconds = decision.retry_after_seconds
    return f"Too many run starts {whose}: try again in {seconds} second{'s' if seconds != 1 else ''}."


class RunStartThrottle(BaseThrottle):
    """The run-start limits on an API operation that starts runs: over them, a 429 with Retry-After.

    Runs after authentication and permissions (DRF's order), so a 401 or 403 counts nothing. A view may define
    `is_replay(request)`: a request it will answer with a run that already exists (an idempotency key used
    before) starts nothing and is neither counted nor refused, so a client's retry always gets its run back.
    Every other start request counts, including one then refused as invalid or busy: checking it costs too.
    """

    decision = ALLOWED

    def allow_request(self, request, view) -> bool:
        is_replay = getattr(view, "is_replay", None)
        if is_replay is not None and is_replay(request):
            return True
        self.decision = run_start_acquire(user=request.user, team=request.acting.team)
        return self.decision.allowed

    def wait(self) -> int:
        return self.decision.retry_after_seconds
