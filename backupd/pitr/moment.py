"""The moment a user types for ``pitr restore --time``: ``latest`` or an ISO 8601 time.

Whatever the text, the answer is a moment in UTC or a ``UsageError`` (exit 2). A time is
turned into UTC here, once: a moment near the ends of the calendar (year 1 with a positive
offset, year 9999 with a negative one) has no UTC equivalent, and comparing it later with the
recovery window would raise ``OverflowError`` instead of saying so."""

from __future__ import annotations

from datetime import UTC, datetime

from backupd.errors import UsageError

EXAMPLE = "give 'latest' or a time such as 2026-11-29T14:03:00Z (without an offset: UTC)"


class _NotAMoment(ValueError):
    pass


def parse_target(text: str) -> datetime | None:
    """``latest`` -> None; an ISO 8601 time (without an offset: UTC) -> that moment in UTC."""
    stripped = text.strip()
    if stripped.lower() == "latest":
        return None
    try:
        return _moment(stripped)
    except _NotAMoment as err:
        raise UsageError(f"--time {_shown(text)}: {err}; {EXAMPLE}") from None


def _moment(text: str) -> datetime:
    if not text:
        raise _NotAMoment("empty")
    try:
        when = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise _NotAMoment("not a time") from None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except (OverflowError, ValueError):  # year 1 east of UTC, year 9999 west of it
        raise _NotAMoment("outside the calendar once in UTC") from None


def _shown(text: str) -> str:
    """The text as the user typed it, short and printable in one line."""
    shown = ascii(text[:80])
    return shown + ("..." if len(text) > 80 else "")
