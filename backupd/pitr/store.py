"""One cluster's point-in-time recovery files: base backups, the archived WAL, the folder
the receiver writes into, the gaps in the stream, and the recovery window they give."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from backupd.documents import Document, InvalidDocument, decode_object, parse, read
from backupd.pitr import wal
from backupd.pitr.doccache import cached, listing
from backupd.pitr.records import (
    BaseManifest,
    ClusterDoc,
    Gap,
    Invalid,
    LiveProof,
    VerifyRecord,
    WalProof,
    WalRecord,
    read_list,
    to_json,
    warn_invalid,
)
from backupd.pitr.walfiles import ARCHIVED, WalFiles
from backupd.pitr.walfiles import RECORD_SUFFIX as RECORD_SUFFIX
from backupd.repository import PITR, iso
from backupd.stream import AtomicFile, fsync_dir, write_json_atomically

BASE_ID = re.compile(r"base-\d{8}T\d{6}Z")
_BASE_MANIFEST = re.compile(r"base-\d{8}T\d{6}Z\.json")
PIN_SUFFIX = ".pinned"  # base/<id>.pinned: kept whatever retention says
LIVE = "received.json"


@dataclass
class Base:
    """A base backup, by its manifest: validated when made (InvalidDocument), so every path
    it gives is inside its folder and names one of its own files."""

    doc: BaseManifest
    folder: Path

    @classmethod
    def load(cls, path: Path) -> Base:
        """The base backup whose manifest is ``path``; OSError, or InvalidDocument."""
        base = cls(parse(BaseManifest, decode_object(path.read_bytes())), path.parent)
        if f"{base.id}.json" != path.name:
            raise InvalidDocument(f"id: {base.id!r} is not this manifest's own name")
        return base

    @property
    def id(self) -> str:
        return self.doc.id

    @property
    def path(self) -> Path:
        return self.folder / self.doc.file

    @property
    def manifest_path(self) -> Path:
        return self.folder / f"{self.id}.json"

    @property
    def server_manifest_path(self) -> Path:
        return self.folder / f"{self.id}.backup_manifest"

    @property
    def start_time(self) -> datetime:
        return self.doc.start_time

    @property
    def stop_time(self) -> datetime:
        return self.doc.stop_time

    @property
    def order(self) -> tuple[datetime, str]:
        """What sorts base backups by age: the start time, then the id (later in the same
        second: an older backupd could give two base backups one start time)."""
        return self.doc.start_time, self.doc.id

    @property
    def consistent_at(self) -> datetime:
        """The first moment a recovery from it may stop at: the newest commit in its own WAL
        (recorded when it was taken). A manifest of an older backupd has only ``stop_time``,
        cut down to the second: the next second is after its end."""
        if self.doc.consistent_time is not None:
            return self.doc.consistent_time
        return _later(self.doc.stop_time, timedelta(seconds=1))

    @property
    def first_target(self) -> datetime:
        """``consistent_at`` rounded up to the second: the first moment shown as restorable
        (times are shown to the second, so a rounded-down one would not be)."""
        exact = self.consistent_at
        return exact if exact.microsecond == 0 else _later(exact.replace(microsecond=0), timedelta(seconds=1))

    @property
    def start_segno(self) -> int:
        return wal.segment_of(wal.parse_lsn(self.doc.start_lsn), self.doc.wal_segment_size)

    @property
    def sha256(self) -> str:
        """What its file's sha256 must be (the drill and restore check it in full)."""
        return self.doc.sha256

    def intact_by_size(self) -> bool:
        """Whether its file has the size its manifest records: a stat, free. False when the
        file cannot be read."""
        try:
            return self.path.stat().st_size == self.doc.size
        except OSError:
            return False

    def summary(self) -> dict[str, Any]:
        doc = self.doc
        return {"id": doc.id, "start_time": iso(doc.start_time), "stop_time": iso(doc.stop_time),
                "consistent_time": iso(self.first_target),
                "start_lsn": doc.start_lsn, "stop_lsn": doc.stop_lsn, "timeline": doc.timeline, "size": doc.size,
                "sha256": doc.sha256, "damaged": not self.intact_by_size()}


