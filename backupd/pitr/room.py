"""The disk room a one-database restore needs, checked before anything is built: the
scratch folder holds the base backup unpacked (its files' sizes, from the server's
``backup_manifest``), the WAL the recovery to the target reads, and the dump taken from it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backupd.errors import RefusedError
from backupd.logging import get_logger
from backupd.pitr.reach import segments_to_copy
from backupd.pitr.store import Base, Store
from backupd.repository import Repository, iso

log = get_logger("pitr")

UNPACKED_PER_STORED = 4  # without a backup_manifest to read: a zstd base unpacks to about 4x
DUMP_PER_DATA = 4  # a first dump is about a quarter of the data (as for a first backup)


@dataclass(frozen=True)
class Room:
    base: int
    wal: int
    dump: int
    free: int

    @property
    def needed(self) -> int:
        return self.base + self.wal + self.dump

    def figures(self) -> str:
        return (f"about {self.needed} bytes are needed (base backup unpacked {self.base}, WAL {self.wal}, "
                f"dump {self.dump}), {self.free} are free")


def unpacked_size(base: Base) -> int:
    """What the base backup takes once extracted: the sum of its files' sizes in the
    server's manifest, else an estimate from the stored size."""
    try:
        files = json.loads(base.server_manifest_path.read_bytes())["Files"]
        return sum(int(entry["Size"]) for entry in files)
    except (OSError, ValueError, KeyError, TypeError):
        return base.doc.size * UNPACKED_PER_STORED


def dump_size(backup_dir: Path, database: str, data: int) -> int:
    """The newest dump of ``database`` here, else a quarter of the cluster's data."""
    try:
        backups = Repository(backup_dir).backups(database)
    except (OSError, ValueError):
        backups = []
    return backups[0].size if backups else data // DUMP_PER_DATA


def estimate(store: Store, target: datetime | None, backup_dir: Path, database: str, folder: Path) -> Room | None:
    """What a restore from ``store`` to ``target`` needs in ``folder``; None when the local
    archive has no base backup for it (it is fetched from a target, checked later)."""
    bases = [b for b in store.usable_bases() if target is None or b.consistent_at <= target]
    if not bases:
        return None
    base = bases[0]  # the one choose_base takes when it is intact
    data = unpacked_size(base)
    wal = len(segments_to_copy(store, base, target)) * store.segment_size
    return Room(data, wal, dump_size(backup_dir, database, data), shutil.disk_usage(folder).free)


def check(room: Room, folder: Path, database: str, target: datetime | None) -> None:
    if room.free < room.needed:
        moment = iso(target) or "the end of the WAL"
        raise RefusedError(f"not enough room in {folder} to restore {database!r} as of {moment}: "
                           f"{room.figures()}; set TMPDIR to a folder on a larger disk. Nothing was touched")
    log.info("room for the restore", folder=str(folder), needed=room.needed, free=room.free)
