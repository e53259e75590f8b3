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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from backupd.documents import InvalidDocument
from backupd.errors import NotFoundError, RepositoryUnreadable, StorageError, UsageError
from backupd.logging import get_logger
from backupd.manifests import BackupState, FailureRecord, Notified, as_dict, read_as, read_manifest, read_runs
from backupd.stream import write_json_atomically

log = get_logger("backupd.repository")

ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_TIME = r"\d{8}T\d{6}Z"
# A database name may hold any character but NUL, a newline included: DOTALL and fullmatch.
_ID = re.compile(rf"(?P<name>.+)-(?P<time>{_TIME})", re.DOTALL)
# Roles dumps have ids of their own shape, so that no database (not even one called
# "_globals" or "globals") can ever share an id with them: a database id ends in "-<time>".
GLOBALS_ID_PREFIX = "globals@"
_GLOBALS_ID = re.compile(rf"globals@(?P<time>{_TIME})")
GLOBALS = "_globals"
VOLUMES = "_volumes"
PITR = "_pitr"  # point-in-time recovery keeps a layout of its own (backupd.pitr.store)
FORMAT_SUFFIXES = {"custom": ".dump", "directory": ".dir.tar", "tar": ".tar", "plain": ".sql"}

# The names backupd writes in a backup folder, and nothing else is ever deleted:
#   <encoded id><data suffix>      the stored file          <encoded id>.json        its manifest
#   <encoded id>.state.json        later facts              .<one of those>.partial  being written
#   .<encoded id><data suffix>.staging   a directory dump being packed
#   .<encoded id>.json.deleting    a manifest whose backup is being deleted (prune)
_DATA_SUFFIX = r"\.(?:dump|dir\.tar|tar|sql)(?:\.(?:zst|gz|bz2|xz))?(?:\.age)?"
_OWN_NAME = re.compile(rf"(?P<stem>.*[-@]{_TIME})(?P<suffix>{_DATA_SUFFIX}|\.json|\.state\.json)", re.DOTALL)
_OWN_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:partial|staging|deleting|pending)", re.DOTALL)
_FETCH_TEMPORARY = re.compile(r"\.fetch-[a-z0-9_]{8}")  # tempfile.TemporaryDirectory(prefix=".fetch-")
# In BACKUP_DIR itself: a database restore's and a volume restore's staging folders.
_RESTORE_STAGING = re.compile(r"\.restore-[0-9a-f]{0,40}-\d+\.staging|\.volume-restore-[^/]+\.staging")
# backupd's own bookkeeping beside the backups; written atomically like everything else.
BOOKKEEPING = {".last-failure.json", ".replication.json", ".notified.json"}


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
    """A database backup's or a volume archive's id."""
    return f"{name}-{when.astimezone(UTC).strftime(ID_TIME_FORMAT)}"


def make_globals_id(when: datetime) -> str:
    """A roles dump's id: ``globals@20261121T020000Z``."""
    return f"{GLOBALS_ID_PREFIX}{when.astimezone(UTC).strftime(ID_TIME_FORMAT)}"


def is_globals_id(backup_id: str) -> bool:
    return bool(_GLOBALS_ID.fullmatch(backup_id))


def parse_id(backup_id: str) -> tuple[str, datetime]:
    """``shop-20261121T020000Z`` -> ("shop", datetime); a roles dump's id -> ("_globals", datetime);
    UsageError when it is not an id."""
    match = _GLOBALS_ID.fullmatch(backup_id) or _ID.fullmatch(backup_id)
    if not match:
        raise UsageError(f"{backup_id!r} is not a backup id (expected <database>-YYYYMMDDTHHMMSSZ)")
    when = datetime.strptime(match.group("time"), ID_TIME_FORMAT).replace(tzinfo=UTC)
    return match.groupdict().get("name") or GLOBALS, when


def looks_like_id(text: str) -> bool:
    """Whether ``text`` has the shape of an id. A database name may contain ``/``, so an id
    may too: callers look an id up in the repository before they take it for a path."""
    return bool(_GLOBALS_ID.fullmatch(text) or _ID.fullmatch(text))


def own_file_id(name: str) -> tuple[str, str] | None:
    """(id, suffix) when ``name`` is a file name backupd writes for a backup (the stored
    file, its manifest or its state), else None: the one test of what backupd may delete."""
    match = _OWN_NAME.fullmatch(name)
    if not match or match.group("stem").startswith("."):
        return None
    backup_id = decode_name(match.group("stem"))
    if encode_name(backup_id) != match.group("stem") or not looks_like_id(backup_id):
        return None  # not a name backupd would have written
    return backup_id, match.group("suffix")


