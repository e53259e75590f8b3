"""Cron arithmetic on the 5-field expressions of the *_SCHEDULE settings, read in BACKUP_TIMEZONE."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import islice, pairwise

from apscheduler.triggers.cron import CronTrigger


def trigger(expression: str, timezone: str) -> CronTrigger:
    return CronTrigger.from_crontab(expression, timezone=timezone)


def iter_runs(expression: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The scheduled times from ``after`` on, lazily."""
    cron = trigger(expression, timezone)
    previous, now = None, after
    while (upcoming := cron.get_next_fire_time(previous, now)) is not None:
        yield upcoming
        previous = now = upcoming


def next_runs(expression: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    return list(islice(iter_runs(expression, timezone, after), count))


def longest_gap(expression: str, timezone: str, after: datetime) -> timedelta:
    """The longest gap between two runs over the next 400 days or 500 runs, whichever ends
    first (schedules can be uneven: weekdays only, the 31st of the month). Cached per day:
    health asks on every request."""
    return _longest_gap(expression, timezone, after.replace(hour=0, minute=0, second=0, microsecond=0))


@lru_cache(maxsize=32)
def _longest_gap(expression: str, timezone: str, day: datetime) -> timedelta:
    runs = next_runs(expression, timezone, day, 500)
    horizon = day + timedelta(days=400)
    runs = [run for run in runs if run <= horizon]
    if len(runs) < 2:  # a yearly schedule: its two next runs tell its gap
        runs = next_runs(expression, timezone, day, 2)
    gaps = [b - a for a, b in pairwise(runs)]
    return max(gaps) if gaps else timedelta(days=1)


def previous_run(expression: str, timezone: str, now: datetime, within: timedelta) -> datetime | None:
    """The latest scheduled time in (now - within, now]: the time a job that starts now
    was scheduled for. The same for every daemon with the same schedule, whatever
    seconds their clocks differ by."""
    latest = None
    for run in iter_runs(expression, timezone, now - within):
        if run > now:
            break
        latest = run
    return latest
