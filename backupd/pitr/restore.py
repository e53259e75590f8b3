"""A data directory that a stock ``postgres`` of the cluster's major recovers to a moment
and promotes: the base backup extracted, the WAL it needs copied inside it
(``backupd_wal/``), ``recovery.signal``, and ``restore_command`` and the target written to
``postgresql.auto.conf``. It is built in a staging folder and put in place only once
complete (``staging``); whatever the folder held before is moved aside then, never deleted.
The base backup is the newest one that is intact and reaches the target with WAL."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from backupd.dump_formats import reader_stages
from backupd.errors import Aborted, BackupdError, IntegrityError, NotFoundError, RefusedError
from backupd.logging import get_logger
from backupd.pitr import chains, prepared, wal, waldump
from backupd.pitr.destination import check_destination
from backupd.pitr.integrity import check_stored_wal, check_wal_copy
from backupd.pitr.reach import segments_to_copy
from backupd.pitr.staging import Staging, checkpoint
from backupd.pitr.store import Base, Store
from backupd.postgres import Server
from backupd.repository import iso, utc_now
from backupd.stream import Pipeline, stream_to_file

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("pitr")

WAL_FOLDER = "backupd_wal"  # inside the data directory: restore_command needs no absolute path


@dataclass
class Built:
    directory: Path
    base: Base
    target: datetime | None  # None: every WAL record there is (latest)
    recovery_target_time: str | None  # what was written; None when recovering all equals the target
    wal_files: int
    moved_aside: Path | None
    major: int
    notes: list[str] = field(default_factory=list)


def build_data_directory(settings: Settings, target: datetime | None, to: Path, yes: bool, store: Store,
                         strict: bool = False) -> Built:
    """``store``'s cluster. ``strict`` (the drill): the newest usable base backup or a
    failure, never an older one."""
    from backupd.pitr.plan import check_room, make_plan  # the plan builds on choose_base, below

    staging = Staging(to, yes)  # a folder that is not empty is refused before the long checks
    plan = make_plan(settings, store, target, strict)  # what --dry-run shows, followed here
    check_room(plan, to)
    base, notes = plan.base, plan.notes
    major = base.doc.server_major
    with staging.building() as folder:
        log.info("extracting the base backup", base=base.id, folder=str(folder))
        chains.extract(settings, store, base, folder, _extract)  # through its chain when incremental
        checkpoint()
        log.info("copying the WAL", base=base.id)
        copied = _copy_wal(store, base, folder / WAL_FOLDER, settings.identity, target, plan.segments)
        built = Built(to, base, target, None, copied, None, major, notes)
        if target is not None:
            _choose_recovery_target(settings, folder, target, built)
        _note_prepared(settings, folder, built)
        checkpoint()
        log.info("writing the recovery settings", folder=str(folder))
        _write_recovery_settings(folder, built)
        _own_like_the_data(folder)
        built.moved_aside = staging.commit()
    log.info("data directory built for point-in-time recovery", directory=str(to), base=base.id,
             target=iso(target) or "latest", wal_files=copied)
    return built


def _choose_recovery_target(settings: Settings, folder: Path, target: datetime, built: Built) -> None:
    log.info("finding the newest commit in the WAL", target=iso(target))
    newest_commit = _newest_commit(settings.pg_bindir, built.major, folder / WAL_FOLDER, built)
    if newest_commit is None or target < newest_commit:
        built.recovery_target_time = target.isoformat(sep=" ")
    else:  # PostgreSQL refuses a target beyond the last commit; recovering all is the same here
        built.notes.append(f"no commit after {iso(target)} in the WAL (the newest is at "
                           f"{iso(newest_commit)}): recovering all of it gives that moment")


def _note_prepared(settings: Settings, folder: Path, built: Built) -> None:
    """A note when the recovery leaves a two-phase transaction prepared (it holds its locks)."""
    tool = waldump.tool(settings.pg_bindir, built.major)
    if tool is None:
        return
    stop = built.target if built.recovery_target_time else None
    if pending := prepared.left_prepared(tool, folder / WAL_FOLDER, stop):
        built.notes.append(prepared.note(pending))


def restore(settings: Settings, target: datetime | None, to: Path | str, yes: bool,
            cluster: str | None = None) -> Built:
    """The cluster ``cluster`` (``--cluster``; else the connected server's, else the only
    one), from the local archive; when it cannot reach ``target`` (or is gone), from the
    first replication target that has the files. ``to`` is checked before anything else."""
    from backupd.pitr import clusters
    from backupd.pitr.replicate import fetch_folder, fetch_store
    from backupd.targets import target_urls

    real = check_destination(to, settings.backup_dir, lambda: server_data_directory(settings))
    server = None if cluster else clusters.connected(settings)
    try:
        store = clusters.choose(settings, cluster, server)
        if reaches(store, target) or not target_urls(settings):
            return build_data_directory(settings, target, real, yes, store)
        cluster = store.system_identifier
    except NotFoundError:
        if not target_urls(settings):
            raise
    log.info("the local archive cannot do this restore; fetching from the replication targets")
    with fetch_folder(settings.backup_dir) as folder:
        fetched = fetch_store(settings, Path(folder), target, cluster or server)
        return build_data_directory(settings, target, real, yes, fetched)


def reaches(store: Store, target: datetime | None) -> bool:
    """Whether the local window holds ``target``: a WAL file or a base backup lost here (a
    hand's ``rm``, a disk replaced) may still be on a target, whose window reaches it."""
    window = store.window()
    return window is not None and (target is None or window.start <= target <= window.end)


def server_data_directory(settings: Settings) -> str | None:
    """Where the configured server keeps its data, when it runs and may say (a superuser or
    pg_read_all_settings; others do not see the setting)."""
    try:
        with Server.from_settings(settings).connect() as conn:
            row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'").fetchone()
    except psycopg.Error:
        return None
    return row[0] if row else None


def choose_base(store: Store, target: datetime | None, strict: bool = False) -> tuple[Base, list[str]]:
    """The newest usable base backup that ends before ``target`` and is intact (its size and
    sha256 checked), and notes that say which one and why. A damaged one is skipped for an
    older one (its WAL reaches the target too), unless ``strict``."""
    window = store.window()
    if window is None:
        raise NotFoundError("no base backup recovers to the newest WAL received: take one with "
                            "'backupd pitr base' (a gap in the stream, if any, is listed by 'backupd pitr status')")
    if target is not None:
        if target < window.start:
            raise RefusedError(f"--time {iso(target)} is before the recovery window, which starts at "
                               f"{iso(window.start)}")
        if target > window.end:
            raise RefusedError(f"--time {iso(target)} is after the newest WAL received, at {iso(window.end)}: "
                               "use --time latest for everything there is")
    usable = store.usable_bases()
    candidates = [b for b in usable if target is None or b.consistent_at <= target]
    notes: list[str] = chains.broken_notes(store, usable)
    if strict and notes:  # the drill proves the newest base backup restores, whole chains included
        raise IntegrityError("; ".join(notes))
    for base in candidates:
        log.info("checking the base backup", base=base.id)
        if (damage := chains.chain_damage(base, store.bases())) is None:
            newest = "the newest base backup" if base is candidates[0] else "the newest intact base backup"
            reach = (f"that is consistent before {iso(target)} (from {base.consistent_at.isoformat()})" if target
                     else "that reaches the newest WAL")
            notes.append(f"took base backup {base.id}: {newest} {reach} (size and sha256 checked)")
            return base, notes
        log.error("base backup is damaged", base=base.id, reason=damage)
        notes.append(f"skipped base backup {base.id}: {damage}")
        if strict:
            raise IntegrityError(f"base backup {base.id} is damaged: {damage}")
    raise IntegrityError("no intact base backup reaches " + (iso(target) or "the newest WAL") + ": "
                         + "; ".join(notes))


def _extract(base: Base, to: Path, identity: str | None) -> None:
    # Numeric owners: the files belong to the uid the server ran as (999 in the official
    # image, 70 in the Alpine one), whatever this machine calls it.
    untar = ("tar", ["tar", "-x", "--numeric-owner", "-f", "-", "-C", str(to)])
    with open(base.path, "rb") as source:
        pipeline = Pipeline([*reader_stages(base.path, identity), untar], stdin=source, stdout=subprocess.DEVNULL)
    pipeline.finish()


def _copy_wal(store: Store, base: Base, folder: Path, identity: str | None, target: datetime | None,
              segments: dict[int, tuple[str, Path, bool]] | None = None) -> int:
    """The WAL recovery to ``target`` reads from the base backup's start on (the newest
    timeline's path: ``segments``, the plan's, else reach.segments_to_copy again), and every
    timeline history file; each checked once read back."""
    folder.mkdir(mode=0o700, exist_ok=True)
    wanted = {name: (path, True) for name, path in store.archived().items() if name.endswith(".history")}
    wanted |= {name: (path, False) for name, path in store.received().items() if name.endswith(".history")}
    reach = segments if segments is not None else segments_to_copy(store, base, target)
    wanted |= {name: (path, stored) for name, path, stored in reach.values()}
    records = store.records()
    for name, (path, stored) in wanted.items():
        checkpoint()
        if stored:
            check_stored_wal(name, path, records.get(name))
            _read_back(name, path, folder / name, identity)
        else:
            try:
                shutil.copyfile(path, folder / name)
            except FileNotFoundError:  # the receiver completed it meanwhile: the complete one is newer
                done = store.received().get(name) or store.archived().get(name)
                if done is None:
                    raise
                return _copy_wal(store, base, folder, identity, target)
        check_wal_copy(name, folder / name, store.segment_size)
    return len(wanted)


def _read_back(name: str, path: Path, copy: Path, identity: str | None) -> None:
    """An archived WAL file, decrypted and decompressed; one that cannot be is damaged."""
    with open(path, "rb") as source:
        stages = reader_stages(path, identity) or [("cat", ["cat"])]
        pipeline = Pipeline(stages, stdin=source)
    try:
        stream_to_file(pipeline, copy, what=f"restoring {name}")
    except Aborted:
        raise
    except BackupdError as err:
        raise IntegrityError(f"WAL file {path.name} cannot be read back, it is damaged: {err}") from None


def _newest_commit(pg_bindir: Path, major: int, folder: Path, built: Built) -> datetime | None:
    """The time of the newest commit in the copied WAL (pg_waldump), newest segment first.
    Only segments on the recovery's path were copied, so a branch never answers."""
    tool = waldump.tool(pg_bindir, major)
    if tool is None:
        built.notes.append(f"pg_waldump {major} is not installed: the target is written as given; PostgreSQL "
                           "refuses one after the last commit")
        return None
    segments = sorted((n for n in os.listdir(folder) if wal.SEGMENT.fullmatch(n)), key=lambda n: n[8:], reverse=True)
    for name in segments:
        if (newest := waldump.newest_commit(tool, folder / name)) is not None:
            return newest
    return None


def _write_recovery_settings(to: Path, built: Built) -> None:
    lines = [f"\n# backupd pitr restore, {iso(utc_now())}: recover from the WAL in {WAL_FOLDER}/ "
             f"(base backup {built.base.id}), then promote",
             f"restore_command = 'cp {WAL_FOLDER}/%f \"%p\"'",
             "recovery_target_timeline = 'latest'"]
    if built.recovery_target_time:
        lines += [f"recovery_target_time = '{built.recovery_target_time}'", "recovery_target_action = 'promote'"]
    with open(to / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
        conf.write("\n".join(lines) + "\n")
    (to / "recovery.signal").touch()
    (to / "standby.signal").unlink(missing_ok=True)


def _own_like_the_data(to: Path) -> None:
    """Files backupd wrote belong to whoever owns the extracted data (the server's user)."""
    os.chmod(to, 0o700)
    if os.geteuid() != 0:
        return
    owner = (to / "PG_VERSION").stat()
    for path in [to, to / WAL_FOLDER, *(to / WAL_FOLDER).iterdir(), to / "recovery.signal",
                 to / "postgresql.auto.conf"]:
        os.chown(path, owner.st_uid, owner.st_gid)
