"""Display helpers of the schedule pages: timing in words, times in the schedule's zone, slot badges.

Tables, lists and panels are templates (templates/admin/schedules/includes/); here are one-element helpers and
the values those templates show. Model data is always escaped (`format_html`, template autoescaping).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from agentrunner.adminkit import AMBER, EMPTY, GREEN, GREY, ORANGE, RED, badge, when_html
from schedules.models import FireStatus, OverlapPolicy, Schedule, ScheduleKind
from schedules.timing import TimingError, zone

FIRE_COLOURS = {
    FireStatus.STARTED: GREEN,
    FireStatus.QUEUED: AMBER,
    FireStatus.SKIPPED_OVERLAP: GREY,
    FireStatus.SKIPPED_MISSED: ORANGE,
    FireStatus.FAILED: RED,
}
OVERLAP_SHORT = {
    OverlapPolicy.SKIP: "skip the slot",
    OverlapPolicy.QUEUE: "queue the slot",
    OverlapPolicy.ALLOW: "start anyway",
}
DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
UNITS = ((86400, "day", "days"), (3600, "hour", "h"), (60, "minute", "min"), (1, "second", "s"))


def every_words(seconds: int | None) -> str:
    """ "every 10 min", "every hour", "every 1 h 30 min", "every 2 days"."""
    if not seconds:
        return EMPTY
    parts, rest = [], seconds
    for size, one, many in UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append((count, one, many))
    if len(parts) == 1 and parts[0][0] == 1:
        return f"every {parts[0][1]}"
    return "every " + " ".join(f"{count} {many}" for count, _, many in parts)


def _days(field: str) -> str | None:
    """ "Mon–Fri" for "1-5", "Sat, Sun" for "6,0"; None when it is not that simple."""
    if field == "*":
        return ""
    if re.fullmatch(r"[0-7]-[0-7]", field):
        first, last = (int(x) for x in field.split("-"))
        return f"{DAY_NAMES[first]}–{DAY_NAMES[last]}" if first < last else None
    if re.fullmatch(r"[0-7](,[0-7])*", field):
        return ", ".join(DAY_NAMES[int(x)] for x in field.split(","))
    return None


def cron_words(expression: str) -> str | None:
    """ "Mon–Fri at 07:00" for "0 7 * * 1-5"; None when the expression is not that simple (then shown as is)."""
    parts = expression.split()
    if len(parts) != 5:
        return None
    minute, hour, day_of_month, month, day_of_week = parts
    days = _days(day_of_week)
    if not minute.isdigit() or int(minute) > 59 or day_of_month != "*" or month != "*" or days is None:
        return None
    if hour.isdigit() and int(hour) <= 23:
        at = f"at {int(hour):02d}:{int(minute):02d}"
        return f"{days} {at}" if days else f"every day {at}"
    if hour == "*":
        return f"every hour at :{int(minute):02d}" + (f", {days}" if days else "")
    return None


def timing_words(schedule: Schedule) -> str:
    if schedule.kind == ScheduleKind.CRON:
        return f"cron {schedule.cron} ({schedule.timezone})"
    return every_words(schedule.interval_seconds)


def timing_display(schedule: Schedule) -> SafeString | str:
    """The timing in words, with the cron expression under it when there are words for it."""
    words = cron_words(schedule.cron) if schedule.kind == ScheduleKind.CRON else None
    if words is None:
        return timing_words(schedule)
    return render_to_string("admin/schedules/includes/timing.html", {"words": words, "rule": timing_words(schedule)})


def local_time(moment: datetime | None, schedule: Schedule) -> SafeString | str:
    """The time in the viewer's zone, as every admin time (in the schedule's own zone in its tooltip)."""
    try:
        tz = zone(schedule.timezone)
    except TimingError:
        tz = UTC
    return when_html(moment, also=tz)


def fire_badge(status: str) -> SafeString:
    try:
        label = FireStatus(status).label
    except ValueError:
        label = status
    return badge(label, FIRE_COLOURS.get(status, GREY))
