"""One cluster's WAL files as they lie in its folders: what is archived (``wal/``), the
record beside each archived file, and what the receiver's folder (``.receiving/``) holds.
Read by ``Store``, which adds what they mean (timelines, segments, the window)."""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import Any

from backupd.documents import InvalidDocument, read
from backupd.pitr import wal
from backupd.pitr.doccache import cached, listing
from backupd.pitr.records import Invalid, WalRecord, warn_invalid

# An archived WAL file: the segment (or history file) name, then the transform's suffixes;
# never its record (``<name>.json``).
ARCHIVED = re.compile(r"(?P<name>[0-9A-F]{24}(?:\.partial)?|[0-9A-F]{8}\.history)"
                      r"(?P<suffix>(?:\.(?!json$)[a-z0-9]+)*)")
RECORD_SUFFIX = ".json"  # wal/<name>.json beside each archived WAL file


class WalFiles:
    """The listing half of ``Store`` (which sets these folders)."""

    root: Path
    wal_dir: Path
    spool: Path

    def _try(self, path: Path, load: Any) -> Any:
        """``load()`` (cached, see doccache); None when it is absent, unreadable or invalid.
        Each path is always read by the same loader: the cache holds its checked answer."""
        try:
            return cached(path, load)
        except OSError:
            return None
        except InvalidDocument as err:
            warn_invalid(Invalid(self._relative(path), str(err)))
            return None

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def archived(self) -> dict[str, Path]:
        """Archived WAL files by their own name (``0000000100000000000000A2``, ``….partial``,
        ``00000002.history``)."""
        found: dict[str, Path] = {}
        try:
            entries = list(os.scandir(self.wal_dir))
        except FileNotFoundError:
            return found
        for entry in entries:
            if match := ARCHIVED.fullmatch(entry.name):
                found[match.group("name")] = Path(entry.path)
        return found

    def _load_record(self, path: Path) -> WalRecord:
        record = read(WalRecord, path)
        if record.name + RECORD_SUFFIX != path.name:
            raise InvalidDocument(f"name: {record.name!r} is not this record's own name")
        return record

    def record_paths(self) -> list[Path]:
        return [path for path in listing(self.wal_dir) if is_record(path.name)]

    def records(self) -> dict[str, WalRecord]:
        """The valid records of archived WAL files, by the file's own name."""
        found = {}
        for path in self.record_paths():
            if (record := self._try(path, partial(self._load_record, path))) is not None:
                found[record.name] = record
        return found

    def record(self, name: str) -> WalRecord | None:
        """The valid record of the archived WAL file ``name``, if it has one."""
        path = self.wal_dir / (name + RECORD_SUFFIX)
        return self._try(path, partial(self._load_record, path)) if path.exists() else None

    def damaged_wal(self) -> list[str]:
        """Archived WAL files whose size is not what their record says (a stat each); their
        sha256 (``records()[name].sha256``) is for a full check."""
        records = self.records()
        damaged = []
        for name, path in self.archived().items():
            if (record := records.get(name)) is not None and _size(path) != record.size:
                damaged.append(name)
        return sorted(damaged)

    def received(self) -> dict[str, Path]:
        """What the receiver's folder holds: completed files not yet archived, and the partial."""
        found: dict[str, Path] = {}
        try:
            entries = list(os.scandir(self.spool))
        except FileNotFoundError:
            return found
        for entry in entries:
            if wal.is_wal_name(entry.name) or wal.PARTIAL.fullmatch(entry.name):
                found[entry.name] = Path(entry.path)
        return found


def is_record(name: str) -> bool:
    return name.endswith(RECORD_SUFFIX) and wal.is_archived_name(name.removesuffix(RECORD_SUFFIX))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
