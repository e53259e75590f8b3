"""Each archived WAL file's record (``wal/<name>.json``): what its WAL proves, read from
the plain file before it is compressed or encrypted, and what was stored. Also the proof
of the segment the receiver is still writing (``received.json``), and records for files
archived without one (by an older backupd, or copied in by hand), computed from their
content when it can be read: never from a file's time."""

from __future__ import annotations

import os
import struct
import tempfile
from datetime import datetime
from pathlib import Path

from backupd.dump_formats import reader_stages
from backupd.errors import BackupdError
from backupd.logging import get_logger
from backupd.pitr import wal, waldump
from backupd.pitr.records import LiveProof, WalProof, WalRecord
from backupd.pitr.store import RECORD_SUFFIX, Store
from backupd.repository import utc_now
from backupd.stream import Pipeline, StreamResult, sha256_of, stream_to_file

log = get_logger("pitr")

# xlp_magic, xlp_info, xlp_tli, (padding), xlp_pageaddr, xlp_rem_len, (padding), xlp_sysid,
# xlp_seg_size, xlp_xlog_blcksz: little-endian, as every platform backupd runs on writes it.
_LONG_HEADER = struct.Struct("<HHI Q I 4x Q I I")


def proof(store: Store, tool: Path | None, plain: Path, name: str) -> WalProof:
    """What the plain WAL file ``plain`` (called ``name``) proves; nothing when it is a
    history file or pg_waldump is missing. pg_waldump reads a segment by its name: it is
    shown one through a link of that name."""
    if tool is None or name.endswith(".history"):
        return WalProof(name=name, recorded=utc_now())
    check_identity(store, plain, name)
    with tempfile.TemporaryDirectory(prefix=".proof-", dir=store.root) as folder:
        link = Path(folder) / name.removesuffix(".partial")
        os.symlink(plain.resolve(), link)
        found = waldump.prove(tool, link, name, store.segment_size)
    return WalProof(name=name, end_lsn=wal.format_lsn(found.end_lsn), last_commit=found.last_commit,
                    recorded=utc_now())


def check_identity(store: Store, plain: Path, name: str) -> None:
    """ValueError unless the plain segment is the one its name says, of this cluster: its
    first page's long header (xlog_internal.h, XLogLongPageHeaderData) gives the timeline,
    the position, the system identifier and the segment size. A file copied in by hand
    from another cluster, or renamed, proves nothing here. A segment whose first page was
    never written (a preallocated partial) holds no WAL and passes."""
    with open(plain, "rb") as data:
        header = data.read(_LONG_HEADER.size)
    if len(header) < _LONG_HEADER.size or header[:2] == b"\0\0":
        return
    _, _, timeline, address, _, sysid, size, _ = _LONG_HEADER.unpack(header)
    own_timeline, segno = wal.parse_segment(name.removesuffix(".partial"), store.segment_size)
    if (str(sysid), size, timeline, address) != (store.system_identifier, store.segment_size, own_timeline,
                                                 segno * store.segment_size):
        raise ValueError(f"{name} is not this cluster's segment of that name (its header says system {sysid}, "
                         f"timeline {timeline}, position {wal.format_lsn(address)})")


def record(store: Store, proven: WalProof, stored: StreamResult) -> None:
    """The record of a file just archived, written after the file itself."""
    store.remember_record(WalRecord(**proven.model_dump(), size=stored.size, sha256=stored.sha256))


def prove_live(store: Store, tool: Path | None, known: LiveProof | None, caught_up: datetime | None,
               again: bool) -> LiveProof | None:
    """The proof of the partial segment the receiver writes (the newest one): read again
    when ``again`` (it grew), else ``known``'s, with ``caught_up``; written when it says more."""
    partials = sorted(name for name in store.received() if wal.PARTIAL.fullmatch(name))
    if not partials or tool is None:
        return None
    if again or known is None or known.name != partials[-1]:
        found = proof(store, tool, store.spool / partials[-1], partials[-1])
        if known is not None and (known.name, known.end_lsn) == (found.name, found.end_lsn):
            found = known  # no WAL came (a touch): when it was received stays
        known = LiveProof(**found.model_dump(exclude={"caught_up"}))
    live = known.model_copy(update={"caught_up": caught_up})
    if live != store.live():
        store.remember_live(live)
    return live


def backfill(store: Store, tool: Path | None, identity: str | None, limit: int, skip: set[str]) -> int:
    """Records for up to ``limit`` archived files that have none, the newest first; a file
    that cannot be read here (encrypted without the identity, damaged) is added to ``skip``
    and never extends the window. Returns how many were tried (0: none is missing)."""
    if tool is None:
        return 0
    records = {p.name.removesuffix(RECORD_SUFFIX) for p in store.wal_dir.glob(f"*{RECORD_SUFFIX}")}
    missing = sorted((n for n in store.archived() if n not in records and n not in skip), reverse=True)
    for name in missing[:limit]:
        try:
            _backfill_one(store, tool, identity, name)
        except (BackupdError, OSError, ValueError) as err:
            skip.add(name)
            log.warning("an archived WAL file without a record cannot be read: it never extends the recovery "
                        "window", file=name, error=str(err))
    return min(len(missing), limit)


def _backfill_one(store: Store, tool: Path, identity: str | None, name: str) -> None:
    path = store.archived()[name]
    stages = reader_stages(path, identity) or [("cat", ["cat"])]
    with tempfile.TemporaryDirectory(prefix=".proof-", dir=store.root) as folder:
        plain = Path(folder) / "plain"
        with open(path, "rb") as source:
            stream_to_file(Pipeline(stages, stdin=source), plain, what=f"reading {name}")
        proven = proof(store, tool, plain, name)
    record(store, proven, StreamResult(size=path.stat().st_size, sha256=sha256_of(path), seconds=0.0))
    log.info("recorded what an archived WAL file without a record proves", file=name,
             last_commit=str(proven.last_commit))
