"""The moment a user types for ``pitr restore --time``: ``latest``, a time ago ("10 minutes
ago"), or a wall-clock time: with an offset (``Z``, ``+02:00``) that moment, without one a
local time in the zone named by ``TZ`` (unset: UTC).

Whatever the text, the answer is a moment in UTC or a ``UsageError`` (exit 2). A time is
turned into UTC here, once: a moment near the ends of the calendar (year 1 with a positive
offset, year 9999 with a negative one) has no UTC equivalent, and comparing it later with the
recovery window would raise ``OverflowError`` instead of saying so. A local time the clocks
showed twice (the hour repeated when daylight saving time ends) is refused with both
moments it may mean; one they never showed (the hour skipped when it begins) is refused
naming the gap: a restore to a guessed moment is worse than a question."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backupd.errors import UsageError
from backupd.repository import iso

EXAMPLE = ("give 'latest', a time ago such as '10 minutes ago', or a time such as 2026-11-29T14:03:00Z "
           "(without an offset: local time in the zone TZ names, UTC when TZ is unset)")
_AGO = re.compile(r"(\d{1,12})\s*(second|minute|hour|day)s?\s+ago", re.IGNORECASE)


class _NotAMoment(ValueError):
    pass


def parse_target(text: str, now: datetime | None = None) -> datetime | None:
    """``latest`` -> None; anything else -> that moment in UTC (``now``: the clock, for "ago")."""
    stripped = text.strip()
    if stripped.lower() == "latest":
        return None
    try:
        if ago := _AGO.fullmatch(stripped):
            return _ago(int(ago.group(1)), ago.group(2).lower(), now or datetime.now(UTC))
        return _moment(stripped)
    except _NotAMoment as err:
        raise UsageError(f"--time {_shown(text)}: {err}; {EXAMPLE}") from None


def understood(text: str, moment: datetime | None) -> str:
    """What the command says it understood, always in UTC."""
    if moment is None:
        return f"--time {_shown(text)}: the end of the WAL received"
    return f"--time {_shown(text)} is {iso(moment)} (UTC)"


def _ago(count: int, unit: str, now: datetime) -> datetime:
    try:
        return now.astimezone(UTC) - timedelta(**{f"{unit}s": count})
    except OverflowError:  # a million days ago is before the calendar
        raise _NotAMoment("that far back is outside the calendar") from None


def _moment(text: str) -> datetime:
    if not text:
        raise _NotAMoment("empty")
    try:
        when = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise _NotAMoment("not a time") from None
    if when.tzinfo is None:
        return _local(when, _zone())
    return _utc(when)


def _utc(when: datetime) -> datetime:
    try:
        return when.astimezone(UTC)
    except (OverflowError, ValueError):  # year 1 east of UTC, year 9999 west of it
        raise _NotAMoment("outside the calendar once in UTC") from None


def _zone() -> tzinfo:
    """The zone ``TZ`` names (``Europe/Berlin``, ``:Europe/Berlin``); UTC when unset or empty."""
    name = os.environ.get("TZ", "").strip().removeprefix(":")
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _NotAMoment(f"TZ={ascii(name)[1:-1]} is not a time zone name this machine knows (such as "
                          "Europe/Berlin): give the time with an offset, or fix TZ") from None


def _local(wall: datetime, zone: tzinfo) -> datetime:
    """The one UTC moment the clocks in ``zone`` showed ``wall`` at, or why there is none."""
    early, late = (_utc(wall.replace(tzinfo=zone, fold=fold)) for fold in (0, 1))
    if early == late:
        return early
    # Near a change both are inside the calendar: only year 1 and 9999 are near its ends.
    shown = [c for c in sorted({early, late}) if c.astimezone(zone).replace(tzinfo=None) == wall]
    if len(shown) == 2:
        raise _NotAMoment(f"{wall.isoformat(sep=' ')} happened twice in {zone} (the clocks went back): "
                          f"give {iso(shown[0])} or {iso(shown[1])}")
    start = _change(min(early, late), max(early, late), zone)
    before = (start - timedelta(seconds=1)).astimezone(zone)
    raise _NotAMoment(f"{wall.isoformat(sep=' ')} never happened in {zone}: the clocks jumped from "
                      f"{(before + timedelta(seconds=1)).strftime('%H:%M:%S')} to "
                      f"{start.astimezone(zone).strftime('%H:%M:%S')} at {iso(start)}")


def _change(low: datetime, high: datetime, zone: tzinfo) -> datetime:
    """The instant, to the second, between ``low`` and ``high`` (UTC) at which ``zone``'s
    offset changes: the clocks jump there."""
    offset = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return low.replace(microsecond=0) + timedelta(seconds=1)  # zones change on a whole second


def _shown(text: str) -> str:
    """The text as the user typed it, short and printable in one line."""
    shown = ascii(text[:80])
    return shown + ("..." if len(text) > 80 else "")
