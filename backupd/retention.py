"""Retention, decided by a pure function: (backups, now, policy) -> every backup with
keep or delete and the rules that keep it. Deleting is a separate step.

A backup is kept when any rule keeps it (union):
- age: younger than ``days`` (its own time, never a file's mtime);
- ``keep_last``: the newest N;
- ``daily`` / ``weekly`` (ISO weeks) / ``monthly`` / ``yearly``: the newest backup of
  each of the last N periods that have backups, read in the policy's time zone;
- pinned backups;
- the floor: the newest ``min_keep`` good backups, whatever the rules say.
With no rule set at all nothing is deleted. The newest backup is never deleted.
Each database (group) is decided on its own.

Base backups of point-in-time recovery are decided by the same function, one group per
cluster, under a recovery-window policy (``Policy.window``): kept are every one that ended
inside the last ``days`` days, the newest that ended before them (the window's first
moments start from it), the newest ``min_keep`` and the pinned ones. The days are counted
back from the earlier of now and the newest moment the archive holds (``Policy.held``): a
clock that jumps ahead (a VM's before NTP puts it right, a typo in a ``date -s``) would
otherwise age the whole window out at once, and days with nothing new age nothing.

Whatever the rules: an item kept keeps the item it depends on (``Item.parent``: an
incremental base backup needs its parent), and that one its own.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from backupd.settings import Settings


@dataclass(frozen=True)
class Policy:
    days: int = 7
    keep_last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    min_keep: int = 1
    timezone: str = "UTC"
    window: bool = False  # a recovery window (base backups): see the module's docstring
    held: datetime | None = None  # a window's newest moment the archive proves, if known

    @property
    def has_rules(self) -> bool:
        return self.window or any((self.days, self.keep_last, self.daily, self.weekly, self.monthly, self.yearly))

    def with_days(self, days: int) -> Policy:
        """The same policy with another age rule (replication targets replace only that)."""
        return replace(self, days=days)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(days=settings.backup_retention_days, keep_last=settings.backup_keep_last,
                   daily=settings.backup_keep_daily, weekly=settings.backup_keep_weekly,
                   monthly=settings.backup_keep_monthly, yearly=settings.backup_keep_yearly,
                   min_keep=settings.backup_min_keep, timezone=settings.backup_timezone)

    @classmethod
    def recovery_window(cls, days: int, min_keep: int, held: datetime | None = None) -> Policy:
        """Base backups' policy: PITR_RETENTION_DAYS, BACKUP_MIN_KEEP; ``held``: the newest
        commit the archived WAL proves, if known."""
        return cls(days=days, min_keep=min_keep, window=True, held=held)


@dataclass(frozen=True)
class Item:
    """One complete backup as retention sees it."""

    id: str
    group: Hashable  # the database; a cluster's base backups
    time: datetime  # aware; a base backup's: when it ended
    pinned: bool = False
    parent: str | None = None  # the id of the item this one needs to be restored


@dataclass
class Decision:
    item: Item
    reasons: list[str] = field(default_factory=list)

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


_PERIODS: list[tuple[str, str, Callable[[datetime], Hashable]]] = [
    ("daily", "day", lambda t: t.date()),
    ("weekly", "ISO week", lambda t: tuple(t.isocalendar()[:2])),
    ("monthly", "month", lambda t: (t.year, t.month)),
    ("yearly", "year", lambda t: t.year),
]


def decide(items: Iterable[Item], now: datetime, policy: Policy,
           policies: Mapping[Hashable, Policy] | None = None) -> list[Decision]:
    """Every item with its decision; items come back newest first within each group.
    ``policies``: the policy of a group that has its own (a cluster's base backups)."""
    groups: dict[Hashable, list[Item]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    decisions = []
    for group, group_items in groups.items():
        own = (policies or {}).get(group, policy)
        newest_first = sorted(group_items, key=lambda i: (i.time, i.id), reverse=True)
        decisions += _decide_window(newest_first, now, own) if own.window else _decide_group(newest_first, now, own)
    _keep_parents(decisions)
    return decisions


def _keep_parents(decisions: list[Decision]) -> None:
    """An item kept keeps what it depends on, and so on down its chain (a parent that is
    not among the items, or a loop, ends it)."""
    by_id: dict[tuple[Hashable, str | None], Decision] = {(d.item.group, d.item.id): d for d in decisions}
    for decision in decisions:
        child, seen = decision, {decision.item.id}
        while child.keep and (child.item.group, child.item.parent) in by_id and child.item.parent not in seen:
            parent = by_id[(child.item.group, child.item.parent)]
            reason = "a kept backup needs it"
            if reason in parent.reasons:
                break  # its chain was walked already
            parent.reasons.append(reason)
            child, seen = parent, seen | {parent.item.id}


def _decide_window(items: list[Item], now: datetime, policy: Policy) -> list[Decision]:
    """A recovery window's decisions (see the module's docstring); ``items`` newest first."""
    decisions = [Decision(item) for item in items]
    held = [moment for moment in (policy.held, *(item.time for item in items)) if moment is not None]
    judged = min(now, max(held)) if held else now
    horizon = judged - timedelta(days=policy.days)
    young = f"younger than {policy.days} days"
    if judged < now:
        young += f" (counted from {judged.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}, the newest moment the archive holds)"
    for decision in decisions:
        if decision.item.time >= horizon:
            decision.reasons.append(young)
    before = [decision for decision in decisions if decision.item.time < horizon]
    if before:
        before[0].reasons.append("the recovery window starts from it")
    for decision in decisions:
        if decision.item.pinned:
            decision.reasons.append("pinned")
    for decision in decisions[: policy.min_keep]:
        if not decision.reasons:
            decision.reasons.append(f"BACKUP_MIN_KEEP floor ({policy.min_keep})")
    return decisions


def _decide_group(items: list[Item], now: datetime, policy: Policy) -> list[Decision]:
    decisions = [Decision(item) for item in items]  # newest first
    if not policy.has_rules:
        for decision in decisions:
            decision.reasons.append("no retention rule is set")
        return decisions
    zone = ZoneInfo(policy.timezone)
    if policy.days:
        cutoff = now - timedelta(days=policy.days)
        for decision in decisions:
            if decision.item.time > cutoff:  # a backup from the future (clock jumped back) is young
                decision.reasons.append(f"younger than {policy.days} days")
    for decision in decisions[: policy.keep_last]:
        decision.reasons.append(f"one of the newest {policy.keep_last}")
    for setting, period_name, period_of in _PERIODS:
        wanted = getattr(policy, setting)
        seen: set[Hashable] = set()
        for decision in decisions:
            if len(seen) >= wanted:
                break
            period = period_of(decision.item.time.astimezone(zone))
            if period not in seen:
                seen.add(period)
                decision.reasons.append(f"newest of its {period_name} ({setting} {wanted})")
    for decision in decisions:
        if decision.item.pinned:
            decision.reasons.append("pinned")
    for decision in decisions[: max(policy.min_keep, 1)]:
        if not decision.reasons:
            decision.reasons.append(f"BACKUP_MIN_KEEP floor ({policy.min_keep})")
    return decisions
