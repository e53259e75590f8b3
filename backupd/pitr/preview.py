"""``pitr restore --dry-run``: the Plan the restore would follow, printed, and nothing
touched: no file in BACKUP_DIR nor at the destination, no write to the server (it is asked
where its data is, as the restore asks). The same checks refuse, in the same order: the
destination, the moment against the window, the base backups, the room. A refusal is exit 2,
as the restore's would be; the plan is printed first when there is one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.errors import BackupdError, NotFoundError
from backupd.pitr import clusters, waldump
from backupd.pitr.destination import check_destination
from backupd.pitr.lastcommit import Commit, last_commit
from backupd.pitr.plan import Plan, check_room, free_room, make_plan
from backupd.pitr.restore import reaches, server_data_directory
from backupd.pitr.staging import Staging
from backupd.pitr.store import Store
from backupd.progress import human_bytes
from backupd.redact import strip_url_credentials
from backupd.repository import iso

if TYPE_CHECKING:
    from backupd.settings import Settings


def preview(settings: Settings, target: datetime | None, to: Path | str | None, yes: bool,
            cluster: str | None = None) -> int:
    """Prints the plan for a restore to ``target`` at ``to`` (None: the destination is
    another mode's, checked there); 0, or UsageError/RefusedError (exit 2) where the
    restore would refuse."""
    from backupd.targets import target_urls

    real = None
    if to is not None:
        real = check_destination(to, settings.backup_dir, lambda: server_data_directory(settings))
        Staging(real, yes)  # checks only: a folder that is not empty needs --yes
    server = None if cluster else clusters.connected(settings)
    try:
        store: Store | None = clusters.choose(settings, cluster, server)
    except NotFoundError:
        if not target_urls(settings):
            raise
        store = None
    if store is None or not reaches(store, target):
        if urls := target_urls(settings):
            _print_fetch(store, target, urls)
            return 0
    assert store is not None  # without targets, choose raised above
    plan = make_plan(settings, store, target)
    _print_plan(plan, _commit(settings, store, plan), real)
    if real is not None:
        check_room(plan, real)
    print("dry run: nothing was changed", flush=True)
    return 0


def _print_fetch(store: Store | None, target: datetime | None, urls: list[str]) -> None:
    where = "there is no local copy of the cluster" if store is None else (
        f"the local archive does not reach {iso(target) or 'the newest WAL'}")
    shown = ", ".join(strip_url_credentials(u) for u in urls)
    print(f"{where}: the restore fetches the cluster's files from the first replication target that has them "
          f"({shown}) into BACKUP_DIR first, and plans from that copy; a dry run fetches nothing, so it cannot "
          "say more", flush=True)


def _commit(settings: Settings, store: Store, plan: Plan) -> Commit | str:
    tool = waldump.tool(settings.pg_bindir, plan.base.doc.server_major)
    if tool is None:
        return f"not known: pg_waldump {plan.base.doc.server_major} is not installed"
    try:
        found = last_commit(tool, store, plan.segments, plan.target, settings.identity)
    except BackupdError as err:
        return f"not known: the WAL could not be read ({err})"
    return found if found is not None else "none in the WAL after this base backup"


def _print_plan(plan: Plan, commit: Commit | str, real: Path | None) -> None:
    lines = [f"cluster {plan.cluster}"]
    lines += [f"base backup: {note}" for note in plan.notes]
    lines += [f"base backup: {note}" for note in plan.skipped]
    local = len(plan.segments) - plan.archived_segments
    lines.append(f"WAL: {len(plan.segments)} segment(s) from BACKUP_DIR ({plan.archived_segments} archived, {local} "
                 f"still in the receiver's folder), {human_bytes(plan.wal_fetch_bytes)} to copy, "
                 f"{human_bytes(plan.wal_replay_bytes)} of WAL to replay")
    until = f"at or before {iso(plan.target)}" if plan.target else "in the WAL"
    lines.append(f"last commit {until}: " + (commit if isinstance(commit, str) else
                                             f"transaction {commit.xid} at "
                                             f"{commit.time.isoformat().replace('+00:00', 'Z')} (lsn {commit.lsn})"))
    room = f"room needed: {human_bytes(plan.room_needed)}{'' if plan.room_exact else ' or more'}"
    if real is not None:
        existing, free = free_room(real)
        room += f" on {existing}'s disk, {human_bytes(free)} free"
    lines.append(room)
    lines.append(f"a restore would take about {plan.estimate_seconds:.0f} s (from the last drill)"
                 if plan.estimate_seconds is not None else
                 "duration: no estimate yet: no drill has measured the rates (backupd pitr verify)")
    print("\n".join(lines), flush=True)
