"""Listing the local repository: which folders hold backups, each backup with its typed
manifest and state (read and validated once, here), and what a person must look at (a
stored file no manifest accounts for, a document that is not valid, a folder that cannot
be read). Nothing here writes; ``backupd.repository`` adds what does."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from backupd.backups import Backup, Problem
from backupd.documents import InvalidDocument
from backupd.errors import NotFoundError, RepositoryUnreadable, UsageError
from backupd.logging import get_logger
from backupd.manifests import BackupState, FailureRecord, Notified, read_as, read_manifest, read_runs
from backupd.naming import (
    BOOKKEEPING,
    GLOBALS,
    PITR,
    VOLUMES,
    encode_name,
    is_data_suffix,
    is_globals_id,
    own_file_id,
    parse_id,
)

log = get_logger("backupd.repository")


@dataclass
class _FolderScan:
    backups: list[Backup] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class Listing:
    """Reading the repository: its folders, each backup with its manifest and state, and
    what a person must look at. ``Repository`` adds what writes."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # Layout --------------------------------------------------------------------------
    def folder_for(self, name: str, kind: str = "database") -> Path:
        if kind == "globals":
            return self.root / GLOBALS
        if kind == "volume":
            return self.root / VOLUMES / encode_name(name)
        return self.root / encode_name(name)

    def _entries(self, folder: Path, required: bool) -> list[os.DirEntry[str]]:
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

    @staticmethod
    def accounts_for(backup: Backup, manifest_name: str) -> bool:
        """A manifest accounts for a file only when both carry the names backupd gives them:
        ``<encoded id>.json`` and ``<encoded id><data suffix>`` in the same folder. A manifest
        naming anything else (``../x``, a foreign file) is not backupd's, and nothing it names
        is listed or deleted."""
        if backup.sha256 is None:
            raise ValueError("it records no sha256")
        stem = encode_name(backup.id)
        named = backup.doc.file
        return manifest_name == f"{stem}.json" and named.startswith(stem) and is_data_suffix(named[len(stem):])

    def _load(self, manifest_path: Path, problems: list[Problem] | None = None) -> Backup | None:
        try:
            backup = Backup(read_manifest(manifest_path), manifest_path.parent)
            if not self.accounts_for(backup, manifest_path.name):
                raise ValueError("it does not describe a file of backupd's in its folder")
        except (OSError, ValueError) as err:
            detail = f"the manifest {'cannot be read' if isinstance(err, OSError) else 'is invalid'}: {os_reason(err)}"
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
                problems.append(Problem("unreadable", backup.path, os_reason(err)))
            return None
        self._load_state(backup, problems)
        return backup

    @staticmethod
    def _load_state(backup: Backup, problems: list[Problem] | None) -> None:
        """The backup's later facts. An invalid state file is a problem of its own: the backup
        is still listed, kept as if pinned, and nothing is recorded over the file."""
        try:
            backup.state_doc = read_as(BackupState, backup.state_path)
        except FileNotFoundError:
            return
        except (OSError, InvalidDocument) as err:
            kind = "unreadable" if isinstance(err, OSError) else "invalid"
            backup.state_problem = f"its state file cannot be used: {os_reason(err)}"
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


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """A folder, or a link to one (a database's folder moved to another disk); what is
    deleted in it is still only what a manifest there accounts for."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def os_reason(err: BaseException) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def _unreadable(folder: Path, err: OSError) -> str:
    return f"the backup repository cannot be read: {folder}: {os_reason(err)} (check BACKUP_DIR and its permissions)"


