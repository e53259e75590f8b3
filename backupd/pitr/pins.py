"""``backupd pin`` / ``unpin`` of a base backup (``base-YYYYmmddTHHMMSSZ``): found in the
cluster ``--cluster`` names, else in whichever cluster holds it. A pinned base backup is
kept whatever PITR retention says, and with it the WAL it needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from backupd.errors import NotFoundError, UsageError
from backupd.pitr import clusters
from backupd.pitr.store import BASE_ID, Store
from backupd.repository import PITR, Repository, storage_error

if TYPE_CHECKING:
    from backupd.settings import Settings


def pin_base(settings: Settings, base_id: str, cluster: str | None, pinned: bool) -> Store | None:
    """Pin (or unpin) base backup ``base_id``; the cluster that holds it. None when
    ``base_id`` is no base backup's (a database backup's id, for the caller to find)."""
    backup_dir = Path(settings.backup_dir)
    if not BASE_ID.fullmatch(base_id):
        if cluster is not None:
            raise UsageError(f"--cluster is for base backups; {base_id!r} is not a base backup id")
        return None
    if cluster is not None:
        store = clusters.named(backup_dir, cluster)
        if store.base(base_id) is None:
            raise NotFoundError(f"no base backup {base_id} in cluster {cluster}")
    else:
        holders = [store for store in Store.all(backup_dir) if store.base(base_id) is not None]
        if not holders:
            return None
        if len(holders) > 1:
            raise UsageError(f"base backup {base_id} is in several clusters "
                             f"({', '.join(s.system_identifier for s in holders)}): pass --cluster ID")
        if _is_database_backup(backup_dir, base_id):  # a database called "base" has ids of this shape
            raise UsageError(f"{base_id} is both a base backup of cluster {holders[0].system_identifier} and a "
                             f"backup of database 'base': pass --cluster {holders[0].system_identifier} "
                             f"for the base backup")
        store = holders[0]
    try:
        store.pin(base_id, pinned)
    except OSError as err:
        raise storage_error(err, f"{'pin' if pinned else 'unpin'} {base_id} in {backup_dir / PITR}") from None
    return store


def _is_database_backup(backup_dir: Path, backup_id: str) -> bool:
    try:
        Repository(backup_dir).find(backup_id)
    except NotFoundError:
        return False
    return True
