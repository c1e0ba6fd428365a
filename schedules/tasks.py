"""django-q2 entry points for schedules."""

from datetime import datetime

from schedules import services


def schedule_fire(schedule_id: int, intended_at: str) -> str | None:
    """Fired by django-q2's scheduler: decide what the schedule's current slot becomes."""
    fire = services.schedule_fire(schedule_id=schedule_id, intended_at=datetime.fromisoformat(intended_at))
    return fire.status if fire else None
