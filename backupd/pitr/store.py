"""One cluster's point-in-time recovery files: base backups, the archived WAL, the folder
the receiver writes into, the gaps in the stream, and the recovery window they give."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupd.errors import NotFoundError
from backupd.pitr import wal
from backupd.repository import PITR, iso, parse_iso
from backupd.stream import AtomicFile, fsync_dir, write_json_atomically

# An archived WAL file: the segment (or history file) name, then the transform's suffixes.
_ARCHIVED = re.compile(r"(?P<name>[0-9A-F]{24}(?:\.partial)?|[0-9A-F]{8}\.history)(?P<suffix>(?:\.[a-z0-9]+)*)")
_BASE_MANIFEST = re.compile(r"base-\d{8}T\d{6}Z\.json")


@dataclass
class Base:
    manifest: dict[str, Any]
    folder: Path

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def path(self) -> Path:
        return self.folder / self.manifest["file"]

    @property
    def manifest_path(self) -> Path:
        return self.folder / f"{self.id}.json"

    @property
    def server_manifest_path(self) -> Path:
        return self.folder / f"{self.id}.backup_manifest"

    @property
    def start_time(self) -> datetime:
        return parse_iso(self.manifest["start_time"])  # type: ignore[return-value]

    @property
    def stop_time(self) -> datetime:
        return parse_iso(self.manifest["stop_time"])  # type: ignore[return-value]

    @property
    def start_segno(self) -> int:
        return wal.segment_of(wal.parse_lsn(self.manifest["start_lsn"]), self.manifest["wal_segment_size"])

    def summary(self) -> dict[str, Any]:
        keys = ("id", "start_time", "stop_time", "start_lsn", "stop_lsn", "timeline", "size", "sha256")
        return {key: self.manifest.get(key) for key in keys}


@dataclass
class Window:
    start: datetime
    end: datetime
    base: Base  # the oldest base backup the window starts from


class Store:
    def __init__(self, backup_dir: Path, system_identifier: str):
        self.system_identifier = system_identifier
        self.root = Path(backup_dir) / PITR / system_identifier
        self.base_dir = self.root / "base"
        self.wal_dir = self.root / "wal"
        self.spool = self.root / ".receiving"
        self.timelines_dir = self.root / "timelines"

    @classmethod
    def all(cls, backup_dir: Path) -> list[Store]:
        """Every cluster with PITR files, the one that received WAL last first."""
        try:
            names = [e.name for e in os.scandir(Path(backup_dir) / PITR) if e.is_dir() and e.name.isdigit()]
        except FileNotFoundError:
            return []
        stores = [cls(backup_dir, name) for name in names]
        return sorted(stores, key=lambda s: s.newest_received_time() or datetime.min.replace(tzinfo=UTC),
                      reverse=True)

    @classmethod
    def only(cls, backup_dir: Path) -> Store:
        stores = cls.all(backup_dir)
        if not stores:
            raise NotFoundError(f"no point-in-time recovery files in {Path(backup_dir) / PITR}: "
                                "is PITR_ENABLED set, and has a base backup been taken?")
        return stores[0]

    def ensure(self) -> None:
        for folder in (self.root.parent.parent, self.root.parent, self.root, self.base_dir, self.wal_dir, self.spool):
            folder.mkdir(mode=0o700, exist_ok=True)

    # What the cluster is -----------------------------------------------------------
    @property
    def cluster(self) -> dict[str, Any]:
        return self._read_json("cluster.json") or {}

    def remember_cluster(self, segment_size: int, major: int) -> None:
        known = {"system_identifier": self.system_identifier, "wal_segment_size": segment_size, "server_major": major}
        if self.cluster != known:
            write_json_atomically(self.root / "cluster.json", json.dumps(known, indent=2))

    @property
    def segment_size(self) -> int:
        return int(self.cluster.get("wal_segment_size", 16 * 1024 * 1024))

    # Base backups ------------------------------------------------------------------
    def bases(self) -> list[Base]:
        """Complete base backups (a manifest and its file), newest first."""
        found = []
        try:
            entries = list(os.scandir(self.base_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not _BASE_MANIFEST.fullmatch(entry.name):
                continue
            try:
                manifest = json.loads(Path(entry.path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            base = Base(manifest, self.base_dir)
            if base.path.exists():
                found.append(base)
        return sorted(found, key=lambda b: b.manifest["start_time"], reverse=True)

    # WAL ---------------------------------------------------------------------------
    def archived(self) -> dict[str, Path]:
        """Archived WAL files by their own name (``0000000100000000000000A2``, ``….partial``,
        ``00000002.history``)."""
        found: dict[str, Path] = {}
        try:
            entries = list(os.scandir(self.wal_dir))
        except FileNotFoundError:
            return found
        for entry in entries:
            if match := _ARCHIVED.fullmatch(entry.name):
                found[match.group("name")] = Path(entry.path)
        return found

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

    # Timelines ----------------------------------------------------------------------------
    def remember_history(self, name: str, text: bytes) -> None:
        """A plain copy of each timeline history file (timeline numbers and positions only),
        readable without the identity when the archive is encrypted."""
        self.timelines_dir.mkdir(mode=0o700, exist_ok=True)
        with AtomicFile(self.timelines_dir / name) as out:
            out.write(text)
            out.commit()

    def timeline_path(self) -> list[tuple[int, int]]:
        """(timeline, where it begins) that recovery to the newest timeline follows."""
        histories: dict[int, Path] = {}
        try:
            for entry in os.scandir(self.timelines_dir):
                if wal.HISTORY.fullmatch(entry.name):
                    histories[int(entry.name[:8], 16)] = Path(entry.path)
        except FileNotFoundError:
            pass
        for name, path in self.received().items():  # not archived yet
            if wal.HISTORY.fullmatch(name):
                histories.setdefault(int(name[:8], 16), path)
        timelines = {wal.parse_segment(n, self.segment_size)[0] for n in [*self.archived(), *self.received()]
                     if not n.endswith(".history")}
        latest = max([*histories, *timelines], default=1)
        history = wal.parse_history(histories[latest].read_text("utf-8", "replace")) if latest in histories else []
        return wal.timeline_path(latest, history)

    def timeline_at(self, lsn: int, path: list[tuple[int, int]] | None = None) -> int:
        path = self.timeline_path() if path is None else path
        return [timeline for timeline, begin in path if begin <= lsn][-1]

    def segments(self, path: list[tuple[int, int]] | None = None) -> dict[int, tuple[str, Path, bool]]:
        """The WAL recovery reads, by segment number: (segment name, file, stored by backupd),
        only on the newest timeline's path. Of several copies of one segment, a complete one
        wins over a partial, and the receiver's live partial over one kept from a broken
        stream."""
        path = self.timeline_path() if path is None else path
        size = self.segment_size
        found: dict[int, tuple[int, tuple[str, Path, bool]]] = {}
        candidates = [(name, p, True) for name, p in self.archived().items()]
        candidates += [(name, p, False) for name, p in self.received().items()]
        for name, file, stored in candidates:
            if name.endswith(".history"):
                continue
            plain = name.removesuffix(".partial")
            timeline, segno = wal.parse_segment(plain, size)
            if timeline != self.timeline_at(segno * size + size - 1, path):
                continue  # a branch recovery does not follow
            rank = 0 if plain == name else (1 if not stored else 2)
            if segno not in found or rank < found[segno][0]:
                found[segno] = (rank, (plain, file, stored))
        return {segno: entry for segno, (_, entry) in found.items()}

    def newest_received_time(self) -> datetime | None:
        """When WAL last reached BACKUP_DIR: the receiver writes (and fsyncs) as it receives."""
        times = []
        for path in [*self.received().values(), *self.archived().values()]:
            try:
                times.append(path.stat().st_mtime)
            except OSError:
                pass
        return datetime.fromtimestamp(max(times), UTC) if times else None

    # Gaps, and the window --------------------------------------------------------------
    def gaps(self) -> list[dict[str, Any]]:
        return self._read_json("gaps.json") or []

    def record_gap(self, reason: str, when: datetime) -> None:
        gaps = [*self.gaps(), {"time": iso(when), "reason": reason}]
        write_json_atomically(self.root / "gaps.json", json.dumps(gaps, indent=2))

    @staticmethod
    def missing_segments(base: Base, numbers: set[int]) -> list[int]:
        """Segment numbers missing between ``base``'s start and the newest of ``numbers``."""
        newest = max(numbers, default=base.start_segno)
        return [n for n in range(base.start_segno, newest + 1) if n not in numbers]

    def usable_bases(self) -> list[Base]:
        """The base backups that recover to the newest WAL, newest first: no gap after one
        began, no segment missing, and it lies on the newest timeline's path (not on a branch
        a restore abandoned). The folders and the histories are read once for all of them."""
        gaps = [parse_iso(g["time"]) for g in self.gaps()]
        path = self.timeline_path()
        numbers = set(self.segments(path))
        return [b for b in self.bases()
                if not any(gap >= b.start_time for gap in gaps)  # type: ignore[operator]
                and self.timeline_at(wal.parse_lsn(b.manifest["start_lsn"]), path) == b.manifest["timeline"]
                and not self.missing_segments(b, numbers)]

    def window(self) -> Window | None:
        """The moments a restore can reach now: from the end of the oldest usable base backup
        to the newest WAL received. None when there is no such base backup."""
        end = self.newest_received_time()
        usable = self.usable_bases()
        if not usable or end is None:
            return None
        oldest = usable[-1]
        return Window(oldest.stop_time, max(end, oldest.stop_time), oldest)

    # The drill ------------------------------------------------------------------------
    def last_drill(self) -> dict[str, Any] | None:
        return self._read_json("verify.json")

    def record_drill(self, result: dict[str, Any]) -> None:
        drills = self._read_json("verify.json") or {}
        drills = {**result, "last_success": result["time"] if result["ok"] else drills.get("last_success")}
        write_json_atomically(self.root / "verify.json", json.dumps(drills, indent=2))

    def _read_json(self, name: str) -> Any:
        try:
            return json.loads((self.root / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def remove_files(paths: list[Path]) -> None:
    folders = {p.parent for p in paths}
    for path in paths:
        path.unlink(missing_ok=True)
    for folder in folders:
        fsync_dir(folder)


# Failures of the PITR jobs (the receiver, base backups, the drill), kept beside the clusters'
# folders: they happen before a cluster is known too (the server is down). Kept in memory
# as well, so a full disk still shows in /healthz.
_FAILURES_IN_MEMORY: dict[tuple[str, str], dict[str, Any]] = {}


def _failure_file(backup_dir: Path, job: str) -> Path:
    return Path(backup_dir) / PITR / f".last-failure-{job}.json"


def record_failure(backup_dir: Path, job: str, error: str, when: datetime) -> None:
    record = {"job": job, "time": iso(when), "error": error}
    try:
        _failure_file(backup_dir, job).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json_atomically(_failure_file(backup_dir, job), json.dumps(record))
    except OSError:
        _FAILURES_IN_MEMORY[(str(backup_dir), job)] = record  # shown until it can be written
        return
    _FAILURES_IN_MEMORY.pop((str(backup_dir), job), None)


def clear_failure(backup_dir: Path, job: str) -> None:
    _FAILURES_IN_MEMORY.pop((str(backup_dir), job), None)
    try:
        _failure_file(backup_dir, job).unlink(missing_ok=True)
    except OSError:
        pass


def failures(backup_dir: Path) -> dict[str, dict[str, Any]]:
    """The recorded failures by job; a file (another process's record, or its success that
    removed it) is newer than a record this process could not write."""
    found = {job: record for (root, job), record in _FAILURES_IN_MEMORY.items() if root == str(backup_dir)}
    for job in ("base", "verify", "receiver"):
        try:
            found[job] = json.loads(_failure_file(backup_dir, job).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    return found
