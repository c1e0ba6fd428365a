"""Finished runs and digests for the tests."""

from datetime import UTC, datetime

from agentrunner.teams.services import team_default
from digests import services
from runs.models import Run, RunStatus

PERIOD_END = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def finished_run(*, result=None, at=None, status=RunStatus.COMPLETED, agent="pass", error="", **fields) -> Run:
    """A finished run of the default team unless `team` (or its flow version's or schedule's) says otherwise."""
    at = at or PERIOD_END.replace(hour=7)
    if "team" not in fields:
        version, schedule = fields.get("flow_version"), fields.get("schedule")
        if version is not None and version.flow_id:
            fields["team"] = version.flow.team
        elif schedule is not None:
            fields["team"] = schedule.team
        else:
            fields["team"] = team_default()
    return Run.objects.create(
        agent_type=agent, status=status, result=result, error=error, started_at=at, finished_at=at, **fields
    )


def digest(name="Top claims", **fields):
    defaults = {"recipients": "ops@example.com, lead@example.com", "agent_type": "pass", "rank_by": "score"}
    if "schedule" in fields or "flow" in fields:
        defaults.pop("agent_type")
    return services.digest_create(name=name, **{**defaults, **fields})
