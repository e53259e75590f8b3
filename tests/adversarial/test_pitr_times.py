"""Class 7, pure: whatever text a user gives ``pitr restore --time``, the parser answers a
moment in UTC (or None for latest) or a UsageError: never another exception, and the moment
it answers can be compared with any recovery window and written back."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
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


def ago_like() -> st.SearchStrategy[str]:
    """'N unit(s) ago' with any count, unit, plural and case, and near misses."""
    units = st.sampled_from(["second", "minute", "hour", "day", "week", "sec", ""])
    return st.builds(lambda n, unit, plural, space: f"{n}{space}{unit}{plural} ago",
                     st.integers(min_value=0, max_value=10**13), units, st.sampled_from(["", "s"]),
                     st.sampled_from(["", " ", "  "]))


@settings(max_examples=300, deadline=None)
@given(st.one_of(ago_like(), iso_like()), st.sampled_from(["Europe/Berlin", "America/St_Johns", "Asia/Kolkata",
                                                             "Nowhere/At_All", "", ":UTC"]))
@example("2026-10-25 02:30", "Europe/Berlin")
@example("2026-03-29 02:30", "Europe/Berlin")
@example("0001-01-01 00:00", "Asia/Kolkata")
def test_relative_and_local_times_are_a_moment_or_a_usage_error(text, zone):
    with patched_tz(zone):
        test_any_text_is_a_moment_or_a_usage_error.hypothesis.inner_test(text)


class patched_tz:
    """TZ set for the block (hypothesis runs many examples in one test: no fixture)."""

    def __init__(self, zone: str | None):
        self.zone = zone

    def __enter__(self):
        self.saved = os.environ.get("TZ")
        if self.zone is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = self.zone

    def __exit__(self, *exc):
        if self.saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = self.saved


NOW = datetime(2026, 12, 4, 23, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("10 minutes ago", NOW - timedelta(minutes=10)), ("1 minute ago", NOW - timedelta(minutes=1)),
    ("30 seconds ago", NOW - timedelta(seconds=30)), ("1 second ago", NOW - timedelta(seconds=1)),
    ("2 hours ago", NOW - timedelta(hours=2)), ("1 hour ago", NOW - timedelta(hours=1)),
    ("3 days ago", NOW - timedelta(days=3)), (" 1 Day AGO ", NOW - timedelta(days=1)),
    ("0 seconds ago", NOW)])
def test_a_time_ago_is_that_long_before_now(text, expected):
    with patched_tz("Europe/Berlin"):  # a zone changes nothing: "ago" is a duration
        assert parse_target(text, now=NOW) == expected


@pytest.mark.parametrize(("zone", "text", "expected"), [
    ("Europe/Berlin", "2026-07-01 12:00", "2026-07-01T10:00:00Z"),  # summer: +02:00
    ("Europe/Berlin", "2026-12-01T12:00:00", "2026-12-01T11:00:00Z"),  # winter: +01:00
    ("Europe/Berlin", "2026-10-25 03:00", "2026-10-25T02:00:00Z"),  # just after the repeated hour
    ("Europe/Berlin", "2026-03-29 03:00", "2026-03-29T01:00:00Z"),  # the first second after the gap
    ("Europe/Berlin", "2026-07-01T12:00:00+05:30", "2026-07-01T06:30:00Z"),  # an offset wins over TZ
    ("Europe/Berlin", "2026-10-25T02:30:00+01:00", "2026-10-25T01:30:00Z"),  # an offset says which of the two
    (None, "2026-07-01 12:00", "2026-07-01T12:00:00Z"),  # TZ unset: UTC, as before
    ("", "2026-07-01 12:00", "2026-07-01T12:00:00Z")])
def test_a_local_time_is_read_in_the_zone_tz_names(zone, text, expected):
    with patched_tz(zone):
        assert iso(parse_target(text)) == expected


def test_a_local_time_the_clocks_showed_twice_is_refused_with_both_moments():
    with patched_tz("Europe/Berlin"), pytest.raises(UsageError) as refused:
        parse_target("2026-10-25 02:30")
    assert "happened twice" in str(refused.value)
    assert "2026-10-25T00:30:00Z" in str(refused.value) and "2026-10-25T01:30:00Z" in str(refused.value)


def test_a_local_time_the_clocks_never_showed_is_refused_naming_the_gap():
    with patched_tz("Europe/Berlin"), pytest.raises(UsageError) as refused:
        parse_target("2026-03-29 02:30:00")
    assert "never happened in Europe/Berlin" in str(refused.value)
    assert "02:00:00 to 03:00:00 at 2026-03-29T01:00:00Z" in str(refused.value)


def test_a_zone_this_machine_does_not_know_is_a_usage_error():
    with patched_tz("Mars/Olympus_Mons"), pytest.raises(UsageError, match="TZ=Mars/Olympus_Mons"):
        parse_target("2026-07-01 12:00")


def test_the_cli_refuses_an_ambiguous_local_time_before_touching_anything(tmp_path):
    """One CLI run: exit 2, both UTC moments shown, no traceback, nothing written."""
    env = {"PATH": os.environ["PATH"], "BACKUP_DIR": str(tmp_path / "backups"), "DB_HOST": "127.0.0.1",
           "DB_PORT": "1", "DB_PASSWORD": "x", "PITR_ENABLED": "true", "TZ": "Europe/Berlin"}
    result = subprocess.run([sys.executable, "-m", "backupd", "pitr", "restore", "--time", "2026-10-25 02:30",
                             "--to", str(tmp_path / "data"), "--dry-run"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert "2026-10-25T00:30:00Z or 2026-10-25T01:30:00Z" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()
