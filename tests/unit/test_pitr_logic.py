"""PITR's pure parts: WAL names and positions, timeline paths, and what retention keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from backupd.documents import parse
from backupd.pitr import wal
from backupd.pitr.pruning import decide_bases, wal_to_delete
from backupd.pitr.records import BaseManifest
from backupd.pitr.store import Base
from backupd.repository import iso
from backupd.retention import Policy

SIZE = 16 * 1024 * 1024
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_segment_names_round_trip():
    assert wal.segment_name(1, 2, SIZE) == "000000010000000000000002"
    assert wal.parse_segment("00000002000000010000000A", SIZE) == (2, 256 + 10)
    assert wal.segment_of(wal.parse_lsn("1/0A000028"), SIZE) == 256 + 10
    assert wal.format_lsn(wal.parse_lsn("16/B374D848")) == "16/B374D848"


def test_a_timeline_path_follows_the_history_of_the_newest_timeline():
    history = wal.parse_history("1\t0/3000000\tno recovery target specified\n\n"
                                "2\t0/5000158\tbefore 2026-11-29 10:00:00+00\n")
    path = wal.timeline_path(3, history)
    assert path == [(1, 0), (2, 0x3000000), (3, 0x5000158)]


def ident(day: int) -> str:
    return f"base-{NOW - timedelta(days=day):%Y%m%dT%H%M%SZ}"


def base(day: int, start_segno: int) -> Base:
    stop = NOW - timedelta(days=day)
    doc = parse(BaseManifest, {
        "id": ident(day), "file": f"{ident(day)}.tar.zst", "system_identifier": "7400000000000000001",
        "server_major": 17, "wal_segment_size": SIZE, "timeline": 1,
        "start_lsn": wal.format_lsn(start_segno * SIZE), "stop_lsn": wal.format_lsn(start_segno * SIZE + 400),
        "start_time": iso(stop - timedelta(minutes=5)), "stop_time": iso(stop), "size": 1, "sha256": "0" * 64})
    return Base(doc, Path("/nonexistent"))


def bases_to_keep(bases: list[Base], now: datetime, days: int, min_keep: int,
                  proven: datetime | None = None) -> set[str]:
    policy = Policy.recovery_window(days, min_keep, proven)
    return {b.id for b, decision in decide_bases(bases, now, policy) if decision.keep}


def test_retention_keeps_the_window_and_the_base_it_starts_from():
    bases = [base(1, 40), base(8, 30), base(15, 20), base(22, 10)]  # newest first
    keep = bases_to_keep(bases, NOW, days=14, min_keep=1, proven=NOW)  # the WAL proves commits up to now
    # Inside 14 days: day 1 and day 8; the newest before the window (day 15) reaches its start.
    assert keep == {ident(1), ident(8), ident(15)}
    # Nothing proven beyond the newest base's end (day 1): the days count back from there, not
    # from a clock that may have jumped ahead, so day 22 now starts the window.
    assert bases_to_keep(bases, NOW, days=14, min_keep=1) == {ident(1), ident(8), ident(15), ident(22)}
    names = [wal.segment_name(1, n, SIZE) for n in (9, 10, 19, 20, 21)] + ["00000002.history",
                                                                           wal.segment_name(1, 12, SIZE) + ".partial"]
    gone = wal_to_delete(names, [b for b in bases if b.id in keep], SIZE)
    assert sorted(gone) == sorted([wal.segment_name(1, n, SIZE) for n in (9, 10, 19)]
                                  + [wal.segment_name(1, 12, SIZE) + ".partial"])


def test_retention_never_drops_below_the_minimum_even_with_no_window():
    bases = [base(100, 50), base(200, 40)]
    assert bases_to_keep(bases, NOW, days=0, min_keep=2, proven=NOW) == {ident(100), ident(200)}
    assert bases_to_keep(bases, NOW, days=0, min_keep=1, proven=NOW) == {ident(100)}
