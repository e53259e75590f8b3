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
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


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

    @property
    def has_rules(self) -> bool:
        return any((self.days, self.keep_last, self.daily, self.weekly, self.monthly, self.yearly))

    def with_days(self, days: int) -> Policy:
        """The same policy with another age rule (replication targets replace only that)."""
        return replace(self, days=days)

    @classmethod
    def from_settings(cls, settings) -> Policy:
        return cls(days=settings.backup_retention_days, keep_last=settings.backup_keep_last,
                   daily=settings.backup_keep_daily, weekly=settings.backup_keep_weekly,
                   monthly=settings.backup_keep_monthly, yearly=settings.backup_keep_yearly,
                   min_keep=settings.backup_min_keep, timezone=settings.backup_timezone)


@dataclass(frozen=True)
class Item:
    """One complete backup as retention sees it."""

    id: str
    group: Hashable  # the database
    time: datetime  # aware
    pinned: bool = False


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


def decide(items: Iterable[Item], now: datetime, policy: Policy) -> list[Decision]:
    """Every item with its decision; items come back newest first within each group."""
    groups: dict[Hashable, list[Item]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    decisions = []
    for group_items in groups.values():
        decisions += _decide_group(sorted(group_items, key=lambda i: (i.time, i.id), reverse=True), now, policy)
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
