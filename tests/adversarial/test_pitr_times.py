"""Class 7, pure: whatever text a user gives ``pitr restore --time``, the parser answers a
moment in UTC (or None for latest) or a UsageError: never another exception, and the moment
it answers can be compared with any recovery window and written back."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from backupd.errors import UsageError
from backupd.pitr.moment import parse_target
from backupd.repository import iso

EARLIEST, LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def iso_like() -> st.SearchStrategy[str]:
    """Texts near what fromisoformat accepts: any aware or naive time, any offset."""
    offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
        lambda m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}")
    return st.builds(lambda d, sep, off: d.isoformat(sep=sep) + off,
                     st.datetimes(), st.sampled_from(["T", " "]), st.one_of(st.just(""), st.just("Z"), offsets))


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(), iso_like(), st.text(alphabet="0123456789-+:TZ .W", max_size=40)))
@example("0001-01-01T00:00:00+01:00")
@example("9999-12-31T23:59:59-01:00")
@example("")
@example("\x00")
@example("LATEST")
def test_any_text_is_a_moment_or_a_usage_error(text):
    try:
        moment = parse_target(text)
    except UsageError as err:
        assert "--time" in str(err) and "\n" not in str(err)
        return
    if moment is None:
        assert text.strip().lower() == "latest"
        return
    assert moment.tzinfo is UTC
    assert EARLIEST <= moment <= LATEST
    assert iso(moment) and moment.isoformat(sep=" ")
