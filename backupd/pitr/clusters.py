"""Which cluster a PITR command or the daemon is about. Each ``_pitr/<system identifier>/``
folder is one cluster; BACKUP_DIR may hold several (two servers on one volume, or a server
initialised again at the same address). The answer is never "the folder that changed
last": it is the one named (``--cluster``), else the connected server's, else the only one
there is; with several and no server to ask, the command is refused and names them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from backupd.errors import NotFoundError, RefusedError
from backupd.pitr.store import Store
from backupd.postgres import Server
from backupd.repository import PITR

if TYPE_CHECKING:
    from backupd.settings import Settings


def known(backup_dir: Path) -> list[str]:
    """The system identifiers with a folder in BACKUP_DIR, sorted."""
    return [store.system_identifier for store in Store.all(Path(backup_dir))]


def connected(settings: Settings) -> str | None:
    """The system identifier of the configured server; None when it cannot be asked now
    (one attempt: a command without a server goes on without waiting for one)."""
    try:
        with Server.from_settings(settings).connect() as conn:
            row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


def named(backup_dir: Path, system_identifier: str) -> Store:
    """The cluster ``--cluster`` names; an unknown one is refused, naming those there are
    (not found: a restore then looks for it on the replication targets)."""
    clusters = known(backup_dir)
    if system_identifier not in clusters:
        raise NotFoundError(f"--cluster {system_identifier}: no such cluster in {Path(backup_dir) / PITR} "
                         f"({_listed(clusters)})")
    return Store(Path(backup_dir), system_identifier)


def choose(settings: Settings, requested: str | None = None, server: str | None = None) -> Store:
    """The cluster a command works on: ``requested`` (``--cluster``), else the connected
    server's (``server``, or asked now), else the only one in the folder."""
    backup_dir = Path(settings.backup_dir)
    if requested is not None:
        return named(backup_dir, requested)
    clusters = known(backup_dir)
    if not clusters:
        raise NotFoundError(f"no point-in-time recovery files in {backup_dir / PITR}: "
                            "is PITR_ENABLED set, and has a base backup been taken?")
    server = server or connected(settings)
    if server is not None:
        if server not in clusters:
            # Never another cluster's files in its place: a re-initialised server has none yet.
            raise NotFoundError(f"the connected server (cluster {server}) has no point-in-time recovery files "
                                f"yet; {_listed(clusters)}: name one with --cluster ID")
        return Store(backup_dir, server)
    if len(clusters) > 1:
        raise RefusedError(f"{backup_dir / PITR} holds several clusters ({', '.join(clusters)}) and the server "
                           "cannot be asked which one it is: name one with --cluster ID")
    return Store(backup_dir, clusters[0])


def current(settings: Settings, receiver: dict[str, Any] | None) -> Store | None:
    """The cluster /healthz, the metrics and the status page are about. In the daemon
    (``receiver``: its WAL stream's state), the cluster it streams from, and none before its
    server first answered: never a guess from the folder, which may hold another server's
    files. In a one-shot command (None), the only one in the folder."""
    backup_dir = Path(settings.backup_dir)
    if receiver is not None:
        server = receiver.get("system_identifier")
        return Store(backup_dir, server) if server else None
    found = known(backup_dir)
    return Store(backup_dir, found[0]) if len(found) == 1 else None


def _listed(clusters: list[str]) -> str:
    return "known clusters: " + ", ".join(clusters) if clusters else "there is none"
