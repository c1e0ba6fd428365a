"""Keep the django-q2 Schedule row behind a schedule or a digest in step with it.

django-q2's scheduler only fires the row; the task it fires (`intended_at`
passed as a keyword) decides what the fire time means and moves the row's
next_run to our next fire time, computed in the owner's time zone. The row's
own type (cron or minutes) mirrors ours as closely as django-q2 can, so that it
keeps firing at sensible times even if one of our tasks were lost.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django_q.models import Schedule as QSchedule

from schedules.timing import Timing

INTENDED_KWARG = "intended_at"


def q_schedule_sync(*, owner, func: str, label: str, timing: Timing | None) -> None:
    """Create, update or delete `owner.q_schedule` so django-q2 calls func(owner.pk, intended_at=…) on time.

    `timing=None` (paused, or nothing to fire) removes the row. Call inside the
    transaction that saves the owner.
    """
    if timing is None:
        if owner.q_schedule_id:
            QSchedule.objects.filter(pk=owner.q_schedule_id).delete()
            type(owner).objects.filter(pk=owner.pk).update(q_schedule=None)
            owner.q_schedule_id = None
        return
    fields = {
        "name": label[:100],
        "func": func,
        "args": repr(owner.pk),
        "kwargs": None,
        "intended_date_kwarg": INTENDED_KWARG,
        "repeats": -1,
        "schedule_type": QSchedule.CRON if timing.cron else QSchedule.MINUTES,
        "cron": timing.cron or None,
        "minutes": None if timing.cron else max(1, round(timing.interval.total_seconds() / 60)),
    }
    row = QSchedule.objects.filter(pk=owner.q_schedule_id).first() if owner.q_schedule_id else None
    if row is None:
        row = QSchedule.objects.create(**fields)
        type(owner).objects.filter(pk=owner.pk).update(q_schedule=row)
        owner.q_schedule_id = row.pk
    else:
        QSchedule.objects.filter(pk=row.pk).update(**fields)
    q_schedule_move(owner=owner, next_run=timing.next_after(timezone.now()))


def q_schedule_move(*, owner, next_run: datetime) -> None:
    """Set when django-q2 fires the owner's row next (our computation replaces django-q2's)."""
    if owner.q_schedule_id:
        # A plain update, not save(): django-q2's save() recomputes next_run for cron rows.
        QSchedule.objects.filter(pk=owner.q_schedule_id).update(next_run=next_run)
