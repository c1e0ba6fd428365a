"""The per-team limit on LLM requests (Team.llm_requests_per_minute): every provider try counts one, at dispatch.

Counted by `agentrunner.ratelimit` under `llm-requests:team:<id>` (Redis when REDIS_URL is set, else the
database), so it holds across every worker process and machine. A try over the limit is not sent: the
gateway raises LLMRateLimited, and the engine puts the step back until the window lets one more request
through, without using up one of its attempts.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from agentrunner import ratelimit
from agentrunner.models import Team


@dataclass(frozen=True)
class TeamRequestLimit:
    """A team's LLM request limit, as read once per gateway request."""

    team_id: int | None = None
    slug: str = ""
    limit: int = 0  # requests per window; 0 = no limit

    @property
    def key(self) -> str:
        return f"llm-requests:team:{self.team_id}"


NO_LIMIT = TeamRequestLimit()


def team_request_limit(*, team_id: int | None) -> TeamRequestLimit:
    """Return the team's limit: its own, else LLM_REQUESTS_PER_TEAM_PER_MINUTE (0 = none); none without a team."""
    if team_id is None:
        return NO_LIMIT
    row = Team.objects.filter(pk=team_id).values_list("llm_requests_per_minute", "slug").first()
    if row is None:
        return NO_LIMIT
    own, slug = row
    return TeamRequestLimit(
        team_id=team_id, slug=slug, limit=ratelimit.team_limit(own, settings.LLM_REQUESTS_PER_TEAM_PER_MINUTE)
    )


def window_seconds() -> float:
    """The limit's window: a minute. Not an operator setting: tests shorten it so that a worker test takes seconds."""
    return float(getattr(settings, "LLM_REQUESTS_WINDOW_SECONDS", ratelimit.WINDOW_SECONDS))


def request_admit(*, limit: TeamRequestLimit) -> ratelimit.Decision:
    """Count one provider try against the team's limit, or refuse it and count nothing."""
    return ratelimit.acquire([(limit.key, limit.limit)], window_seconds())
