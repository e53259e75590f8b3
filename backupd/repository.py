"""The local repository: ids, file names, manifests and listing. The one place that
knows how backups are laid out in ``BACKUP_DIR`` (interface §3).

    BACKUP_DIR/<database>/<id>.<ext>        the backup
    BACKUP_DIR/<database>/<id>.json         its manifest, written once
    BACKUP_DIR/<database>/<id>.state.json   later facts (verification, replicas, pin)
    BACKUP_DIR/_globals/...                 roles and tablespaces

A backup exists only when both its file and its manifest do: the file is renamed
into place first and the manifest last, so a crash in between leaves nothing listed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

from backupd.errors import NotFoundError, UsageError
from backupd.logging import get_logger
from backupd.stream import write_json_atomically

log = get_logger("backupd.repository")

ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_ID = re.compile(r"^(?P<name>.+)-(?P<time>\d{8}T\d{6}Z)$")
GLOBALS = "_globals"
VOLUMES = "_volumes"
FORMAT_SUFFIXES = {"custom": ".dump", "directory": ".dir.tar", "tar": ".tar", "plain": ".sql"}


def encode_name(name: str) -> str:
    """Percent-encode ``%``, ``/`` and a leading ``.`` or ``_`` so that no database can
    escape its folder or collide with ``_globals``."""
    encoded = name.replace("%", "%25").replace("/", "%2F")
    if encoded[:1] == ".":
        encoded = "%2E" + encoded[1:]
    elif encoded[:1] == "_":
        encoded = "%5F" + encoded[1:]
    return encoded


def decode_name(encoded: str) -> str:
    """The inverse of ``encode_name``: every ``%`` in an encoded name starts an escape."""
    return unquote(encoded)


def make_id(name: str, when: datetime) -> str:
    return f"{name}-{when.astimezone(timezone.utc).strftime(ID_TIME_FORMAT)}"


def parse_id(backup_id: str) -> tuple[str, datetime]:
    """``shop-20261121T020000Z`` -> ("shop", datetime); UsageError when it is not an id."""
    match = _ID.match(backup_id)
    if not match:
        raise UsageError(f"{backup_id!r} is not a backup id (expected <database>-YYYYMMDDTHHMMSSZ)")
    when = datetime.strptime(match.group("time"), ID_TIME_FORMAT).replace(tzinfo=timezone.utc)
    return match.group("name"), when


def looks_like_id(text: str) -> bool:
    return bool(_ID.match(text)) and "/" not in text


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def iso(when: datetime | None) -> str | None:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def parse_iso(text: str | None) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) if text else None


@dataclass
class Backup:
    """One complete backup: its manifest, where its file is, and its later state."""

    manifest: dict[str, Any]
    folder: Path
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "database")

    @property
    def database(self) -> str:
        """The database, the volume's name for a volume archive, or _globals."""
        return self.manifest.get("database") or self.manifest.get("volume") or GLOBALS

    @property
    def time(self) -> datetime:
        return parse_id(self.id)[1]

    @property
    def path(self) -> Path:
        return self.folder / self.manifest["file"]

    @property
    def manifest_path(self) -> Path:
        return self.folder / f"{encode_name(self.id)}.json"

    @property
    def size(self) -> int:
        return int(self.manifest["size_bytes"])

    @property
    def pinned(self) -> bool:
        return bool(self.state.get("pinned"))

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "id": self.id, "kind": self.kind, "database": self.database, "time": iso(self.time),
            "size_bytes": self.size, "format": m.get("format"), "compression": m.get("compression"),
            "encrypted": bool(m.get("encryption")), "label": m.get("label"), "pinned": self.pinned,
            "verified": self.state.get("verification", {}).get("result"),
            "replicated_to": sorted(self.state.get("replicas", {})),
            "file": str(self.path),
        }


