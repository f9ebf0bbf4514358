"""A rule's schedule: its cron expression in its IANA time zone, evaluated with cronsim.

`trigger_config` is the original's `{"cron": "0 9 * * 1", "timezone": "Europe/Berlin",
"enabled": true}` (timezone defaults to UTC, enabled to true). Five fields only: cronsim also
reads a sixth (seconds) field, and a rule firing every second is not a schedule the scheduler's
tick could keep.

Daylight saving time (cronsim's behaviour, kept): a local time that does not exist on the
spring-forward day (02:30 in Europe/Berlin on 2026-03-29) fires once, at the first minute after
the gap (03:00 local); a local time that happens twice on the fall-back day (02:30 on
2026-10-25) fires once, at its first occurrence (02:30 summer time). docs/architecture.md,
"Rules".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from shared.errors import InvalidInput

MAX_CRON_LENGTH = 255
MAX_TIMEZONE_LENGTH = 64
CRON_FIELDS = 5
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A checked cron expression and the time zone it is read in."""

    cron: str
    timezone: str
    zone: ZoneInfo

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first fire time strictly after `moment`, in UTC."""
        return _first(self, moment, reverse=False)

    def latest_at_or_before(self, moment: dt.datetime) -> dt.datetime:
        """The last fire time at or before `moment` (to the second), in UTC."""
        # cronsim's reverse iteration starts strictly before its start: a second later.
        start = moment.replace(microsecond=0) + dt.timedelta(seconds=1)
        return _first(self, start, reverse=True)

    def upcoming(self, moment: dt.datetime, count: int) -> list[dt.datetime]:
        """The next `count` fire times strictly after `moment`, in UTC."""
        return self._times(moment, reverse=False, count=count)

    def _times(self, moment: dt.datetime, *, reverse: bool, count: int = 1) -> list[dt.datetime]:
        # cronsim walks local wall-clock time: started inside the repeated hour of a fall-back
        # day (02:00-03:00 CET, the second time), it answers the first 02:30 (CEST), an
        # instant before its start. Such answers are dropped, so a time is never in the past.
        local = moment.astimezone(self.zone)
        times = (time.astimezone(dt.UTC) for time in CronSim(self.cron, local, reverse=reverse))
        ahead = (time for time in times if (time < moment if reverse else time > moment))
        return list(islice(ahead, count))


# A tick asks every due rule for its fire time at the tick's `now` and for the next after it:
# rules sharing a schedule share the answers.
@lru_cache(maxsize=4096)
def _first(schedule: Schedule, moment: dt.datetime, *, reverse: bool) -> dt.datetime:
    return schedule._times(moment, reverse=reverse)[0]


def parse_schedule(config: Any) -> Schedule | None:
    """The schedule a `trigger_config` describes; None when it says `enabled: false`.
    InvalidInput naming the field when the expression or the time zone is not one we read."""
    if not isinstance(config, Mapping):
        raise _invalid("trigger_config", "must be an object with `cron` and `timezone`")
    enabled = config.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _invalid("trigger_config.enabled", "must be true or false")
    cron = config.get("cron")
    if not isinstance(cron, str) or not cron.strip():
        raise _invalid("trigger_config.cron", "a cron expression is required")
    if len(cron) > MAX_CRON_LENGTH:
        raise _invalid("trigger_config.cron", f"at most {MAX_CRON_LENGTH} characters")
    cron = " ".join(cron.split())
    if len(cron.split(" ")) != CRON_FIELDS:
        raise _invalid(
            "trigger_config.cron",
            "five fields: minute, hour, day of month, month, day of week",
        )
    timezone = config.get("timezone", DEFAULT_TIMEZONE)
    if not isinstance(timezone, str):
        raise _invalid("trigger_config.timezone", "an IANA time zone name, e.g. Europe/Berlin")
    schedule = _checked(cron, timezone)
    return schedule if enabled else None


# Each tick reads every due rule's config again: the same few expressions, checked once.
@lru_cache(maxsize=4096)
def _checked(cron: str, timezone: str) -> Schedule:
    zone = _zone(timezone)
    try:
        # Parsing alone misses little; the first fire time proves the expression can fire.
        next(iter(CronSim(cron, dt.datetime.now(zone))))
    except (CronSimError, StopIteration, ValueError) as exc:
        raise _invalid("trigger_config.cron", f"not a valid cron expression: {exc}") from None
    return Schedule(cron, timezone, zone)


def _zone(timezone: str) -> ZoneInfo:
    if not timezone or len(timezone) > MAX_TIMEZONE_LENGTH:
        raise _invalid("trigger_config.timezone", "an IANA time zone name, e.g. Europe/Berlin")
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid(
            "trigger_config.timezone", f"{timezone!r} is not an IANA time zone name"
        ) from None


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(
        "invalid_schedule", "the rule's schedule is invalid", [{"field": field, "message": message}]
    )
