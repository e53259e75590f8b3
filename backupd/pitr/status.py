"""What point-in-time recovery can do now, for ``pitr status``, ``/status``, ``/healthz``
and the metrics: the recovery window, the base backups, the stream and the last drill."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from backupd import failures
from backupd.pitr import chains, cluster, clusters, estimate
from backupd.pitr.records import VerifyRecord, to_json
from backupd.pitr.store import Store
from backupd.postgres import Server
from backupd.repository import iso, parse_iso

if TYPE_CHECKING:
    from backupd.settings import Settings



def describe(settings: Settings, receiver: dict[str, Any] | None = None, ask_server: bool = False,
             cluster: str | None = None) -> dict[str, Any]:
    """Every cluster in the folder (``clusters``; only ``cluster`` when named), and at the
    top the one this is about: ``cluster``, else the connected server's (the receiver's, or
    asked when ``ask_server``), else the only one; none when there is no telling."""
    backup_dir = Path(settings.backup_dir)
    server = (receiver or {}).get("system_identifier") or (clusters.connected(settings) if ask_server else None)
    if cluster is not None:
        current: Store | None = clusters.named(backup_dir, cluster)
    elif server is not None:
        current = Store(backup_dir, server)
    else:
        current = clusters.current(settings, receiver)
    names = [cluster] if cluster is not None else clusters.known(backup_dir)
    entries = [_cluster(Store(backup_dir, name), settings, name == server) for name in names]
    report: dict[str, Any] = {"enabled": settings.pitr_enabled, "slot": settings.pitr_slot, "system_identifier": None,
                              "window": None, "base_backups": [], "gaps": [], "last_drill": None, "invalid": [],
                              "failures": failures.shown(failures.of_cluster(
                                  backup_dir, current.system_identifier if current else None)),
                              "receiver": receiver, "clusters": entries}
    for entry in entries:
        if current is not None and entry["system_identifier"] == current.system_identifier:
            report.update({key: value for key, value in entry.items() if key not in ("failures", "connected")})
    if ask_server:
        report["server"] = _ask_server(settings)
    return report


def _cluster(store: Store, settings: Settings, connected: bool) -> dict[str, Any]:
    """One cluster's own: its window, base backups, gaps, drill, stored problems, failures."""
    usable = {b.id for b in store.usable_bases()}
    window = store.window()
    return {
        "system_identifier": store.system_identifier, "connected": connected,
        "window": {"start": iso(window.start), "end": iso(window.end), "base": window.base.id} if window else None,
        "newest_received": iso(store.newest_received_time()),
        "wal_files": len(store.archived()), "damaged_wal": store.damaged_wal(),
        "base_backups": [{**b.summary(), "usable": b.id in usable} for b in store.bases()],
        "chains": chains.summary(store.bases()),  # full base backups and the incrementals on them
        "gaps": [to_json(gap) for gap in store.gaps()], "last_drill": _shown(store.last_drill()),
        **_estimate(store),
        "invalid": [item.describe() for item in store.invalid()],
        "failures": failures.shown(failures.own(Path(settings.backup_dir), store.system_identifier))}


def _shown(drill: VerifyRecord | None) -> dict[str, Any] | None:
    return to_json(drill) if drill is not None else None


def _estimate(store: Store) -> dict[str, Any]:
    """How long a restore to now would take, as a figure and as ``pitr status`` and the
    status page say it; None before a drill measured the rates."""
    seconds = estimate.to_now(store)
    if seconds is None:
        return {"restore_estimate_seconds": None, "restore_estimate": None}
    return {"restore_estimate_seconds": round(seconds, 1),
            "restore_estimate": f"a restore to now would take about {max(round(seconds), 1)} s (from the last drill)"}


def _ask_server(settings: Settings) -> dict[str, Any]:
    try:
        with Server.from_settings(settings).connect() as conn:
            position = cluster.current_lsn(conn)
            found = cluster.slot(conn, settings.pitr_slot)
    except psycopg.Error as err:
        return {"reachable": False, "error": " ".join(str(err).split())}
    if found is None:
        return {"reachable": True, "slot": "missing", "lag_bytes": None}
    lag = max(position - found.restart_lsn, 0) if found.restart_lsn is not None else None
    return {"reachable": True, "slot": found.wal_status, "slot_active_pid": found.active_pid, "lag_bytes": lag}


def problems(settings: Settings, receiver: dict[str, Any] | None, now: datetime) -> tuple[list[tuple[str, str]],
                                                                              list[tuple[str, str]]]:
    """(failures, warnings) as (key, message), for /healthz and the notifications."""
    fails: list[tuple[str, str]] = []
    warns: list[tuple[str, str]] = []
    limit = settings.pitr_max_lag
    store = clusters.current(settings, receiver)
    for job, record in failures.of_cluster(settings.backup_dir, store.system_identifier if store else None).items():
        if job == "receiver":
            continue  # judged below by how long the stream has been down
        what = {"base": "the newest base backup", "verify": "the last PITR drill"}[job]
        when = f" at {iso(record.time)}" if record.time else ""
        fails.append((f"pitr-{job}", f"{what} failed{when}: {record.error}"))
    if receiver is not None:
        down_since = parse_iso(receiver.get("down_since"))
        down_for = receiver.get("down_seconds")  # by a clock that never jumps, when known
        if down_for is None and down_since is not None:
            down_for = (now - down_since).total_seconds()
        if down_for is not None and down_for > limit:
            fails.append(("pitr-receiver", f"the WAL stream has been down since {iso(down_since)}"
                                           + (f": {receiver['error']}" if receiver.get("error") else "")))
        lag = receiver.get("lag_seconds")
        if lag is not None and lag > limit:
            fails.append(("pitr-lag", f"WAL written {lag:.0f}s ago has not reached BACKUP_DIR "
                                      f"({receiver.get('lag_bytes')} bytes behind; PITR_MAX_LAG is {limit:g}s)"))
        slot = receiver.get("slot") or {}
        if slot.get("wal_status") in ("lost", "missing"):
            fails.append(("pitr-slot", f"the replication slot {settings.pitr_slot!r} is {slot['wal_status']}"))
        elif slot.get("wal_status") == "unreserved":
            warns.append(("pitr-slot", f"the replication slot {settings.pitr_slot!r} is about to lose WAL "
                                       "(max_slot_wal_keep_size)"))
        if receiver.get("archive_error"):
            warns.append(("pitr-archive", f"received WAL cannot be archived: {receiver['archive_error']}"))
    if store is None:
        return fails, warns
    drill = store.last_drill()
    if drill and drill.ok is None:
        warns.append(("pitr-verify", f"the PITR drill is not possible here: {drill.reason}"))
    warns += _stored_problems(store)
    if store.window() is None:
        warns.append(("pitr-window", "no base backup recovers to the newest WAL yet (a new one is being taken "
                                     "or failed): there is no recovery window"))
    return fails, warns


def _stored_problems(store: Store) -> list[tuple[str, str]]:
    """Damaged and invalid stored files: each is left out of the window, and said here."""
    warns = [("pitr-damaged", f"base backup {b.id} is damaged: its file is not the size its manifest records")
             for b in store.bases() if not b.intact_by_size()]
    if damaged := store.damaged_wal():
        warns.append(("pitr-damaged-wal", f"{len(damaged)} archived WAL file(s) are damaged (not the size their "
                                          f"record says), the first {damaged[0]}"))
    if invalid := store.invalid():
        warns.append(("pitr-invalid", f"{len(invalid)} stored PITR document(s) are invalid and ignored, the first "
                                      f"{invalid[0].file}: {invalid[0].reason}"))
    return warns
