"""The newest failure of every job, kept until the job's next success: one record for
dumps, roles dumps, volume archives and the PITR jobs (the WAL stream, base backups, the
drill), so ``/healthz``, the metrics, the status page and the CLI see failures of CLI runs
and of runs before a restart.

Where each is kept (the layout older backupd wrote, read as it is):

    BACKUP_DIR/.last-failure.json                       a whole run (the server was unreachable)
    BACKUP_DIR/<database>/.last-failure.json            one database's dump (_globals: the roles)
    BACKUP_DIR/_volumes/<volume>/.last-failure.json     one volume's archive
    BACKUP_DIR/_pitr/<cluster>/.last-failure-<job>.json a PITR job on one cluster
    BACKUP_DIR/_pitr/.last-failure-<job>.json           a PITR job before it knew its cluster

When a record cannot be written (the disk is full, the folder read-only: often the very
cause), this process keeps it in memory, so a daemon still reports it. Of a record in
memory and one on disk for the same job, the newer wins (another process may have failed
later; this one may have failed after the file was written). One lock orders every
record and clear of this process, and guards what it holds in memory: the receiver's
thread and a base backup's never interleave a write and a clear. Each file is replaced
atomically, so other processes read a whole record or none.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupd.documents import InvalidDocument, read
from backupd.logging import get_logger
from backupd.manifests import FailureRecord, read_as
from backupd.pitr.records import FailureRecord as PitrFailureRecord
from backupd.pitr.records import Invalid, warn_invalid
from backupd.repository import PITR, VOLUMES, Repository, iso, utc_now
from backupd.stream import write_json_atomically

log = get_logger("backupd.failures")

PITR_JOBS = ("base", "verify", "receiver")
REPOSITORY_FILE = ".last-failure.json"


@dataclass(frozen=True)
class Job:
    """What failed. ``kind``: database, globals or volume (``name`` the database or volume;
    None: a whole run), or a PITR job (``cluster`` its system identifier; None: it failed
    before it could ask the server)."""

    kind: str
    name: str | None = None
    cluster: str | None = None

    @property
    def pitr(self) -> bool:
        return self.kind in PITR_JOBS

    def path(self, backup_dir: Path) -> Path:
        if self.pitr:
            folder = Path(backup_dir) / PITR
            return (folder / self.cluster if self.cluster else folder) / f".last-failure-{self.kind}.json"
        if self.name is None:
            return Path(backup_dir) / REPOSITORY_FILE
        return Repository(backup_dir).folder_for(self.name, self.kind) / REPOSITORY_FILE


@dataclass(frozen=True)
class Failure:
    job: Job
    time: datetime | None  # None: its record is invalid, and when it failed is not known
    error: str

    def shown(self) -> dict[str, Any]:
        """As the readers (health, status, metrics) take it, in the layout's own fields."""
        if self.job.pitr:
            return {"job": self.job.kind, "time": iso(self.time), "error": self.error, "cluster": self.job.cluster}
        return {"database": self.job.name, "kind": self.job.kind, "time": iso(self.time), "error": self.error}

    def newer_than(self, other: Failure) -> bool:
        never = datetime.min.replace(tzinfo=UTC)
        return (self.time or never) > (other.time or never)


_UNWRITTEN: dict[tuple[str, Job], Failure] = {}
_LOCK = threading.RLock()


def database(name: str | None, kind: str = "database") -> Job:
    return Job(kind, name)


def pitr(job: str, cluster: str | None) -> Job:
    return Job(job, cluster=cluster)


def record(backup_dir: Path, job: Job, error: str, when: datetime | None = None) -> None:
    failure = Failure(job, (when or utc_now()).astimezone(UTC).replace(microsecond=0), error)
    path = job.path(backup_dir)
    with _LOCK:
        try:
            if job.pitr:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            else:
                Repository(backup_dir).ensure_folder(path.parent)
            write_json_atomically(path, json.dumps(failure.shown(), sort_keys=True) + "\n")
        except OSError as err:
            log.warning("could not write the failure into the repository; it is kept in memory",
                        file=str(path), error=err.strerror or str(err))
            _UNWRITTEN[(str(backup_dir), job)] = failure
            return
        _UNWRITTEN.pop((str(backup_dir), job), None)