def is_own_temporary(name: str) -> bool:
    """A partial file, staging folder or deletion marker of backupd's, in a backup folder."""
    match = _OWN_TEMPORARY.fullmatch(name)
    if match and (match.group("name") in BOOKKEEPING or own_file_id(match.group("name"))
                  or is_own_temporary(match.group("name"))):  # e.g. the partial of a pending file
        return True
    return bool(_FETCH_TEMPORARY.fullmatch(name))


PENDING_SUFFIX = ".pending"


def pending_path(final: Path) -> Path:
    """Where a stored file waits, complete but hidden, until its manifest is written (row
    counts and the archive check come first): a run killed meanwhile leaves a temporary
    that the next run removes, never a file that looks like a backup without its manifest."""
    return final.with_name(f".{final.name}{PENDING_SUFFIX}")


def is_data_suffix(suffix: str) -> bool:
    return bool(re.fullmatch(_DATA_SUFFIX, suffix))


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def parse_iso(text: str | None) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if text else None


@dataclass
class Backup:
    """One complete backup: its manifest, where its file is, and its later state."""

    manifest: dict[str, Any]
    folder: Path
    state: dict[str, Any] = field(default_factory=dict)
    stored_size: int | None = None  # the file's size and modification time on disk when it was listed
    stored_mtime: float | None = None
    state_problem: str | None = None  # why its state file is not valid (it is kept, and not followed)

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
    def state_path(self) -> Path:
        return self.folder / f"{encode_name(self.id)}.state.json"

    @property
    def size(self) -> int:
        return int(self.manifest["size_bytes"])

    @property
    def pinned(self) -> bool:
        """An invalid state file may hold a pin that cannot be read: kept as if pinned."""
        return bool(self.state.get("pinned")) or self.state_problem is not None

    @property
    def damaged(self) -> str | None:
        """Why the stored file cannot be what the manifest describes, from its size alone
        (a stat, free); the full hash is left to verify and restore."""
        if self.stored_size is not None and self.stored_size != self.size:
            return f"its file has {self.stored_size} bytes, the manifest says {self.size}"
        found = self.state.get("integrity")  # a mismatch seen by replication
        if found and found.get("mtime") == self.stored_mtime:  # the file has not been replaced since
            return f"{found.get('reason')} (found {found.get('time')})"
        return None

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "id": self.id, "kind": self.kind, "database": self.database, "time": iso(self.time),
            "size_bytes": self.size, "format": m.get("format"), "compression": m.get("compression"),
            "encrypted": bool(m.get("encryption")), "label": m.get("label"), "pinned": self.pinned,
            "verified": (self.state.get("verification") or {}).get("result"),
            "replicated_to": sorted(self.state.get("replicas", {})),
            "status": "damaged" if self.damaged else "ok", "problem": self.damaged,
            "file": str(self.path),
        }


@dataclass
class Problem:
    """Something in the repository a person must look at; backupd never deletes it.
    ``kind``: ``unaccounted`` (a stored file without a readable manifest), ``invalid`` (a
    manifest that is damaged or not backupd's), ``unreadable`` (a folder or file the
    operating system will not let us read: the repository cannot be fully read)."""

    kind: str
    path: Path
    detail: str

    def summary(self) -> dict[str, Any]:
        return {"status": self.kind, "file": str(self.path), "problem": self.detail}


