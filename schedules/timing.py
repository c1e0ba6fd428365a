"""Fire times of a schedule (cron in its time zone, or a clock-aligned interval); pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter

from agentrunner.validators import INT32_MAX

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TimingError(ValueError):
    """A cron expression, interval or time zone that cannot be used."""


@lru_cache(maxsize=1)
def time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    if name not in time_zones():
        raise TimingError(f"Unknown time zone {name!r}; use an IANA name such as Europe/Paris or UTC.")
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:  # listed but not loadable (broken tzdata)
        raise TimingError(f"Time zone {name!r} cannot be loaded.") from None


def cron_check(expression: str) -> str:
    """Return the expression normalised, or raise TimingError saying what is wrong."""
    expression = " ".join(expression.split())
    if len(expression.split(" ")) != 5:
        raise TimingError("A cron expression has five fields: minute hour day-of-month month day-of-week.")
    if not croniter.is_valid(expression):
        raise TimingError(f"{expression!r} is not a valid cron expression.")
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:  # e.g. 30 February: valid syntax, never fires
        raise TimingError(f"{expression!r} never fires (no such date).") from None
    return expression


class Timing:
    """When a cron expression or an interval fires, in a time zone."""

    def __init__(self, *, cron: str = "", interval_seconds: int | None = None, tz: str = "UTC"):
        if bool(cron) == bool(interval_seconds):
            raise TimingError("Give either a cron expression or an interval.")
        if interval_seconds is not None and interval_seconds < 1:
            raise TimingError("The interval must be at least 1 second.")
        if interval_seconds is not None and interval_seconds > INT32_MAX:  # what the column holds (~68 years)
            raise TimingError(f"The interval must be at most {INT32_MAX} seconds.")
        self.cron = cron_check(cron) if cron else ""
        self.interval = timedelta(seconds=interval_seconds) if interval_seconds else None
        self.tz = zone(tz)

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment` (UTC)."""
        if self.interval:
            # Intervals are aligned to the Unix epoch, so "every 10 minutes" fires at :00, :10, …
            steps = (moment - EPOCH) // self.interval + 1
            return EPOCH + steps * self.interval
        return croniter(self.cron, moment.astimezone(self.tz)).get_next(datetime).astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last fire time at or before `moment` (UTC)."""
        if self.interval:
            return EPOCH + ((moment - EPOCH) // self.interval) * self.interval
        # croniter's get_prev is strict; step a microsecond past `moment` so an exact hit counts.
        start = (moment + timedelta(microseconds=1)).astimezone(self.tz)
        return croniter(self.cron, start).get_prev(datetime).astimezone(UTC)

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        times, current = [], moment
        for _ in range(count):
            current = self.next_after(current)
            times.append(current)
        return times

    def count_between(self, start: datetime, end: datetime, cap: int = 10_000) -> int:
        """How many fire times fall in (start, end], counting at most `cap`."""
        if self.interval:
            return min(cap, max(0, (end - EPOCH) // self.interval - (start - EPOCH) // self.interval))
        count, current = 0, start
        while count < cap:
            current = self.next_after(current)
            if current > end:
                break
            count += 1
        return count
