"""Which WAL a recovery to a moment reads: from the base backup's start to the segment that
holds the first commit after the target, where recovery stops. Each archived segment's
record says the newest commit in it (WalProof.last_commit); the first segment whose newest
commit is after the target holds that first commit after it (every earlier one's commits
are all at or before the target). Segments after it are never read, so never copied."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from backupd.pitr import wal
from backupd.pitr.store import Base, Store


def segments_to_copy(store: Store, base: Base, target: datetime | None) -> dict[int, tuple[str, Path, bool]]:
    """The segments (as Store.segments gives them) a recovery from ``base`` to ``target``
    reads; every one from the base's start for ``latest``, or when no record proves a
    commit after the target (then recovery reads all there is). A segment whose record is
    missing proves nothing: the walk goes on past it."""
    segments = {n: entry for n, entry in store.segments().items() if n >= base.start_segno}
    if target is None:
        return segments
    proofs = store.proofs(segments)
    consistent = wal.segment_of(wal.parse_lsn(base.doc.stop_lsn), base.doc.wal_segment_size)
    wanted = {}
    for segno in sorted(segments):
        wanted[segno] = segments[segno]
        proof = proofs.get(segno)
        if segno >= consistent and proof is not None and proof.last_commit is not None and proof.last_commit > target:
            break
    return wanted
