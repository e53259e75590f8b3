"""One stored backup as listed (``Backup``), and what a listing reports a person must look
at (``Problem``). A backup carries its typed manifest and state, read once when it is
listed: everything about it is an attribute of those documents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from backupd.manifests import (
    BackupState,
    DumpManifest,
    RolesManifest,
    StoredManifest,
    UnlistedFile,
    VolumeManifest,
    iso_text,
)
from backupd.naming import GLOBALS, encode_name, iso, parse_id

AnyManifest = StoredManifest | UnlistedFile


class Backup:
    """One complete backup: its manifest, where its file is, and its later state."""

    def __init__(self, doc: AnyManifest, folder: Path, state_doc: BackupState | None = None) -> None:
        self.doc: AnyManifest = doc
        self.folder = folder
        self.state_doc = state_doc if state_doc is not None else BackupState()
        self.stored_size: int | None = None  # the file's size and modification time on disk when it was listed
        self.stored_mtime: float | None = None
        self.state_problem: str | None = None  # why its state file is not valid (it is kept, and not followed)

    @property
    def id(self) -> str:
        return self.doc.id

    @property
    def kind(self) -> str:
        return self.doc.kind

    @property
    def database(self) -> str:
        """The database, the volume's name for a volume archive, or _globals."""
        if isinstance(self.doc, VolumeManifest):
            return self.doc.volume
        return self.doc.database if isinstance(self.doc, DumpManifest) else GLOBALS

    @property
    def volume_counts(self) -> dict[str, int | None]:
        """A volume archive's file count and source bytes (None for what it does not record)."""
        if isinstance(self.doc, VolumeManifest):
            return self.doc.counts()
        return {"file_count": None, "source_bytes": None}

    @property
    def finished(self) -> datetime:
        """When it finished; the time of its id for a manifest that does not say."""
        return self.doc.recorded_finish or self.time

    @property
    def globals_id(self) -> str | None:
        """The roles dump a database backup was made with."""
        return self.doc.globals_id if isinstance(self.doc, DumpManifest) else None

    @property
    def pg_dump_version(self) -> str:
        """The pg_dump (or pg_dumpall) that wrote it; empty when that is not known."""
        return self.doc.pg_dump_version if isinstance(self.doc, DumpManifest | RolesManifest) else ""

    @property
    def time(self) -> datetime:
        return parse_id(self.id)[1]

    @property
    def path(self) -> Path:
        return self.folder / self.doc.file

    @property
    def manifest_path(self) -> Path:
        return self.folder / f"{encode_name(self.id)}.json"

    @property
    def state_path(self) -> Path:
        return self.folder / f"{encode_name(self.id)}.state.json"

    @property
    def size(self) -> int:
        return self.doc.size_bytes

    @property
    def sha256(self) -> str | None:
        """What the file's sha256 must be; None for a file restored without its manifest."""
        return self.doc.sha256

    @property
    def pinned(self) -> bool:
        """An invalid state file may hold a pin that cannot be read: kept as if pinned."""
        return self.state_doc.pinned or self.state_problem is not None

    @property
    def verified(self) -> str | None:
        """The result of its last verification, if it had one."""
        return self.state_doc.verification.result if self.state_doc.verification else None

    @property
    def damaged(self) -> str | None:
        """Why the stored file cannot be what the manifest describes, from its size alone
        (a stat, free); the full hash is left to verify and restore."""
        if self.stored_size is not None and self.stored_size != self.size:
            return f"its file has {self.stored_size} bytes, the manifest says {self.size}"
        found = self.state_doc.integrity  # a mismatch seen by replication
        if found and found.mtime == self.stored_mtime:  # the file has not been replaced since
            return f"{found.reason} (found {iso_text(found.time)})"
        return None

    def summary(self) -> dict[str, Any]:
        doc = self.doc
        return {
            "id": self.id, "kind": self.kind, "database": self.database, "time": iso(self.time),
            "size_bytes": self.size, "format": doc.format, "compression": doc.compression,
            "encrypted": doc.encryption is not None, "label": doc.label, "pinned": self.pinned,
            "verified": self.verified, "replicated_to": sorted(self.state_doc.replicas),
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
