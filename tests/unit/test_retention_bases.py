"""One retention engine: base backups are decided by ``retention.decide`` under a recovery
window, with reasons and pins like dumps, and whatever keeps an item keeps what it needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backupd.retention import Item, Policy, decide

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
WINDOW = Policy.recovery_window(days=14, min_keep=1, held=NOW)


def base(day: int, pinned: bool = False, parent: int | None = None) -> Item:
    name = f"base-{day:02d}"
    return Item(name, "cluster", NOW - timedelta(days=day), pinned, None if parent is None else f"base-{parent:02d}")


def reasons(items: list[Item], policy: Policy = WINDOW, now: datetime = NOW) -> dict[str, list[str]]:
    return {d.item.id: d.reasons for d in decide(items, now, policy)}


def test_each_base_backup_says_why_it_is_kept_or_that_nothing_keeps_it():
    got = reasons([base(1), base(8), base(15), base(22)])
    assert got == {"base-01": ["younger than 14 days"], "base-08": ["younger than 14 days"],
                   "base-15": ["the recovery window starts from it"], "base-22": []}


def test_a_pinned_base_backup_is_kept_outside_the_window():
    got = reasons([base(1), base(8), base(15), base(22, pinned=True), base(29)])
    assert got["base-22"] == ["pinned"] and got["base-29"] == []


def test_days_count_back_from_the_newest_moment_the_archive_holds_not_a_clock_ahead():
    ahead = NOW + timedelta(days=30)
    got = reasons([base(1), base(8)], Policy.recovery_window(14, 1), ahead)
    assert all(r[0].startswith("younger than 14 days (counted from 2026-11-28T12:00:00Z") for r in got.values())


def test_the_floor_keeps_the_newest_whatever_the_window():
    got = reasons([base(100), base(200)], Policy.recovery_window(0, 2, NOW))
    assert got == {"base-100": ["the recovery window starts from it"], "base-200": ["BACKUP_MIN_KEEP floor (2)"]}


def test_a_kept_item_keeps_its_parents_down_the_chain_and_nothing_else():
    # An incremental chain: 01 <- 20 <- 30 <- 40 (each needs the one it names); 50 stands alone.
    items = [base(1, parent=20), base(20, parent=30), base(30, parent=40), base(40), base(50)]
    got = reasons(items, Policy.recovery_window(14, 1, NOW))
    assert got["base-20"] == ["the recovery window starts from it", "a kept backup needs it"]
    assert got["base-30"] == ["a kept backup needs it"] and got["base-40"] == ["a kept backup needs it"]
    assert got["base-50"] == []


def test_parents_work_for_any_group_and_policy_and_a_missing_or_looping_parent_ends_the_chain():
    day = timedelta(days=1)
    items = [Item("c", "db", NOW - 80 * day), Item("a-3", "db", NOW - 3 * day, parent="a-2"),
             Item("a-2", "db", NOW - 40 * day, parent="a-1"),
             Item("a-1", "db", NOW - 50 * day, parent="a-2"), Item("b", "db", NOW - 60 * day, parent="gone"),
             Item("other", "db2", NOW - 70 * day, parent="c")]
    got = reasons(items, Policy(days=7, min_keep=1))
    assert got["a-2"] == ["a kept backup needs it"] and got["a-1"] == ["a kept backup needs it"]
    assert got["b"] == [] and got["c"] == []  # b is not kept itself: its parent does not matter
    assert got["other"] == ["BACKUP_MIN_KEEP floor (1)"]  # its "parent" is another group's: not followed


def test_a_group_with_a_policy_of_its_own_beside_dumps():
    items = [Item("shop-1", "shop", NOW - timedelta(days=30)), Item("shop-2", "shop", NOW - timedelta(days=40)),
             base(1), base(30)]
    got = {d.item.id: d.keep for d in decide(items, NOW, Policy(days=7, min_keep=1), {"cluster": WINDOW})}
    assert got == {"shop-1": True, "shop-2": False, "base-01": True, "base-30": True}
