"""The documents point-in-time recovery writes and reads back, one typed model each (see
backupd.documents): a base backup's manifest, what the cluster is, the gaps, the drill's
result, a job's last failure, and each archived WAL file's record. A document that does
not validate is ``Invalid``: listed, warned about once, never followed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints, model_validator

from backupd.documents import Document, FileName, InvalidDocument, M, decode, parse
from backupd.logging import get_logger
from backupd.repository import iso

log = get_logger("pitr")


def _utc(when: datetime) -> datetime:
    """Every stored time as UTC: one outside what a datetime holds in UTC (year 1 east of
    Greenwich, 9999-12-31 west of it) is invalid here, not an OverflowError later."""
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


def _segment_size(size: int) -> int:
    if size & (size - 1) or not 1 << 20 <= size <= 1 << 30:
        raise ValueError("a WAL segment size is a power of two from 1 MB to 1 GB")
    return size


Moment = Annotated[AwareDatetime, AfterValidator(_utc)]
Lsn = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
SegmentSize = Annotated[int, AfterValidator(_segment_size)]
Count = Annotated[int, Field(ge=0, le=1 << 62)]
Timeline = Annotated[int, Field(ge=1, le=0xFFFFFFFF)]
Major = Annotated[int, Field(ge=9, le=99)]
BASE_ID = r"^base-\d{8}T\d{6}Z$"
WAL_NAME = r"^(?:[0-9A-F]{24}(?:\.partial)?|[0-9A-F]{8}\.history)$"


class BaseManifest(Document):
    """``base/<id>.json``. Its files are named after its id: a manifest names only its own."""

    id: Annotated[str, StringConstraints(pattern=BASE_ID)]
    file: FileName
    system_identifier: Annotated[str, StringConstraints(pattern=r"^\d{1,20}$")]
    server_major: Major
    wal_segment_size: SegmentSize
    timeline: Timeline
    start_lsn: Lsn
    stop_lsn: Lsn
    start_time: Moment
    stop_time: Moment  # backupd's clock when it ended, to the second (cut down)
    consistent_time: Moment | None = None  # exact: see Base.consistent_at
    size: Count
    sha256: Sha256
    server_manifest: FileName | None = None
    reason: str = ""  # what took it: the schedule, a gap, a person
    duration_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    # An incremental base backup: the id of the base backup it was taken against (its
    # parent, full or incremental). None (and in every older manifest): a full one.
    parent: Annotated[str, StringConstraints(pattern=BASE_ID)] | None = None

    @model_validator(mode="after")
    def _own_files(self) -> BaseManifest:
        for name in (self.file, self.server_manifest):
            if name is not None and not name.startswith(f"{self.id}."):
                raise ValueError(f"{name!r} is not a file of base backup {self.id}")
        if self.parent is not None and self.parent >= self.id:  # ids are times: a parent is older
            raise ValueError(f"parent: {self.parent!r} is not older than base backup {self.id}")
        return self


class ClusterDoc(Document):
    """``cluster.json``."""

    system_identifier: str
    wal_segment_size: SegmentSize
    server_major: Major


class Gap(Document):
    """One entry of ``gaps.json`` (a list)."""

    time: Moment
    reason: str


class VerifyRecord(Document):
    """``verify.json``: the last drill, and when one last succeeded."""

    time: Moment
    ok: bool | None
    reason: str | None = None
    last_success: Moment | None = None
    # What the drill measured (absent in a record of an older backupd): how long it took,
    # and its rates, from which a restore's duration is estimated (pitr/estimate.py).
    seconds: Annotated[float, Field(ge=0)] | None = None
    base_bytes_per_second: Annotated[float, Field(gt=0)] | None = None  # base backup stored bytes restored
    wal_bytes_per_second: Annotated[float, Field(ge=0)] | None = None  # WAL positions replayed


class FailureRecord(Document):
    """``.last-failure-<job>.json``."""

    job: str
    time: Moment
    error: str


class WalProof(Document):
    """What a WAL file proves (where its WAL ends, the time of its last commit or abort),
    and when backupd looked."""

    name: Annotated[str, StringConstraints(pattern=WAL_NAME)]
    end_lsn: Lsn | None = None  # None for a timeline history file
    last_commit: Moment | None = None  # None: no transaction ended in it
    recorded: Moment  # backupd's clock when it was archived (or its record computed)


class LiveProof(WalProof):
    """``received.json``: the proof of the segment the receiver is still writing, and the
    last time the receiver saw the server at a position it had already received (nothing
    happened between the last commit and then)."""

    caught_up: Moment | None = None


class WalRecord(WalProof):
    """``wal/<name>.json``, written when the file is archived: what its WAL proves and what
    was stored (size, sha256), so neither a file's time nor a copy made by hand can move
    the recovery window."""

    size: Count
    sha256: Sha256


class ReplicatedFile(Document):
    """One file's entry in ``.replicated.json`` (per target, by its path there)."""

    sha256: Sha256
    size: Count
    mtime: float
    record: dict[str, Any]


class ReplicatedTargets(Document):
    """``.replicated.json``: per target URL, each file sent there by its path there."""

    targets: dict[str, dict[str, ReplicatedFile]]


@dataclass(frozen=True)
class Invalid:
    """A stored document that did not validate: where (relative to the cluster's folder)
    and why, never its content."""

    file: str
    reason: str

    def describe(self) -> dict[str, str]:
        return {"file": self.file, "reason": self.reason}


_WARNED: set[tuple[str, str]] = set()


def warn_invalid(found: Invalid) -> None:
    """Once per file and reason per process: the status page reads these every few seconds."""
    if (key := (found.file, found.reason)) not in _WARNED:
        _WARNED.add(key)
        log.warning("a stored PITR document is invalid: it is ignored, never followed", file=found.file,
                    reason=found.reason)


def read_list(model: type[M], path: Path) -> list[M]:
    """A document that is a JSON list of ``model`` (``gaps.json``). OSError when unreadable."""
    items = decode(path.read_bytes())
    if not isinstance(items, list):
        raise InvalidDocument("the document: a list is expected")
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(parse(model, item))
        except InvalidDocument as err:
            raise InvalidDocument(f"{index}.{err}") from None
    return parsed


def to_json(doc: Document) -> dict[str, Any]:
    """A document as it is shown (``pitr status --json``, /status): times as backupd writes them."""
    return {key: iso(value) if isinstance(value, datetime) else value
            for key, value in doc.model_dump(mode="python").items()}
