"""Schedules for the tests."""

from schedules import services


def schedule(name="every-10-min", **fields):
    defaults = {"agent_type": "pass", "input": {"score": 1}, "kind": "interval", "interval_seconds": 600}
    if "flow" in fields or "agent_type" in fields:
        defaults.pop("agent_type")
    if "cron" in fields:
        defaults.update(kind="cron", interval_seconds=None)
    return services.schedule_create(name=name, **{**defaults, **fields})
