"""``backupd pitr base|verify|restore|status``: what each takes from the command line and
prints. The work is done where each verb lives (``coordinator.base_backup``, ``verify``,
``restore``, ``onedb``, ``preview``, ``status``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from backupd.progress import human_bytes, print_table

if TYPE_CHECKING:
    from backupd.settings import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.pitr_verb == "base":
        from backupd.coordinator import base_backup

        print(base_backup(settings, "manual").id, flush=True)
        return 0
    if args.pitr_verb == "verify":
        return _verify(settings, args)
    if args.pitr_verb == "restore" and (args.database is not None or args.to is None):
        from backupd.pitr.onedb_cli import restore_one_database

        return restore_one_database(settings, args)
    if args.pitr_verb == "restore":
        return _restore(settings, args)
    return _status(settings, args)


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.pitr.clusters import choose
    from backupd.pitr.verify import verify_cluster

    result = verify_cluster(settings, choose(settings, args.cluster))
    if result["ok"] is None:
        print(f"unverifiable: {result['reason']}", flush=True)
        return 0
    print(f"{result['base']}: ok in {result['seconds']:.1f}s, recovered to {result['replayed_to']}", flush=True)
    return 0


def _restore(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.pitr.moment import parse_target, understood
    from backupd.pitr.restore import restore

    moment = parse_target(args.time)
    print(understood(args.time, moment), flush=True)
    if args.dry_run:
        from backupd.pitr.preview import preview

        return preview(settings, moment, args.to, args.yes, args.cluster)
    built = restore(settings, moment, args.to, args.yes, args.cluster)
    for note in built.notes:
        print(f"note: {note}")
    if built.moved_aside:
        print(f"the folder's old content is in {built.moved_aside}")
    target = built.recovery_target_time or "the end of the WAL received"
    print(f"{built.directory} holds base backup {built.base.id} of cluster {built.base.doc.system_identifier} "
          f"and {built.wal_files} WAL files; "
          f"a PostgreSQL {built.major} server started on it recovers to {target}, then promotes")
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.pitr import status as pitr_status

    report = pitr_status.describe(settings, ask_server=True, cluster=args.cluster)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    server = report.get("server") or {}
    if server.get("reachable"):
        lag = f", {server['lag_bytes']} bytes behind" if server["lag_bytes"] is not None else ""
        print(f"slot {settings.pitr_slot}: {server['slot']}{lag}")
    else:
        print(f"server: not reachable ({server.get('error')})")
    for job, failure in report["failures"].items():
        if failure.get("cluster") is None:  # before the server said which cluster it is
            print(f"last {job} failed at {failure.get('time')}: {failure.get('error')}")
    if not report["clusters"]:
        print("no point-in-time recovery files yet")
    for entry in report["clusters"]:
        _print_cluster(entry)
    return 0


def _print_cluster(entry: dict[str, Any]) -> None:
    """One cluster of ``pitr status``: each is about its own files alone."""
    print(f"\ncluster {entry['system_identifier']}" + (" (the connected server)" if entry["connected"] else ""))
    window = entry["window"]
    print(f"recovery window: {window['start']} to {window['end']}" if window else "recovery window: none")
    for job, failure in entry["failures"].items():
        print(f"last {job} failed at {failure.get('time')}: {failure.get('error')}")
    for gap in entry["gaps"]:
        print(f"gap at {gap['time']}: {gap['reason']}")
    rows = [("BASE BACKUP", "STARTED", "ENDED", "SIZE", "USABLE")]
    rows += [(b["id"], b["start_time"], b["stop_time"], human_bytes(b["size"]),
              "damaged" if b["damaged"] else "yes" if b["usable"] else "no") for b in entry["base_backups"]]
    print_table(rows)
    from backupd.pitr.chains import describe

    print(*filter(None, map(describe, entry.get("chains") or [])), sep="\n")
    for name in entry.get("damaged_wal") or []:
        print(f"damaged WAL file: {name} (not the size its record says)")
    for item in entry["invalid"]:
        print(f"invalid: {item['file']}: {item['reason']} (ignored)")
    if drill := entry["last_drill"]:
        print(f"last drill: {drill['time']}: " + ("ok" if drill["ok"] else f"FAILED: {drill.get('reason')}"))
    if entry.get("restore_estimate"):
        print(entry["restore_estimate"])