def clear(backup_dir: Path, job: Job) -> None:
    """A success of ``job``: its failure is over. A PITR job's success on a cluster also
    ends one recorded before any cluster was known (the server answered this time)."""
    jobs = {job, Job(job.kind)} if job.pitr else {job}
    with _LOCK:
        for each in jobs:
            _UNWRITTEN.pop((str(backup_dir), each), None)
            try:
                each.path(backup_dir).unlink(missing_ok=True)
            except OSError as err:
                log.warning("could not clear a recorded failure", file=str(each.path(backup_dir)),
                            error=err.strerror or str(err))


def of_repository(backup_dir: Path) -> list[Failure]:
    """Every failure of dumps, roles dumps, volumes and whole runs (``job.name`` None: a
    whole run)."""
    root = Path(backup_dir)
    paths = [root / REPOSITORY_FILE, *root.glob(f"*/{REPOSITORY_FILE}"), *root.glob(f"{VOLUMES}/*/{REPOSITORY_FILE}")]
    on_disk = [found for path in paths if (found := _read_repository(path)) is not None] if root.is_dir() else []
    return _with_unwritten(root, on_disk, lambda job: not job.pitr)


def of_cluster(backup_dir: Path, cluster: str | None) -> dict[str, Failure]:
    """The PITR failures by job: ``cluster``'s own, and those of no cluster (a job that
    failed before it could ask the server); never another cluster's. Of two for one job,
    the newer. ``cluster`` None: those of no cluster only."""
    found: dict[str, Failure] = {}
    for owner in dict.fromkeys([None, cluster]):
        for failure in _own(Path(backup_dir), owner):
            if failure.job.kind not in found or not found[failure.job.kind].newer_than(failure):
                found[failure.job.kind] = failure
    return found


def shown(by_job: dict[str, Failure]) -> dict[str, dict[str, Any]]:
    """Failures by job as ``pitr status`` and /status show them."""
    return {kind: failure.shown() for kind, failure in by_job.items()}


def own(backup_dir: Path, cluster: str | None) -> dict[str, Failure]:
    """The PITR failures recorded as ``cluster``'s (None: as no cluster's) alone, by job."""
    return {failure.job.kind: failure for failure in _own(Path(backup_dir), cluster)}


def _own(backup_dir: Path, cluster: str | None) -> list[Failure]:
    on_disk = [found for kind in PITR_JOBS if (found := _read_pitr(backup_dir, pitr(kind, cluster))) is not None]
    return _with_unwritten(backup_dir, on_disk, lambda job: job.pitr and job.cluster == cluster)


def _with_unwritten(backup_dir: Path, on_disk: list[Failure], mine: Any) -> list[Failure]:
    """``on_disk`` with what this process could not write (of ``mine`` jobs), the newer of
    two for one job."""
    chosen = {failure.job: failure for failure in on_disk}
    with _LOCK:
        unwritten = [f for (root, job), f in _UNWRITTEN.items() if root == str(backup_dir) and mine(job)]
    for failure in unwritten:
        if failure.job not in chosen or failure.newer_than(chosen[failure.job]):
            chosen[failure.job] = failure
    return list(chosen.values())


def _read_repository(path: Path) -> Failure | None:
    try:
        doc = read_as(FailureRecord, path)
    except OSError:
        return None
    except InvalidDocument as err:
        log.warning("ignoring an invalid failure record", file=str(path), error=str(err))
        return None
    return Failure(Job(doc.kind, doc.database), doc.time, doc.error)


def _read_pitr(backup_dir: Path, job: Job) -> Failure | None:
    path = job.path(backup_dir)
    try:
        doc = read(PitrFailureRecord, path)
    except OSError:
        return None
    except InvalidDocument as err:  # still a failure of that job, of which little is known
        warn_invalid(Invalid(path.name, str(err)))
        return Failure(job, None, f"its record {path.name} is invalid ({err})")
    return Failure(job, doc.time, doc.error)
