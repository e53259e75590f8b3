"""Retention keeps exactly what the rules say, and never the last good backups away."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from backupd.retention import Item, Policy, decide

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
RULES = ("days", "keep_last", "daily", "weekly", "monthly", "yearly")


def kept(items, now, policy) -> set[str]:
    return {d.item.id for d in decide(items, now, policy) if d.keep}


items_strategy = st.lists(
    st.tuples(st.sampled_from(["shop", "crm"]), st.integers(0, 24 * 900), st.booleans()),
    min_size=1, max_size=40,
).map(lambda rows: [Item(f"{group}-{i}", group, NOW - timedelta(hours=hours), pinned and i % 5 == 0)
                    for i, (group, hours, pinned) in enumerate(rows)])

policy_strategy = st.builds(
    Policy, days=st.integers(0, 30), keep_last=st.integers(0, 5), daily=st.integers(0, 10),
    weekly=st.integers(0, 6), monthly=st.integers(0, 6), yearly=st.integers(0, 3), min_keep=st.integers(1, 4),
    timezone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Pacific/Auckland"]))


@settings(max_examples=300, deadline=None)
@given(items_strategy, policy_strategy)
def test_the_newest_backup_of_every_database_is_never_deleted(items, policy):
    keep = kept(items, NOW, policy)
    for group in {i.group for i in items}:
        newest = max((i for i in items if i.group == group), key=lambda i: (i.time, i.id))
        assert newest.id in keep


@settings(max_examples=300, deadline=None)
@given(items_strategy, policy_strategy)
def test_no_database_drops_below_min_keep_and_pinned_backups_stay(items, policy):
    keep = kept(items, NOW, policy)
    for group in {i.group for i in items}:
        in_group = [i for i in items if i.group == group]
        assert len([i for i in in_group if i.id in keep]) >= min(policy.min_keep, len(in_group))
    assert {i.id for i in items if i.pinned} <= keep


@settings(max_examples=300, deadline=None)
@given(items_strategy, policy_strategy)
def test_pruning_twice_equals_pruning_once(items, policy):
    first = kept(items, NOW, policy)
    remaining = [i for i in items if i.id in first]
    assert kept(remaining, NOW, policy) == first


@settings(max_examples=300, deadline=None)
@given(items_strategy, policy_strategy, st.sampled_from(RULES), st.integers(1, 10))
def test_adding_a_rule_never_deletes_more(items, policy, rule, extra):
    if not policy.has_rules:
        policy = replace(policy, days=1)
    widened = replace(policy, **{rule: getattr(policy, rule) + extra})
    assert kept(items, NOW, policy) <= kept(items, NOW, widened)


def test_no_rule_at_all_deletes_nothing():
    items = [Item(f"x-{h}", "x", NOW - timedelta(days=h)) for h in range(0, 400, 7)]
    policy = Policy(days=0)
    assert kept(items, NOW, policy) == {i.id for i in items}


def test_a_backup_from_the_future_after_the_clock_jumped_back_is_kept():
    items = [Item("x-future", "x", NOW + timedelta(days=1)), Item("x-old", "x", NOW - timedelta(days=30))]
    assert kept(items, NOW, Policy(days=7)) == {"x-future"}


def times(*stamps: str) -> list[Item]:
    return [Item(stamp, "db", datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc)) for stamp in stamps]


def test_iso_weeks_cross_the_new_year():
    # 2026-12-31 (Thu) and 2027-01-03 (Sun) are both ISO week 53 of 2026; 2027-01-04 starts week 1.
    items = times("2026-12-28T02:00:00", "2026-12-31T02:00:00", "2027-01-03T02:00:00", "2027-01-04T02:00:00")
    now = datetime(2027, 1, 5, tzinfo=timezone.utc)
    assert kept(items, now, Policy(days=0, weekly=2)) == {"2027-01-03T02:00:00", "2027-01-04T02:00:00"}


def test_month_ends_and_leap_days():
    items = times("2028-01-31T23:00:00", "2028-02-01T01:00:00", "2028-02-28T12:00:00", "2028-02-29T12:00:00",
                  "2028-03-01T00:30:00")
    now = datetime(2028, 3, 2, tzinfo=timezone.utc)
    assert kept(items, now, Policy(days=0, monthly=3)) == {"2028-01-31T23:00:00", "2028-02-29T12:00:00",
                                                            "2028-03-01T00:30:00"}
    assert kept(items, now, Policy(days=0, daily=2)) == {"2028-02-29T12:00:00", "2028-03-01T00:30:00"}


def test_days_are_read_in_the_configured_timezone_across_a_dst_change():
    # Europe/Berlin leaves summer time on 2026-10-25 at 03:00 local (01:00 UTC).
    items = times("2026-10-24T21:30:00",  # 23:30 local, Oct 24 (CEST, +2)
                  "2026-10-24T22:30:00",  # 00:30 local, Oct 25
                  "2026-10-25T22:30:00",  # 23:30 local, Oct 25 (CET, +1)
                  "2026-10-25T23:30:00")  # 00:30 local, Oct 26
    now = datetime(2026, 10, 26, 12, tzinfo=timezone.utc)
    berlin = kept(items, now, Policy(days=0, daily=3, timezone="Europe/Berlin"))
    assert berlin == {"2026-10-24T21:30:00", "2026-10-25T22:30:00", "2026-10-25T23:30:00"}
    utc = kept(items, now, Policy(days=0, daily=3, timezone="UTC"))
    assert utc == {"2026-10-24T22:30:00", "2026-10-25T23:30:00"}  # only two UTC days have backups


def test_a_backup_every_four_hours_with_keep_daily_keeps_one_a_day():
    items = [Item(f"db-{h}", "db", NOW - timedelta(hours=h)) for h in range(0, 24 * 10, 4)]
    keep = kept(items, NOW, Policy(days=0, daily=5))
    assert len(keep) == 5
    local_days = {(NOW - timedelta(hours=int(i.split("-")[1]))).date() for i in keep}
    assert len(local_days) == 5 and "db-0" in keep


@pytest.mark.parametrize("policy,expected", [
    (Policy(days=7), 7), (Policy(days=0, keep_last=3), 3), (Policy(days=0, keep_last=3, min_keep=5), 5),
])
def test_union_of_age_keep_last_and_floor(policy, expected):
    items = [Item(f"db-{d}", "db", NOW - timedelta(days=d, minutes=1)) for d in range(30)]
    assert len(kept(items, NOW, policy)) == expected
