from datetime import UTC, datetime

import pytest

from schedules.timing import Timing, TimingError


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_interval__aligned_to_the_clock():
    every_10_min = Timing(interval_seconds=600)
    assert every_10_min.next_after(at(2026, 11, 21, 10, 5, 7)) == at(2026, 11, 21, 10, 10)
    assert every_10_min.next_after(at(2026, 11, 21, 10, 10)) == at(2026, 11, 21, 10, 20)
    assert every_10_min.latest_at_or_before(at(2026, 11, 21, 10, 10)) == at(2026, 11, 21, 10, 10)
    assert every_10_min.latest_at_or_before(at(2026, 11, 21, 10, 19, 59)) == at(2026, 11, 21, 10, 10)


def test_cron__read_in_the_schedules_time_zone():
    nine_in_paris = Timing(cron="0 9 * * *", tz="Europe/Paris")
    # Winter: Paris is UTC+1.
    assert nine_in_paris.next_after(at(2026, 11, 21, 7, 0)) == at(2026, 11, 21, 8, 0)
    # Summer: UTC+2.
    assert nine_in_paris.next_after(at(2026, 7, 1, 0, 0)) == at(2026, 7, 1, 7, 0)
    assert nine_in_paris.latest_at_or_before(at(2026, 11, 21, 8, 0)) == at(2026, 11, 21, 8, 0)
    assert nine_in_paris.latest_at_or_before(at(2026, 11, 21, 7, 59)) == at(2026, 11, 20, 8, 0)


def test_cron__across_a_dst_change_fires_once_a_day():
    times = Timing(cron="30 2 * * *", tz="Europe/Berlin").upcoming(at(2026, 3, 28, 12, 0), 3)
    # 02:30 does not exist on 29 March in Berlin; croniter moves it to 03:00 local (01:00Z).
    assert [t.date().day for t in times] == [29, 30, 31]


def test_count_between__counts_fire_times_in_the_window():
    every_minute = Timing(interval_seconds=60)
    assert every_minute.count_between(at(2026, 1, 1, 0, 0), at(2026, 1, 1, 0, 10)) == 10
    assert Timing(cron="*/15 * * * *").count_between(at(2026, 1, 1, 0, 0), at(2026, 1, 1, 1, 0)) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cron": "61 * * * *"}, "not a valid cron"),
        ({"cron": "* * *"}, "five fields"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "Unknown time zone"),
        ({"interval_seconds": 0}, "either a cron expression or an interval"),
        ({"cron": "* * * * *", "interval_seconds": 60}, "either a cron"),
    ],
)
def test_timing__refuses_what_it_cannot_use(kwargs, message):
    with pytest.raises(TimingError, match=message):
        Timing(**kwargs)