class Repository:
    def __init__(self, root: Path):
        self.root = Path(root)

    # Layout --------------------------------------------------------------------------
    def folder_for(self, name: str, kind: str = "database") -> Path:
        if kind == "globals":
            return self.root / GLOBALS
        if kind == "volume":
            return self.root / VOLUMES / encode_name(name)
        return self.root / encode_name(name)

    def ensure_folder(self, folder: Path) -> Path:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for parent in reversed(folder.relative_to(self.root).parents[:-1]):
            (self.root / parent).mkdir(mode=0o700, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def folders(self) -> list[Path]:
        """Every folder that holds backups: databases, _globals and each volume's."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != VOLUMES]
        volumes = self.root / VOLUMES
        if volumes.is_dir():
            found += [p for p in volumes.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return found

    def file_name(self, backup_id: str, suffix: str) -> str:
        return f"{encode_name(backup_id)}{suffix}"

    def reserve_id(self, name: str, kind: str = "database", when: datetime | None = None) -> tuple[str, datetime]:
        """A fresh id for ``name`` at ``when`` (now); moved on by a second while one is taken,
        so two backups in the same second never share an id. Call under ``lock``."""
        when = (when or utc_now()).replace(microsecond=0)
        folder = self.folder_for(name, kind)
        while True:
            backup_id = make_id(GLOBALS if kind == "globals" else name, when)
            if not any(folder.glob(f"{_glob_escape(encode_name(backup_id))}.*")) and \
               not any(folder.glob(f".{_glob_escape(encode_name(backup_id))}.*")):
                return backup_id, when
            when += timedelta(seconds=1)

    @contextmanager
    def _flock(self, folder: Path, lock_name: str, what: str | None) -> Iterator[bool]:
        """Hold the folder's lock file; ``what`` None means: do not wait, yield False when busy."""
        self.ensure_folder(folder)
        fd = os.open(folder / lock_name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if what is None:
                    yield False
                    return
                log.info("waiting for another backupd operation on the same files", folder=folder.name, operation=what)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)

    @contextmanager
    def lock(self, folder: Path, what: str, lock_name: str = ".lock") -> Iterator[None]:
        """An exclusive lock on one folder for one operation (never for a daemon's life),
        so two processes on this host never write the same database's files at once.
        State files have a lock of their own, so recording a verification never waits
        for a long backup."""
        with self._flock(folder, lock_name, what):
            if lock_name == ".lock":
                self._remove_stale_partials(folder)
            yield

    def clean_unfinished(self) -> list[Path]:
        """Remove what runs that died left behind (a kill -9, a power cut): partial files
        and staging folders in every folder whose lock is free. A folder that is locked is
        being written by a live process and is left alone."""
        removed = []
        for folder in self.folders():
            with self._flock(folder, ".lock", None) as taken:
                if taken:
                    removed += [*folder.glob(".*.partial"), *folder.glob(".*.staging")]
                    self._remove_stale_partials(folder)
        return removed

    def _remove_stale_partials(self, folder: Path) -> None:
        # Under the folder's lock no one else is writing here: every partial is left over
        # from a process that died.
        for partial in folder.glob(".*.partial"):
            log.warning("removing unfinished file left by an earlier run", file=str(partial))
            _remove(partial)
        for staging in folder.glob(".*.staging"):
            log.warning("removing staging folder left by an earlier run", folder=str(staging))
            _remove(staging)

    # Failures ------------------------------------------------------------------------
    # The newest failure of each database is kept beside its backups until the next
    # success, so health sees failures of CLI runs and of runs before a restart.
    FAILURE_FILE = ".last-failure.json"

    def _failure_folder(self, name: str | None, kind: str) -> Path:
        return self.root if name is None else self.folder_for(name, kind)

    def record_failure(self, name: str | None, error: str, kind: str = "database") -> None:
        """``name`` None records a failure of a whole run (the server was unreachable)."""
        folder = self.ensure_folder(self._failure_folder(name, kind))
        record = {"database": name, "kind": kind, "time": iso(utc_now()), "error": error}
        write_json_atomically(folder / self.FAILURE_FILE, json.dumps(record, sort_keys=True) + "\n")

    def clear_failure(self, name: str | None, kind: str = "database") -> None:
        (self._failure_folder(name, kind) / self.FAILURE_FILE).unlink(missing_ok=True)

    def failures(self) -> list[dict[str, Any]]:
        """Every remembered failure: {"database" (None for a whole run), "kind", "time", "error"}"""
        found: list[dict[str, Any]] = []
        if not self.root.is_dir():
            return found
        for path in [self.root / self.FAILURE_FILE, *self.root.glob(f"*/{self.FAILURE_FILE}")]:
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return found

    # Manifests -----------------------------------------------------------------------
    def write_manifest(self, folder: Path, manifest: dict[str, Any]) -> Path:
        path = folder / f"{encode_name(manifest['id'])}.json"
        if path.exists():
            raise UsageError(f"manifest {path} exists already; manifests are written once")
        write_json_atomically(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return path

    def update_state(self, backup: Backup, key: str, value: Any) -> None:
        """Set one later fact (verification, replicas, pin) in ``<id>.state.json``;
        the manifest is never rewritten."""
        path = backup.folder / f"{encode_name(backup.id)}.state.json"
        with self.lock(backup.folder, "state", lock_name=".state.lock"):
            state = {}
            if path.exists():
                try:
                    state = json.loads(path.read_text(encoding="utf-8"))
                except ValueError:
                    log.warning("replacing an unreadable state file", file=str(path))
            state[key] = value
            partial = path.with_name(f".{path.name}.partial")
            partial.unlink(missing_ok=True)
            write_json_atomically(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
        backup.state = state

    def _load(self, manifest_path: Path) -> Backup | None:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            backup = Backup(manifest=manifest, folder=manifest_path.parent)
            parse_id(backup.id)
        except (OSError, ValueError, KeyError, UsageError) as err:
            log.warning("ignoring unreadable manifest", file=str(manifest_path), error=str(err))
            return None
        if not backup.path.is_file():
            return None  # the file is gone: not a backup any more
        state_path = manifest_path.with_name(manifest_path.name[:-5] + ".state.json")
        if state_path.exists():
            try:
                backup.state = json.loads(state_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.warning("ignoring unreadable state file", file=str(state_path))
        return backup

    def backups(self, database: str | None = None, kind: str | None = "database") -> list[Backup]:
        """Complete backups, newest first."""
        if not self.root.is_dir():
            return []
        if database is not None:
            folders = [self.folder_for(database, kind or "database")]
        elif kind == "globals":
            folders = [self.root / GLOBALS]
        elif kind == "volume":
            folders = [p for p in self.folders() if p.parent.name == VOLUMES and p.parent.parent == self.root]
        else:
            folders = [p for p in self.folders() if kind is None or p.parent == self.root and p.name != GLOBALS]
        found = []
        for folder in folders:
            if not folder.is_dir():
                continue
            for manifest_path in folder.glob("*.json"):
                if manifest_path.name.endswith(".state.json"):
                    continue
                backup = self._load(manifest_path)
                if backup and (kind is None or backup.kind == kind) and (database is None or backup.database == database):
                    found.append(backup)
        found.sort(key=lambda b: (b.time, b.id), reverse=True)
        return found

    def find(self, backup_id: str, kind: str = "database") -> Backup:
        """The backup with this id: a database backup (or a roles dump), or with
        ``kind="volume"`` a volume archive (a volume may share a database's name)."""
        name, _ = parse_id(backup_id)
        folders = [self.folder_for(name, kind)]
        if name == GLOBALS and kind == "database":
            folders.append(self.root / GLOBALS)
        for folder in folders:
            path = folder / f"{encode_name(backup_id)}.json"
            if path.is_file():
                backup = self._load(path)
                if backup and backup.id == backup_id:
                    return backup
        raise NotFoundError(f"no backup with id {backup_id!r} in {self.root}")

    def latest(self, database: str | None, kind: str = "database") -> Backup:
        """The newest backup of ``database`` (or volume); without a name, of the only one there is."""
        noun, option = ("volume", "--volume") if kind == "volume" else ("database", "--database")
        if database is None:
            names = sorted({b.database for b in self.backups(kind=kind)})
            if not names:
                raise NotFoundError(f"no {noun} backups in {self.root}")
            if len(names) > 1:
                raise UsageError(f"'latest' needs {option}: {self.root} holds backups of {', '.join(names)}")
            database = names[0]
        backups = self.backups(database, kind=kind)
        if not backups:
            raise NotFoundError(f"no backups of {noun} {database!r} in {self.root}")
        return backups[0]


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
