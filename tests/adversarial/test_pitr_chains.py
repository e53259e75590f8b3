"""Incremental base backups restore only through their whole chain. Retention never keeps
an incremental without its parents (a day-old incremental on a month-old full base keeps
the full base); one whose parent is gone is neither usable nor kept; a manifest whose
parent is not older than itself (a loop, written by hand or by a bad copy) is invalid, so
following parents always ends; a damaged member makes the whole chain unusable."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupd.documents import InvalidDocument, parse
from backupd.pitr import chains, wal
from backupd.pitr.pruning import decide_bases
from backupd.pitr.records import BaseManifest
from backupd.pitr.store import Base
from backupd.repository import iso
from backupd.retention import Policy

SIZE = 16 * 1024 * 1024
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def ident(day: int) -> str:
    return f"base-{NOW - timedelta(days=day):%Y%m%dT%H%M%SZ}"


def base(day: int, parent: int | None = None, folder: Path = Path("/nonexistent"), content: bytes = b"x") -> Base:
    stop = NOW - timedelta(days=day)
    segno = 1000 - day
    return Base(parse(BaseManifest, {
                 "id": ident(day), "file": f"{ident(day)}.tar.zst", "system_identifier": "7400000000000000001",
                 "server_major": 17, "wal_segment_size": SIZE, "timeline": 1,
                 "start_lsn": wal.format_lsn(segno * SIZE), "stop_lsn": wal.format_lsn(segno * SIZE + 400),
                 "start_time": iso(stop - timedelta(minutes=5)), "stop_time": iso(stop), "size": len(content),
                 "sha256": hashlib.sha256(content).hexdigest(),
                 "parent": ident(parent) if parent is not None else None}), folder)


def bases_to_keep(bases: list[Base], now: datetime, days: int, min_keep: int, proven: datetime) -> set[str]:
    policy = Policy.recovery_window(days, min_keep, proven)
    return {base.id for base, decision in decide_bases(bases, now, policy) if decision.keep}


def test_retention_keeps_the_whole_chain_of_a_kept_incremental():
    # A full base 30 days old, incrementals on it every week: the window of 14 days keeps the
    # newest incrementals, and with them every older member of their chain.
    bases = [base(2, parent=9), base(9, parent=16), base(16, parent=23), base(23, parent=30), base(30)]
    keep = bases_to_keep(bases, NOW, days=14, min_keep=1, proven=NOW)
    assert keep == {ident(day) for day in (2, 9, 16, 23, 30)}


def test_an_incremental_whose_parent_is_gone_is_not_kept():
    bases = [base(2, parent=9), base(30)]  # day 9 was deleted by hand
    keep = bases_to_keep(bases, NOW, days=14, min_keep=2, proven=NOW)
    assert keep == {ident(30)}
    assert chains.missing_member(bases[0], chains.by_id(bases)) == \
        f"it is incremental: base backup {ident(9)}, of its chain, is gone"


def test_an_orphan_stays_while_a_file_of_its_parent_is_left(tmp_path):
    # The parent's manifest is there but does not validate (a hand's edit, a bad copy): it
    # is not listed, yet it may be repaired; nothing of its chain is deleted meanwhile.
    (tmp_path / f"{ident(9)}.json").write_text("{")
    bases = [base(2, parent=9, folder=tmp_path), base(30, folder=tmp_path)]
    assert bases_to_keep(bases, NOW, days=14, min_keep=2, proven=NOW) == {ident(2), ident(30)}


@pytest.mark.parametrize("parent", [0, -1], ids=["itself", "newer"])
def test_a_parent_that_is_not_older_is_invalid(parent):
    with pytest.raises(InvalidDocument, match="parent"):
        base(0, parent=parent)


def test_a_damaged_member_makes_the_chain_unusable(tmp_path):
    bases = [base(1, parent=2, folder=tmp_path), base(2, parent=3, folder=tmp_path), base(3, folder=tmp_path)]
    for member in bases:
        member.path.write_bytes(b"x")
    assert chains.chain_damage(bases[0], bases) is None
    assert chains.complete(bases[0], bases)
    bases[1].path.write_bytes(b"y")  # the same size: only the sha256 tells
    assert chains.chain_damage(bases[0], bases) == \
        f"base backup {ident(2)}, of its chain: its file does not match the sha256 in its manifest"
    bases[2].path.write_bytes(b"longer")
    assert not chains.complete(bases[0], bases)
    assert chains.summary(bases) == [{"full": ident(3), "incrementals": [ident(2), ident(1)], "complete": False}]


def test_a_pinned_incremental_whose_parent_is_gone_stays_pinned_and_is_never_doomed():
    bases = [base(2, parent=9), base(30)]  # day 9 was deleted by hand
    decided = {b.id: d for b, d in decide_bases(bases, NOW, Policy.recovery_window(14, 1, NOW), {ident(2)})}
    assert decided[ident(2)].keep and decided[ident(2)].reasons[0].startswith("pinned (it cannot be restored")


def test_the_window_starts_on_a_base_that_restores_never_on_an_orphan():
    # A full base 50 days old, an orphaned incremental 40 days old, a full one a day old, a
    # window of 7 days: the window starts from the 50-day-old full base, which is kept.
    bases = [base(1), base(40, parent=45), base(50)]
    assert bases_to_keep(bases, NOW, days=7, min_keep=1, proven=NOW) == {ident(1), ident(50)}


def test_on_a_target_an_orphan_stays_while_the_listing_holds_a_file_of_its_parent():
    bases = [base(2, parent=9), base(30)]
    held = {ident(9)}  # its manifest there does not validate, its data file is there
    decided = decide_bases(bases, NOW, Policy.recovery_window(14, 2, NOW), left=held.__contains__)
    assert {b.id for b, d in decided if d.keep} == {ident(2), ident(30)}
    decided = decide_bases(bases, NOW, Policy.recovery_window(14, 2, NOW), left=set().__contains__)
    assert {b.id for b, d in decided if d.keep} == {ident(30)}