@dataclass
class Window:
    start: datetime
    end: datetime
    base: Base  # the oldest base backup the window starts from


class Store(WalFiles):
    def __init__(self, backup_dir: Path, system_identifier: str):
        self.system_identifier = system_identifier
        self.root = Path(backup_dir) / PITR / system_identifier
        self.base_dir = self.root / "base"
        self.wal_dir = self.root / "wal"
        self.spool = self.root / ".receiving"
        self.timelines_dir = self.root / "timelines"

    @classmethod
    def all(cls, backup_dir: Path) -> list[Store]:
        """Every cluster with PITR files, by system identifier. Never ranked by what changed
        last: which cluster a decision is about is for ``clusters`` to say."""
        try:
            names = [e.name for e in os.scandir(Path(backup_dir) / PITR) if e.is_dir() and e.name.isdigit()]
        except FileNotFoundError:
            return []
        return [cls(backup_dir, name) for name in sorted(names)]

    def ensure(self) -> None:
        for folder in (self.root.parent.parent, self.root.parent, self.root, self.base_dir, self.wal_dir, self.spool):
            folder.mkdir(mode=0o700, exist_ok=True)

    # Stored documents -------------------------------------------------------------------
    def _load(self, model: type[D], path: Path) -> D | None:
        """The document at ``path``; None when it is absent, unreadable or invalid (warned
        about once, listed by ``invalid``)."""
        return cast("D | None", self._try(path, partial(read, model, path)))

    def invalid(self) -> list[Invalid]:
        """Every stored document of this cluster that does not validate."""
        found = []
        for path, check in self._documents():
            try:
                cached(path, check)
            except OSError:
                continue
            except InvalidDocument as err:
                found.append(Invalid(self._relative(path), str(err)))
        for item in found:
            warn_invalid(item)
        return found

    def _documents(self) -> list[tuple[Path, Any]]:
        docs: list[tuple[Path, Any]] = [
            (self.root / "cluster.json", partial(read, ClusterDoc, self.root / "cluster.json")),
            (self.root / "gaps.json", partial(read_list, Gap, self.root / "gaps.json")),
            (self.root / "verify.json", partial(read, VerifyRecord, self.root / "verify.json")),
            (self.root / LIVE, partial(read, LiveProof, self.root / LIVE))]
        docs += [(p, partial(self._load_base, p)) for p in listing(self.base_dir) if _BASE_MANIFEST.fullmatch(p.name)]
        docs += [(p, partial(self._load_record, p)) for p in self.record_paths()]
        return docs

    # What the cluster is -----------------------------------------------------------
    @property
    def cluster(self) -> ClusterDoc | None:
        return self._load(ClusterDoc, self.root / "cluster.json")

    def remember_cluster(self, segment_size: int, major: int) -> None:
        known = {"system_identifier": self.system_identifier, "wal_segment_size": segment_size, "server_major": major}
        current = self.cluster
        if current is None or current.model_dump() != known:
            self._keep_invalid_aside("cluster.json")
            write_json_atomically(self.root / "cluster.json", json.dumps(known, indent=2))

    def _keep_invalid_aside(self, name: str) -> None:
        """Before backupd writes ``name`` afresh: an invalid one is renamed, never lost
        (``<name>.invalid-<time>``), so what it held can still be looked at."""
        if (self.root / name).exists() and any(item.file == name for item in self.invalid()):
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            os.replace(self.root / name, self.root / f"{name}.invalid-{stamp}")

    @property
    def segment_size(self) -> int:
        return self.cluster.wal_segment_size if self.cluster else 16 * 1024 * 1024

    # Base backups ------------------------------------------------------------------
    def _load_base(self, path: Path) -> Base:
        base = Base.load(path)
        if base.doc.system_identifier != self.system_identifier:
            raise InvalidDocument(f"system_identifier: {base.doc.system_identifier} is another cluster's")
        return base

    def bases(self) -> list[Base]:
        """Complete base backups (a valid manifest and its file), newest first; a damaged
        one too (``intact_by_size``), so that it is shown."""
        found = []
        for path in listing(self.base_dir):
            if not _BASE_MANIFEST.fullmatch(path.name):
                continue
            if (base := self._try(path, partial(self._load_base, path))) is not None and base.path.exists():
                found.append(base)
        return sorted(found, key=lambda b: b.order, reverse=True)

    def base(self, base_id: str) -> Base | None:
        """The complete base backup ``base_id`` (``BASE_ID``), if this cluster holds it."""
        path = self.base_dir / f"{base_id}.json"
        if not BASE_ID.fullmatch(base_id) or not path.is_file():
            return None
        base: Base | None = self._try(path, partial(self._load_base, path))
        return base if base is not None and base.path.exists() else None

    def pin_path(self, base_id: str) -> Path:
        return self.base_dir / f"{base_id}{PIN_SUFFIX}"

    def pinned(self) -> set[str]:
        """The ids of the pinned base backups (a pin of one that is gone pins nothing)."""
        return {p.name.removesuffix(PIN_SUFFIX) for p in listing(self.base_dir)
                if p.name.endswith(PIN_SUFFIX) and BASE_ID.fullmatch(p.name.removesuffix(PIN_SUFFIX))}

    def pin(self, base_id: str, pinned: bool) -> None:
        """An empty file beside the base backup's manifest, which is written once."""
        if pinned:
            self.pin_path(base_id).touch(mode=0o600)
        else:
            self.pin_path(base_id).unlink(missing_ok=True)
        fsync_dir(self.base_dir)

    def live(self) -> LiveProof | None:
        """What the segment the receiver is writing proves, when that segment is still there."""
        proof = self._load(LiveProof, self.root / LIVE)
        return proof if proof is not None and (self.spool / proof.name).exists() else None

    def remember_live(self, proof: LiveProof) -> None:
        write_json_atomically(self.root / LIVE, proof.model_dump_json(indent=2))

    def remember_record(self, record: WalRecord) -> None:
        write_json_atomically(self.wal_dir / (record.name + RECORD_SUFFIX), record.model_dump_json(indent=2))

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
        stream. An archived file whose size is not its record's is damaged: not there."""
        path = self.timeline_path() if path is None else path
        size = self.segment_size
        damaged = set(self.damaged_wal())
        found: dict[int, tuple[int, tuple[str, Path, bool]]] = {}
        candidates = [(name, p, True) for name, p in self.archived().items() if name not in damaged]
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
        """The time of the newest WAL record in BACKUP_DIR that has one (a commit or an
        abort), from the WAL itself as the records say: never a file's time, which a copy or
        a ``touch`` changes. It stands still while the server writes nothing."""
        proofs: list[WalProof] = [*self.records().values()]
        if (live := self.live()) is not None:
            proofs.append(live)
        return max((p.last_commit for p in proofs if p.last_commit is not None), default=None)

    def proofs(self, segments: dict[int, tuple[str, Path, bool]]) -> dict[int, WalProof]:
        """What each of ``segments`` proves, where it is known: an archived file's record,
        the receiver's live partial's proof (a completed file not archived yet has none)."""
        records, live = self.records(), self.live()
        found: dict[int, WalProof] = {}
        for segno, (_, file, stored) in segments.items():
            archived = ARCHIVED.fullmatch(file.name) if stored else None
            own = archived.group("name") if archived else file.name
            proof = records.get(own) if stored else (live if live is not None and live.name == own else None)
            if proof is not None:
                found[segno] = proof
        return found

    def _proven_end(self, segments: dict[int, tuple[str, Path, bool]], since: int) -> datetime | None:
        """The newest commit the WAL recovery reads proves, from ``since`` (a segment
        number) on: by the records, and what the receiver's live segment proves."""
        live = self.live()
        times = [p.last_commit for segno, p in self.proofs(segments).items()
                 if segno >= since and p.last_commit is not None]
        if live is not None and live.caught_up is not None and any(
                not stored and file.name == live.name for _, file, stored in segments.values()):
            times.append(live.caught_up)
        return max(times, default=None)

    # Gaps, and the window --------------------------------------------------------------
    def gaps(self) -> list[Gap]:
        return self._load_list(Gap, self.root / "gaps.json")

    def _load_list(self, model: type[Gap], path: Path) -> list[Gap]:
        try:
            return cast(list[Gap], cached(path, partial(read_list, model, path)))
        except OSError:
            return []
        except InvalidDocument as err:
            warn_invalid(Invalid(self._relative(path), str(err)))
            return []

    def record_gap(self, reason: str, when: datetime) -> None:
        gaps = [to_json(gap) for gap in self.gaps()]
        self._keep_invalid_aside("gaps.json")
        write_json_atomically(self.root / "gaps.json",
                              json.dumps([*gaps, {"time": iso(when), "reason": reason}], indent=2))

    @staticmethod
    def missing_segments(base: Base, numbers: set[int]) -> list[int]:
        """Segment numbers missing between ``base``'s start and the newest of ``numbers``."""
        newest = max(numbers, default=base.start_segno)
        return [n for n in range(base.start_segno, newest + 1) if n not in numbers]

    def usable_bases(self, segments: dict[int, tuple[str, Path, bool]] | None = None,
                     path: list[tuple[int, int]] | None = None) -> list[Base]:
        """The base backups that recover to the newest WAL, newest first: intact by size, no
        gap after one began, no segment missing, and it lies on the newest timeline's path
        (not on a branch a restore abandoned). The folders and histories are read once."""
        gaps = [g.time for g in self.gaps()]
        path = self.timeline_path() if path is None else path
        numbers = set(self.segments(path) if segments is None else segments)
        from backupd.pitr.chains import complete  # an incremental restores through its whole chain
        bases = self.bases()
        return [b for b in bases
                if b.intact_by_size() and complete(b, bases)
                and not any(gap >= b.start_time for gap in gaps)
                and self.timeline_at(wal.parse_lsn(b.doc.start_lsn), path) == b.doc.timeline
                and not self.missing_segments(b, numbers)]

    def window(self) -> Window | None:
        """The moments a restore can reach now: from where the oldest usable base backup is
        consistent (``first_target``) to the newest commit the WAL proves (or the newest
        usable base backup's). None when there is no such base backup."""
        path = self.timeline_path()
        segments = self.segments(path)
        usable = self.usable_bases(segments, path)
        if not usable:
            return None
        oldest = usable[-1]
        newest_base = usable[0].first_target
        proven = self._proven_end(segments, oldest.start_segno)
        return Window(oldest.first_target, max(proven, newest_base) if proven else newest_base, oldest)

    # The drill ------------------------------------------------------------------------
    def last_drill(self) -> VerifyRecord | None:
        """The last drill's record; None when there is none (or it is invalid: that is
        listed by ``pitr status``)."""
        return self._load(VerifyRecord, self.root / "verify.json")

    def record_verify(self, result: dict[str, Any]) -> None:
        previous = self.last_drill()
        earlier = iso(previous.last_success) if previous and previous.last_success else None
        drills = {**result, "last_success": result["time"] if result["ok"] else earlier}
        self._keep_invalid_aside("verify.json")
        write_json_atomically(self.root / "verify.json", json.dumps(drills, indent=2))


D = TypeVar("D", bound=Document)


def _later(when: datetime, by: timedelta) -> datetime:
    """``when + by``, or the calendar's last moment (a stored time at its very end)."""
    try:
        return when + by
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def remove_files(paths: list[Path]) -> None:
    folders = {p.parent for p in paths}
    for path in paths:
        path.unlink(missing_ok=True)
    for folder in folders:
        fsync_dir(folder)
