"""A rule's schedule read by cronsim in its IANA time zone: DST days, misfire arithmetic."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.errors import InvalidInput
from shared.rules.schedule import parse_schedule

UTC = dt.UTC


def _berlin_0230():
    schedule = parse_schedule({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    assert schedule is not None
    return schedule


def test_a_nonexistent_local_time_fires_once_after_the_gap():
    # 2026-03-29, Europe/Berlin: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    times = _berlin_0230().upcoming(dt.datetime(2026, 3, 28, 12, tzinfo=UTC), 3)
    assert times == [
        dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST
        dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
        dt.datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
    ]


def test_a_repeated_local_time_fires_once_at_its_first_occurrence():
    # 2026-10-25, Europe/Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    times = _berlin_0230().upcoming(dt.datetime(2026, 10, 24, 12, tzinfo=UTC), 3)
    assert times == [
        dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, the first
        dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
        dt.datetime(2026, 10, 27, 1, 30, tzinfo=UTC),
    ]
    # From between the two 02:30s, the next is the next day's: the second is never a fire time.
    between = dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    assert _berlin_0230().next_after(between) == dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_latest_at_or_before_includes_the_moment_itself():
    schedule = parse_schedule({"cron": "*/15 * * * *"})
    assert schedule is not None and schedule.timezone == "UTC"
    at = dt.datetime(2026, 1, 1, 12, 15, tzinfo=UTC)
    assert schedule.latest_at_or_before(at) == at
    assert schedule.latest_at_or_before(at + dt.timedelta(minutes=14, seconds=59)) == at
    assert schedule.latest_at_or_before(at - dt.timedelta(seconds=1)) == at - dt.timedelta(
        minutes=15
    )


def test_disabled_config_is_still_checked():
    assert parse_schedule({"cron": "0 9 * * 1", "enabled": False}) is None
    with pytest.raises(InvalidInput):
        parse_schedule({"cron": "0 9 * * 1", "enabled": "no"})
    with pytest.raises(InvalidInput):
        parse_schedule({"cron": "99 9 * * 1", "enabled": False})
    with pytest.raises(InvalidInput):
        parse_schedule(["0 9 * * 1"])