@dataclass
class _FolderScan:
    backups: list[Backup] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


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

    def _entries(self, folder: Path, required: bool) -> list[os.DirEntry]:
        """A folder's entries; a missing folder has none. One that exists but cannot be read
        raises RepositoryUnreadable when ``required``: never mistaken for an empty one."""
        try:
            with os.scandir(folder) as entries:
                return list(entries)
        except FileNotFoundError:
            return []
        except OSError as err:
            if required:
                raise RepositoryUnreadable(_unreadable(folder, err)) from None
            raise

    def folders(self) -> list[Path]:
        """Every folder that holds backups: databases, _globals and each volume's."""
        found = []
        for entry in self._entries(self.root, required=True):
            if entry.name.startswith(".") or entry.name == PITR or not _is_dir(entry):
                continue
            if entry.name != VOLUMES:
                found.append(Path(entry.path))
                continue
            try:
                found += [Path(e.path) for e in self._entries(Path(entry.path), required=True)
                          if not e.name.startswith(".") and _is_dir(e)]
            except RepositoryUnreadable:
                found.append(Path(entry.path))  # reported as unreadable when scanned
        return found

    def file_name(self, backup_id: str, suffix: str) -> str:
        return f"{encode_name(backup_id)}{suffix}"

    def reserve_id(self, name: str, kind: str = "database", when: datetime | None = None) -> tuple[str, datetime]:
        """A fresh id for ``name`` at ``when`` (now); moved on by a second while one is taken,
        so two backups in the same second never share an id. Call under ``lock``."""
        when = (when or utc_now()).replace(microsecond=0)
        folder = self.folder_for(name, kind)
        while True:
            backup_id = make_globals_id(when) if kind == "globals" else make_id(name, when)
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
                self.finish_interrupted(folder)
            yield

    def clean_unfinished(self) -> list[Path]:
        """Remove what runs that died left behind (a kill -9, a power cut): backupd's own
        partial files, staging folders and half-done deletions, in every folder whose lock is
        free. A folder that is locked is being written by a live process and is left alone."""
        removed = []
        for folder in self.folders():
            try:
                with self._flock(folder, ".lock", None) as taken:
                    if taken:
                        removed += self.finish_interrupted(folder)
            except OSError as err:  # one folder we cannot write must not stop the others
                log.warning("cannot clean up a backup folder", folder=str(folder), error=_reason(err))
        return removed

    def finish_interrupted(self, folder: Path) -> list[Path]:
        """Under the folder's lock no one else is writing here: every temporary of backupd's
        is left over from a process that died. A deletion that was cut short is completed,
        because its manifest (kept aside) still accounts for its files."""
        removed = []
        for entry in self._entries(folder, required=False):
            if not is_own_temporary(entry.name) or entry.name.endswith(".state.json.partial"):
                continue  # a state file's partial belongs to the state lock, not to this one
            path = Path(entry.path)
            if entry.name.endswith(".json.deleting"):
                try:
                    removed += self._finish_deletion(path)
                except OSError as err:  # e.g. a folder where its state file should be: reported, not fatal
                    log.error("cannot finish a deletion an earlier run began", manifest=str(path),
                              error=_reason(err))
                continue
            log.warning("removing an unfinished file left by an earlier run", file=str(path))
            _remove(path)
            removed.append(path)
        return removed

    def _finish_deletion(self, marker: Path) -> list[Path]:
        try:
            backup = Backup(manifest=as_dict(read_manifest(marker)), folder=marker.parent)
            files = [backup.path, backup.state_path] if self.accounts_for(backup, marker.name[1:-9]) else []
        except (OSError, ValueError, UsageError):
            files = []  # not a manifest we can trust: delete nothing it names
        for path in files:
            path.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        log.warning("finished a deletion that an earlier run began", manifest=str(marker))
        return [*files, marker]

    def delete(self, backup: Backup) -> bool:
        """Delete one backup: its manifest is first moved aside (so it stops being listed at
        once, and a crash midway is finished by the next run), then its file and state.
        False when it was pinned meanwhile (a pin is read again under both locks)."""
        with self.lock(backup.folder, "delete"), self.lock(backup.folder, "delete", lock_name=".state.lock"):
            try:
                if json.loads(backup.state_path.read_text(encoding="utf-8")).get("pinned"):
                    log.info("not deleted: pinned meanwhile", id=backup.id)
                    return False
            except (OSError, ValueError, AttributeError):
                pass  # no state, or none we can read: no pin
            marker = backup.folder / f".{backup.manifest_path.name}.deleting"
            try:
                os.replace(backup.manifest_path, marker)
            except FileNotFoundError:
                return False  # another process deleted it meanwhile
            backup.path.unlink(missing_ok=True)
            backup.state_path.unlink(missing_ok=True)
            marker.unlink()
            return True

    def remove_stale_temporaries(self, older_than: float) -> list[Path]:
        """Staging folders of restores (in BACKUP_DIR itself) that a killed run left, once
        they are older than ``older_than`` seconds; inside the backup folders the lock
        decides instead (``clean_unfinished``)."""
        cutoff = time.time() - older_than
        removed = []
        for entry in self._entries(self.root, required=True):
            if _RESTORE_STAGING.fullmatch(entry.name) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                log.warning("removing a staging folder left by an earlier restore", folder=entry.path)
                _remove(Path(entry.path))
                removed.append(Path(entry.path))
        return removed

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
        self.change_state(backup, key, lambda _current: value)

    def change_state(self, backup: Backup, key: str, change: Callable[[Any], Any]) -> None:
        """Replace one fact by ``change(its value on disk)``, read and written under the state
        lock: targets replicating side by side each add their own record, none overwrites
        another's with what it read before."""
        path = backup.state_path
        with self.lock(backup.folder, "state", lock_name=".state.lock"):
            state: dict[str, Any] = {}
            if path.exists():
                try:
                    state = as_dict(read_as(BackupState, path))
                except InvalidDocument as err:
                    raise StorageError(f"the state file {path} is not valid ({err}): it is kept for a person "
                                       f"to look at, and nothing is recorded in it; move it away to record "
                                       f"again") from None
            state[key] = change(state.get(key))
            write_json_atomically(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
        backup.state = state

    def mark_damaged(self, backup: Backup, reason: str) -> None:
        """Remember that the stored file no longer matches its checksum, as long as it is
        this very file (its modification time): list, retention and health count it as bad."""
        try:
            mtime = backup.path.stat().st_mtime
        except OSError:
            return
        self.update_state(backup, "integrity", {"time": iso(utc_now()), "reason": reason, "mtime": mtime})

    @staticmethod
    def accounts_for(backup: Backup, manifest_name: str) -> bool:
        """A manifest accounts for a file only when both carry the names backupd gives them:
        ``<encoded id>.json`` and ``<encoded id><data suffix>`` in the same folder. A manifest
        naming anything else (``../x``, a foreign file) is not backupd's, and nothing it names
        is listed or deleted."""
        parse_id(backup.id)
        stem = encode_name(backup.id)
        named, size, sha = backup.manifest["file"], backup.manifest.get("size_bytes"), backup.manifest.get("sha256")
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0 and isinstance(sha, str)):
            raise ValueError("its size_bytes or sha256 is missing or not of the right type")
        return (manifest_name == f"{stem}.json" and isinstance(named, str) and named.startswith(stem)
                and is_data_suffix(named[len(stem):]))

    def _load(self, manifest_path: Path, problems: list[Problem] | None = None) -> Backup | None:
        try:
            backup = Backup(manifest=as_dict(read_manifest(manifest_path)), folder=manifest_path.parent)
            if not self.accounts_for(backup, manifest_path.name):
                raise ValueError("it does not describe a file of backupd's in its folder")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, UsageError) as err:
            detail = f"the manifest {'cannot be read' if isinstance(err, OSError) else 'is invalid'}: {_reason(err)}"
            log.warning("ignoring a manifest that cannot be used", file=str(manifest_path), error=detail)
            if problems is not None:
                problems.append(Problem("unreadable" if isinstance(err, OSError) else "invalid", manifest_path,
                                        detail))
            return None
        try:
            stat = backup.path.stat()
            backup.stored_size, backup.stored_mtime = stat.st_size, stat.st_mtime
        except FileNotFoundError:
            return None  # the file is gone: not a backup any more
        except OSError as err:
            if problems is not None:
                problems.append(Problem("unreadable", backup.path, _reason(err)))
            return None
        self._load_state(backup, problems)
        return backup

    @staticmethod
    def _load_state(backup: Backup, problems: list[Problem] | None) -> None:
        """The backup's later facts. An invalid state file is a problem of its own: the backup
        is still listed, kept as if pinned, and nothing is recorded over the file."""
        try:
            backup.state = as_dict(read_as(BackupState, backup.state_path))
        except FileNotFoundError:
            return
        except (OSError, InvalidDocument) as err:
            kind = "unreadable" if isinstance(err, OSError) else "invalid"
            backup.state_problem = f"its state file cannot be used: {_reason(err)}"
            log.warning("ignoring a state file that cannot be used", file=str(backup.state_path),
                        error=backup.state_problem)
            if problems is not None:
                problems.append(Problem(kind, backup.state_path, backup.state_problem + "; the backup is kept as "
                                        "if pinned, and the file is never deleted"))

    def _scan(self, folder: Path, required: bool = True) -> _FolderScan:
        """The backups in one folder, and the stored files no manifest accounts for."""
        scan = _FolderScan()
        try:
            entries = self._entries(folder, required=True)
        except RepositoryUnreadable as err:
            if required:
                raise
            scan.problems.append(Problem("unreadable", folder, str(err)))
            return scan
        data_files: dict[str, Path] = {}
        for entry in entries:
            if entry.name in BOOKKEEPING:
                scan.problems += invalid_bookkeeping(Path(entry.path))
                continue
            own = own_file_id(entry.name)
            if own is None:
                continue  # not backupd's: never read, listed or deleted
            if own[1] == ".json":
                backup = self._load(Path(entry.path), scan.problems)
                if backup:
                    scan.backups.append(backup)
            elif own[1] != ".state.json":
                data_files[entry.name] = Path(entry.path)
        accounted = {b.path.name for b in scan.backups}
        for name, path in sorted(data_files.items()):
            if name not in accounted:
                scan.problems.append(Problem("unaccounted", path, "a stored file without a readable manifest, "
                                                                  "never deleted"))
        return scan

    def _folders_of(self, database: str | None, kind: str | None) -> list[Path]:
        if database is not None:
            return [self.folder_for(database, kind or "database")]
        if kind == "globals":
            return [self.root / GLOBALS]
        folders = self.folders()
        if kind == "volume":
            return [p for p in folders if p.parent.name == VOLUMES and p.parent.parent == self.root]
        if kind == "database":
            return [p for p in folders if p.parent == self.root and p.name not in (GLOBALS, VOLUMES)]
        return folders

    def inventory(self, database: str | None = None,
                  kind: str | None = "database") -> tuple[list[Backup], list[Problem]]:
        """Complete backups, newest first, and what a person must look at. Raises
        RepositoryUnreadable when BACKUP_DIR (or the one folder asked for) cannot be read."""
        backups: list[Backup] = []
        problems: list[Problem] = []
        if database is None:
            for name in sorted(BOOKKEEPING):
                problems += invalid_bookkeeping(self.root / name)
        for folder in self._folders_of(database, kind):
            scan = self._scan(folder, required=database is not None or folder == self.root / GLOBALS)
            backups += [b for b in scan.backups if (kind is None or b.kind == kind)
                        and (database is None or b.database == database)]
            problems += scan.problems
        backups.sort(key=lambda b: (b.time, b.id), reverse=True)
        return backups, problems

    def backups(self, database: str | None = None, kind: str | None = "database") -> list[Backup]:
        """Complete backups, newest first."""
        return self.inventory(database, kind)[0]

    def find(self, backup_id: str, kind: str = "database") -> Backup:
        """The backup with this id: a database backup or a roles dump (``kind="globals"``:
        only a roles dump), or with ``kind="volume"`` a volume archive (a volume may share a
        database's name)."""
        name, _ = parse_id(backup_id)
        if kind == "volume":
            folders = [self.folder_for(name, "volume")]
        elif is_globals_id(backup_id) or kind == "globals":
            folders = [self.root / GLOBALS]
        else:
            folders = [self.folder_for(name)]
            if name == GLOBALS:  # roles dumps of older versions had ids "_globals-<time>"
                folders.append(self.root / GLOBALS)
        for folder in folders:
            path = folder / f"{encode_name(backup_id)}.json"
            if path.is_file():
                backup = self._load(path)
                if backup and backup.id == backup_id and (kind != "globals" or backup.kind == "globals"):
                    return backup
        self._entries(self.root, required=True)  # an unreadable repository is not "no such backup"
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


def invalid_bookkeeping(path: Path) -> list[Problem]:
    """backupd's own bookkeeping file at ``path`` as a problem when it is not valid (a
    missing or unreadable one is none: it is only a cache of what happened)."""
    try:
        if path.name == ".last-failure.json":
            read_as(FailureRecord, path)
        elif path.name == ".notified.json":
            read_as(Notified, path)
        else:
            read_runs(path)
    except OSError:
        return []
    except InvalidDocument as err:
        return [Problem("invalid", path, f"backupd's bookkeeping file is not valid: {err}; it is ignored")]
    return []


def storage_error(err: OSError, doing: str) -> StorageError:
    """An OSError while writing the repository, as one line that says what and where."""
    where = f" {err.filename}" if err.filename else ""
    return StorageError(f"cannot {doing}:{where}: {_reason(err)}")


def _is_dir(entry: os.DirEntry) -> bool:
    """A folder, or a link to one (a database's folder moved to another disk); what is
    deleted in it is still only what a manifest there accounts for."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _reason(err: BaseException) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def _unreadable(folder: Path, err: OSError) -> str:
    return f"the backup repository cannot be read: {folder}: {_reason(err)} (check BACKUP_DIR and its permissions)"


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
