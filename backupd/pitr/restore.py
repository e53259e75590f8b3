"""A data directory that a stock ``postgres`` of the cluster's major recovers to a moment
and promotes: the base backup extracted, the WAL it needs copied inside it
(``backupd_wal/``), ``recovery.signal``, and ``restore_command`` and the target written to
``postgresql.auto.conf``. Whatever the folder held before is moved aside into it, never
deleted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backupd.archive import reader_stages
from backupd.errors import IntegrityError, NotFoundError, RefusedError, UsageError
from backupd.logging import get_logger
from backupd.pgtools import installed
from backupd.pitr import wal
from backupd.pitr.store import Base, Store
from backupd.process import run
from backupd.repository import iso, utc_now
from backupd.stream import Pipeline, sha256_of, stream_to_file

log = get_logger("pitr")

WAL_FOLDER = "backupd_wal"  # inside the data directory: restore_command needs no absolute path
ASIDE_PREFIX = "backupd-replaced-"
_COMMIT = re.compile(r"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


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
    aside = _make_room(to, yes)
    expected = base.manifest.get("sha256")
    if expected and sha256_of(base.path) != expected:
        raise IntegrityError(f"base backup {base.id} does not match its manifest (sha256): it cannot be used")
    _extract(base, to, settings.identity)
    copied = _copy_wal(store, base, to / WAL_FOLDER, settings.identity)
    major = int(base.manifest["server_major"])
    built = Built(to, base, target, None, copied, aside, major)
    if target is not None:
        newest_commit = _newest_commit(settings.pg_bindir, major, to / WAL_FOLDER, store.segment_size, built)
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
    numbers = store.segment_numbers()
    usable = [b for b in store.bases() if store.usable(b, numbers)]
    if target is None:
        return usable[0]
    return next(b for b in usable if b.stop_time <= target)


def _make_room(to: Path, yes: bool) -> Path | None:
    if to == Path("/"):
        raise UsageError("--to /: give the data directory's own folder")
    if not to.exists():
        to.mkdir(mode=0o700, parents=True)
        return None
    if not to.is_dir():
        raise UsageError(f"--to {to}: not a folder")
    entries = [e for e in os.listdir(to) if e != "lost+found"]
    if not entries:
        return None
    if not yes:
        raise RefusedError(f"{to} is not empty: --yes moves what it holds aside, into "
                           f"{to}/{ASIDE_PREFIX}<time> (kept, never deleted). Stop the server that uses it first")
    aside = to / f"{ASIDE_PREFIX}{utc_now().strftime('%Y%m%dT%H%M%SZ')}"
    aside.mkdir(mode=0o700)
    for name in entries:
        if not name.startswith(ASIDE_PREFIX):  # earlier ones stay where they are
            os.rename(to / name, aside / name)
    log.warning("moved the folder's old content aside", folder=str(aside))
    return aside


def _extract(base: Base, to: Path, identity: str | None) -> None:
    with open(base.path, "rb") as source:
        pipeline = Pipeline([*reader_stages(base.path, identity), ("tar", ["tar", "-x", "-f", "-", "-C", str(to)])],
                            stdin=source, stdout=subprocess.DEVNULL)
    pipeline.finish()


def _copy_wal(store: Store, base: Base, folder: Path, identity: str | None) -> int:
    """The WAL from the base backup's start on, and every history file: complete segments
    first, a partial one (the stream's newest, or one kept when the stream broke) under its
    segment's name only where no complete one exists."""
    folder.mkdir(mode=0o700, exist_ok=True)
    size = store.segment_size
    wanted: dict[str, tuple[Path, bool]] = {}  # name in the data directory -> (source, stored by backupd)
    sources = [(name, path, True) for name, path in store.archived().items()]
    sources += [(name, path, False) for name, path in store.received().items()]
    for name, path, stored in sorted(sources, key=lambda s: s[0].endswith(".partial")):  # complete ones first
        plain = name.removesuffix(".partial")
        if not plain.endswith(".history") and wal.parse_segment(plain, size)[1] < base.start_segno:
            continue
        wanted.setdefault(plain, (path, stored))
    for name, (path, stored) in wanted.items():
        if stored:
            with open(path, "rb") as source:
                stages = reader_stages(path, identity) or [("cat", ["cat"])]
                stream_to_file(Pipeline(stages, stdin=source), folder / name, what=f"restoring {name}")
        else:
            shutil.copyfile(path, folder / name)
    return len(wanted)


def _newest_commit(pg_bindir: Path, major: int, folder: Path, size: int, built: Built) -> datetime | None:
    """The time of the newest commit in the copied WAL (pg_waldump), newest segment first."""
    tools = next((t for t in installed(pg_bindir) if t.major == major and (t.bindir / "pg_waldump").exists()), None)
    if tools is None:
        built.notes.append(f"pg_waldump {major} is not installed: the target is written as given; PostgreSQL "
                           "refuses one after the last commit")
        return None
    segments = sorted((n for n in os.listdir(folder) if wal.SEGMENT.fullmatch(n)),
                      key=lambda n: wal.parse_segment(n, size)[::-1], reverse=True)
    for name in segments:
        _, out, _ = run("pg_waldump", [str(tools.bindir / "pg_waldump"), "--rmgr=Transaction",
                                       str(folder / name), str(folder / name)], env={"TZ": "UTC"}, timeout=300)
        stamps = _COMMIT.findall(out.decode("utf-8", "replace"))
        if stamps:
            return max(datetime.fromisoformat(s).replace(tzinfo=UTC) for s in stamps)
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
