"""A data directory that a stock ``postgres`` of the cluster's major recovers to a moment
and promotes: the base backup extracted, the WAL it needs copied inside it
(``backupd_wal/``), ``recovery.signal``, and ``restore_command`` and the target written to
``postgresql.auto.conf``. Whatever the folder held before is moved aside into it, never
deleted."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backupd.archive import reader_stages
from backupd.errors import IntegrityError, NotFoundError, RefusedError, UsageError
from backupd.logging import get_logger
from backupd.pitr import wal, waldump
from backupd.pitr.store import Base, Store
from backupd.repository import iso, utc_now
from backupd.stream import Pipeline, sha256_of, stream_to_file

log = get_logger("pitr")

WAL_FOLDER = "backupd_wal"  # inside the data directory: restore_command needs no absolute path
ASIDE_PREFIX = "backupd-replaced-"


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


def parse_target(text: str) -> datetime | None:
    """``latest`` -> None; an ISO 8601 time (without an offset: UTC) -> that moment."""
    if text == "latest":
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise UsageError(f"--time {text!r}: give 'latest' or a time such as 2026-11-29T14:03:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def build_data_directory(settings, target: datetime | None, to: Path, yes: bool,
                         store: Store | None = None) -> Built:
    store = store or Store.only(settings.backup_dir)
    base = choose_base(store, target)
    to = Path(os.path.abspath(to))
    _refuse_a_running_server(to)
    if (encrypted := base.path.name.endswith(".age")) and not settings.identity:
        raise UsageError(f"base backup {base.id} is encrypted: restoring it needs BACKUP_ENCRYPTION_IDENTITY")
    expected = base.manifest.get("sha256")
    if expected and sha256_of(base.path) != expected:
        raise IntegrityError(f"base backup {base.id} does not match its manifest (sha256): it cannot be used")
    aside = _make_room(to, yes)
    _extract(base, to, settings.identity if encrypted else None)
    copied = _copy_wal(store, base, to / WAL_FOLDER, settings.identity)
    major = int(base.manifest["server_major"])
    built = Built(to, base, target, None, copied, aside, major)
    if target is not None:
        newest_commit = _newest_commit(settings.pg_bindir, major, to / WAL_FOLDER, built)
        if newest_commit is None or target < newest_commit:
            built.recovery_target_time = target.isoformat(sep=" ")
        else:  # PostgreSQL refuses a target beyond the last commit; recovering all is the same here
            built.notes.append(f"no commit after {iso(target)} in the WAL (the newest is at "
                               f"{iso(newest_commit)}): recovering all of it gives that moment")
    _write_recovery_settings(to, built)
    _own_like_the_data(to)
    log.info("data directory built for point-in-time recovery", directory=str(to), base=base.id,
             target=iso(target) or "latest", wal_files=copied)
    return built


def restore(settings, target: datetime | None, to: Path, yes: bool) -> Built:
    """From the local archive; when it cannot reach ``target`` (or is gone), from the first
    replication target that has the files."""
    from backupd.pitr.replicate import fetch_folder, fetch_store
    from backupd.targets import target_urls

    try:
        store = Store.only(settings.backup_dir)
        if store.window() is not None or not target_urls(settings):
            return build_data_directory(settings, target, to, yes, store)
    except NotFoundError:
        if not target_urls(settings):
            raise
    log.info("the local archive cannot do this restore; fetching from the replication targets")
    with fetch_folder(settings.backup_dir) as folder:
        return build_data_directory(settings, target, to, yes, fetch_store(settings, Path(folder), target))


def choose_base(store: Store, target: datetime | None) -> Base:
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
    if target is None:
        return usable[0]
    return next(b for b in usable if b.stop_time <= target)


def _refuse_a_running_server(to: Path) -> None:
    """A server of this machine still running on the folder (one in another container is
    not visible from here: the runbook stops it first)."""
    try:
        pid = int((to / "postmaster.pid").read_text().split()[0])
        running = Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except (OSError, ValueError, IndexError):
        return
    if running:
        raise RefusedError(f"a PostgreSQL server (pid {pid}) is running on {to}: stop it first")


def _make_room(to: Path, yes: bool) -> Path | None:
    """An empty ``to``. What it held moves aside, never deleted: beside it when that is the
    same disk (``<to>.backupd-replaced-<time>``), else (``to`` is a volume's mount point)
    into ``<to>/backupd-replaced-<time>``, owned like the data so the server can read it."""
    if to == Path("/"):
        raise UsageError("--to /: give the data directory's own folder")
    if not to.exists():
        to.mkdir(mode=0o700, parents=True)
        return None
    if not to.is_dir():
        raise UsageError(f"--to {to}: not a folder")
    entries = [e for e in os.listdir(to) if e != "lost+found" and not e.startswith(ASIDE_PREFIX)]
    if not entries:
        return None
    if not yes:
        raise RefusedError(f"{to} is not empty: --yes moves what it holds aside, next to it or into "
                           f"{to}/{ASIDE_PREFIX}<time> (kept, never deleted). Stop the server that uses it first")
    stamp = utc_now().strftime("%Y%m%dT%H%M%S%fZ")
    if not os.path.ismount(to) and os.stat(to.parent).st_dev == os.stat(to).st_dev:
        aside = to.with_name(f"{to.name}.{ASIDE_PREFIX}{stamp}")
        os.rename(to, aside)
        to.mkdir(mode=0o700)
        owner = os.stat(aside)
        if os.geteuid() == 0:
            os.chown(to, owner.st_uid, owner.st_gid)
    else:
        aside = to / f"{ASIDE_PREFIX}{stamp}"
        aside.mkdir(mode=0o700)
        owner = os.stat(to)
        if os.geteuid() == 0:
            os.chown(aside, owner.st_uid, owner.st_gid)
        for name in entries:
            os.rename(to / name, aside / name)
    log.warning("moved the folder's old content aside", folder=str(aside))
    return aside


def _extract(base: Base, to: Path, identity: str | None) -> None:
    # Numeric owners: the files belong to the uid the server ran as (999 in the official
    # image, 70 in the Alpine one), whatever this machine calls it.
    untar = ("tar", ["tar", "-x", "--numeric-owner", "-f", "-", "-C", str(to)])
    with open(base.path, "rb") as source:
        pipeline = Pipeline([*reader_stages(base.path, identity), untar], stdin=source, stdout=subprocess.DEVNULL)
    pipeline.finish()


def _copy_wal(store: Store, base: Base, folder: Path, identity: str | None) -> int:
    """The WAL recovery reads from the base backup's start on (the newest timeline's path,
    Store.segments), and every timeline history file."""
    folder.mkdir(mode=0o700, exist_ok=True)
    wanted = {name: (path, True) for name, path in store.archived().items() if name.endswith(".history")}
    wanted |= {name: (path, False) for name, path in store.received().items() if name.endswith(".history")}
    wanted |= {name: (path, stored) for segno, (name, path, stored) in store.segments().items()
               if segno >= base.start_segno}
    for name, (path, stored) in wanted.items():
        if stored:
            with open(path, "rb") as source:
                stages = reader_stages(path, identity) or [("cat", ["cat"])]
                stream_to_file(Pipeline(stages, stdin=source), folder / name, what=f"restoring {name}")
            continue
        try:
            shutil.copyfile(path, folder / name)
        except FileNotFoundError:  # the receiver completed it meanwhile: the complete one is newer
            done = store.received().get(name) or store.archived().get(name)
            if done is None:
                raise
            return _copy_wal(store, base, folder, identity)
    return len(wanted)


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
