"""PITR retention: the recovery window of PITR_RETENTION_DAYS stays restorable. Kept: every
base backup that ended inside it, the newest one that ended before it (the window's first
moments start from it), and the newest BACKUP_MIN_KEEP; then every WAL segment from the
oldest kept base backup's start on, and every timeline history file. The same plan serves
the local archive and each replication target's copy."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from backupd.logging import get_logger
from backupd.pitr import wal
from backupd.pitr.chains import with_parents
from backupd.pitr.store import RECORD_SUFFIX, Base, Store, remove_files

log = get_logger("pitr")


def judged_from(bases: list[Base], now: datetime, proven: datetime | None = None) -> datetime:
    """The moment the window's N days are counted back from: the clock, but never later than
    the newest moment the archive holds (a base backup's end, the newest commit the WAL
    proves). A clock that jumps ahead (a VM's before NTP puts it right, a typo in a
    ``date -s``) would otherwise age the whole window out at once; days with nothing new
    in the archive age nothing."""
    held = [moment for moment in (proven, *(b.stop_time for b in bases)) if moment is not None]
    return min(now, max(held)) if held else now


def bases_to_keep(bases: list[Base], now: datetime, days: int, min_keep: int,
                  proven: datetime | None = None) -> set[str]:
    """``bases`` newest first; ``proven``: the newest commit the WAL proves, if known."""
    horizon = judged_from(bases, now, proven) - timedelta(days=days)
    keep = {b.id for b in bases[:min_keep]}
    keep |= {b.id for b in bases if b.stop_time >= horizon}
    before = [b for b in bases if b.stop_time < horizon]
    if before:
        keep.add(before[0].id)
    return with_parents(keep, bases)


def wal_to_delete(names: list[str], kept: list[Base], segment_size: int) -> list[str]:
    """Archived WAL older than the oldest kept base backup's start (history files stay)."""
    if not kept:
        return []
    oldest = min(b.start_segno for b in kept)
    return [name for name in names if not name.endswith(".history")
            and wal.parse_segment(name.removesuffix(".partial"), segment_size)[1] < oldest]


def prune(settings, store: Store, now: datetime, dry_run: bool = False) -> list[Path]:
    bases = store.bases()
    if not bases:
        return []
    keep = bases_to_keep(bases, now, settings.pitr_retention_days, settings.backup_min_keep,
                         store.newest_received_time())
    gone: list[Path] = []
    for base in bases:
        if base.id not in keep:
            gone += [p for p in (base.manifest_path, base.path, base.server_manifest_path) if p.exists()]
    archived = store.archived()
    old_names = wal_to_delete(list(archived), [b for b in bases if b.id in keep], store.segment_size)
    old_wal = [archived[name] for name in old_names]
    old_wal += [record for name in old_names if (record := store.wal_dir / (name + RECORD_SUFFIX)).exists()]
    if dry_run:
        return gone + old_wal
    remove_files(gone)  # the manifest first: a base without one is never listed
    remove_files(old_wal)
    if gone or old_wal:
        log.info("PITR retention", base_backups_deleted=len([p for p in gone if p.suffix == ".json"]),
                 wal_files_deleted=len(old_names))
    return gone + old_wal
