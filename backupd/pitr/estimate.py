"""How long a restore takes, from what the last drill measured: the drill restores the
newest base backup and replays the WAL after it, as a restore does, and records its two
rates (VerifyRecord): base backup bytes restored per second (extracting it and copying the
WAL beside it) and WAL bytes replayed per second (the server's recovery, start to
promotion). A restore of ``b`` base bytes and ``w`` WAL bytes then takes about
b / base rate + w / replay rate. WAL bytes are positions apart (LSNs), as the drill counts
them, so the two agree."""

from __future__ import annotations

from pathlib import Path

from backupd.pitr import wal
from backupd.pitr.reach import segments_to_copy
from backupd.pitr.records import VerifyRecord
from backupd.pitr.store import Base, Store


def seconds(drill: VerifyRecord | None, base_bytes: int, wal_bytes: int) -> float | None:
    """The estimate, or None when no successful drill measured the rates it needs."""
    if drill is None or not drill.base_bytes_per_second:
        return None
    total = base_bytes / drill.base_bytes_per_second
    if wal_bytes > 0:
        if not drill.wal_bytes_per_second:
            return None
        total += wal_bytes / drill.wal_bytes_per_second
    return total


def wal_bytes(store: Store, base: Base, segments: dict[int, tuple[str, Path, bool]]) -> int:
    """WAL positions from ``base``'s start to the end of the last of ``segments`` (its
    record's end; a segment with none counts whole)."""
    if not segments:
        return 0
    last = max(segments)
    proof = store.proofs({last: segments[last]}).get(last)
    end = (wal.parse_lsn(proof.end_lsn) if proof is not None and proof.end_lsn
           else (last + 1) * base.doc.wal_segment_size)
    return max(end - wal.parse_lsn(base.doc.start_lsn), 0)


def to_now(store: Store) -> float | None:
    """A restore to the newest WAL received, from the newest usable base backup (the one a
    restore to ``latest`` takes when it is intact)."""
    bases = store.usable_bases()
    if not bases:
        return None
    base = bases[0]
    return seconds(store.last_drill(), base.doc.size, wal_bytes(store, base, segments_to_copy(store, base, None)))
