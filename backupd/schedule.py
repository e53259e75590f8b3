"""Cron arithmetic on the interface's 5-field expressions, read in BACKUP_TIMEZONE."""

from __future__ import annotations

from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger


def trigger(expression: str, timezone: str) -> CronTrigger:
    return CronTrigger.from_crontab(expression, timezone=timezone)


def next_runs(expression: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    cron = trigger(expression, timezone)
    runs, previous, now = [], None, after
    for _ in range(count):
        upcoming = cron.get_next_fire_time(previous, now)
        if upcoming is None:
            break
        runs.append(upcoming)
        previous = now = upcoming
    return runs


def longest_gap(expression: str, timezone: str, after: datetime) -> timedelta:
    """The longest gap between two runs over the next few weeks (schedules can be uneven,
    e.g. weekdays only)."""
    runs = next_runs(expression, timezone, after, 60)
    gaps = [b - a for a, b in zip(runs, runs[1:])]
    horizon = after + timedelta(days=35)
    while runs and runs[-1] < horizon and len(runs) < 2000:
        more = next_runs(expression, timezone, runs[-1], 60)[1:]
        if not more:
            break
        gaps += [b - a for a, b in zip([runs[-1], *more], more)]
        runs += more
    return max(gaps) if gaps else timedelta(days=1)


def previous_run(expression: str, timezone: str, now: datetime, within: timedelta) -> datetime | None:
    """The latest scheduled time in (now - within, now]: the time a job that starts now
    was scheduled for. The same for every daemon with the same schedule, whatever
    seconds their clocks differ by."""
    latest = None
    for run in next_runs(expression, timezone, now - within, 100000):
        if run > now:
            break
        latest = run
    return latest
