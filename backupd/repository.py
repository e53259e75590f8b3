"""The local repository: the one place that knows how backups are laid out in ``BACKUP_DIR``,
and that writes there. Names are ``backupd.naming``'s, reading is ``backupd.listing``'s.

    BACKUP_DIR/<database>/<id>.<ext>        the backup
    BACKUP_DIR/<database>/<id>.json         its manifest, written once
    BACKUP_DIR/<database>/<id>.state.json   later facts (verification, replicas, pin)
    BACKUP_DIR/_globals/...                 roles and tablespaces

A backup exists only when both its file and its manifest do: the file is renamed
into place first and the manifest last, so a crash in between leaves nothing listed.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from backupd.backups import Backup, Problem
from backupd.documents import Document, InvalidDocument, dump_json, parse
from backupd.errors import StorageError, UsageError
from backupd.listing import Listing, invalid_bookkeeping, os_reason
from backupd.logging import get_logger
from backupd.manifests import BackupState, Manifest, as_dict, parse_manifest, read_as, read_manifest
from backupd.naming import (
    BOOKKEEPING,
    FORMAT_SUFFIXES,
    GLOBALS,
    GLOBALS_ID_PREFIX,
    ID_TIME_FORMAT,
    PENDING_SUFFIX,
    PITR,
    RESTORE_STAGING,
    VOLUMES,
    decode_name,
    encode_name,
    is_data_suffix,
    is_globals_id,
    is_own_temporary,
    iso,
    looks_like_id,
    make_globals_id,
    make_id,
    own_file_id,
    parse_id,
    parse_iso,
    pending_path,
    utc_now,
)
from backupd.stream import write_json_atomically

D = TypeVar("D", bound=Document)

# Names others import from here, as they always have.
__all__ = ["BOOKKEEPING", "FORMAT_SUFFIXES", "GLOBALS", "GLOBALS_ID_PREFIX", "ID_TIME_FORMAT", "PENDING_SUFFIX",
           "PITR", "VOLUMES", "Backup", "Problem", "Repository", "decode_name", "encode_name", "invalid_bookkeeping",
           "is_data_suffix", "is_globals_id", "is_own_temporary", "iso", "looks_like_id", "make_globals_id",
           "make_id", "own_file_id", "parse_id", "parse_iso", "pending_path", "storage_error", "utc_now"]

log = get_logger("backupd.repository")


class Repository(Listing):
    def ensure_folder(self, folder: Path) -> Path:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for parent in reversed(folder.relative_to(self.root).parents[:-1]):
            (self.root / parent).mkdir(mode=0o700, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

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
            backup = Backup(read_manifest(marker), marker.parent)
            files = [backup.path, backup.state_path] if self.accounts_for(backup, marker.name[1:-9]) else []
        except (OSError, ValueError):
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
                if read_as(BackupState, backup.state_path).pinned:
                    log.info("not deleted: pinned meanwhile", id=backup.id)
                    return False
            except (OSError, InvalidDocument):
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
            if RESTORE_STAGING.fullmatch(entry.name) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                log.warning("removing a staging folder left by an earlier restore", folder=entry.path)
                _remove(Path(entry.path))
                removed.append(Path(entry.path))
        return removed

    # Manifests -----------------------------------------------------------------------
    def write_manifest(self, folder: Path, manifest: dict[str, Any] | Manifest) -> Path:
        """Write a manifest once, through its model: what is written is what listing reads
        back (a manifest that would not validate is refused, and nothing is written)."""
        doc = manifest if isinstance(manifest, Manifest) else _valid(parse_manifest, manifest, "manifest")
        path = folder / f"{encode_name(doc.id)}.json"
        if path.exists():
            raise UsageError(f"manifest {path} exists already; manifests are written once")
        write_json_atomically(path, dump_json(doc))
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
            doc = _valid(partial(parse, BackupState), state, "state")
            write_json_atomically(path, dump_json(doc))
        backup.state_doc = doc

    def mark_damaged(self, backup: Backup, reason: str) -> None:
        """Remember that the stored file no longer matches its checksum, as long as it is
        this very file (its modification time): list, retention and health count it as bad."""
        try:
            mtime = backup.path.stat().st_mtime
        except OSError:
            return
        self.update_state(backup, "integrity", {"time": iso(utc_now()), "reason": reason, "mtime": mtime})


_reason = os_reason


def _valid(parse_as: Callable[[Any], D], data: dict[str, Any], what: str) -> D:
    """``data`` through its model before it is written; StorageError when it does not validate."""
    try:
        return parse_as(data)
    except InvalidDocument as err:
        raise StorageError(f"refusing to write a {what} that would not read back: {err}") from None


def storage_error(err: OSError, doing: str) -> StorageError:
    """An OSError while writing the repository, as one line that says what and where."""
    where = f" {err.filename}" if err.filename else ""
    return StorageError(f"cannot {doing}:{where}: {_reason(err)}")


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
