"""One stored backup as listed (``Backup``), and what a listing reports a person must look
at (``Problem``). A backup carries its typed manifest and state, read once when it is
listed: everything about it is an attribute of those documents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from backupd.documents import InvalidDocument, parse
from backupd.manifests import (
    BackupState,
    DumpManifest,
    StoredManifest,
    UnlistedFile,
    VolumeManifest,
    as_dict,
    iso_text,
    parse_manifest,
)
from backupd.naming import GLOBALS, encode_name, iso, parse_id

AnyManifest = StoredManifest | UnlistedFile


class Backup:
    """One complete backup: its manifest, where its file is, and its later state."""

    def __init__(self, doc: AnyManifest | None = None, folder: Path | None = None,
                 state_doc: BackupState | None = None, *, manifest: dict[str, Any] | None = None) -> None:
        if doc is None and manifest is not None:
            doc = _compat_manifest(manifest)
        if doc is None or folder is None:
            raise TypeError("a Backup is made of its manifest and its folder")
        self.doc: AnyManifest = doc
        self.folder = folder
        self.state_doc = state_doc if state_doc is not None else BackupState()
        self.stored_size: int | None = None  # the file's size and modification time on disk when it was listed
        self.stored_mtime: float | None = None
        self.state_problem: str | None = None  # why its state file is not valid (it is kept, and not followed)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The manifest as the dict it was read from: for callers not yet converted."""
        return as_dict(self.doc)

    @property
    def state(self) -> dict[str, Any]:
        """The state as the dict it was read from: for callers not yet converted."""
        return as_dict(self.state_doc)

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


def _compat_manifest(manifest: dict[str, Any]) -> AnyManifest:
    """A manifest given as a dict (for callers not yet converted), validated like one read
    from a file; one without a sha256 is a file restored without its manifest."""
    try:
        return parse_manifest(manifest)
    except InvalidDocument:
        if manifest.get("sha256") is not None:
            raise
        return parse(UnlistedFile, manifest)


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
