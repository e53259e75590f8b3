"""One failure record for every job: the files older backupd wrote (a database's
``.last-failure.json``, a PITR job's ``.last-failure-<job>.json``) are read as they are, and
of a record this process could not write and one on disk, the newer wins, whichever it is."""

import errno
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backupd import failures

CLUSTER = "7234567890123456789"
WHEN = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def test_failure_files_written_by_older_backupd_are_read(tmp_path: Path):
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / ".last-failure.json").write_text(json.dumps(
        {"database": "shop", "kind": "database", "time": "2026-12-01T03:00:00Z", "error": "pg_dump exited with 1"}))
    (tmp_path / ".last-failure.json").write_text(json.dumps(
        {"database": None, "time": "2026-12-01T02:00:00Z", "error": "the server is down"}))  # no kind: a database's
    (tmp_path / "_pitr" / CLUSTER).mkdir(parents=True)
    (tmp_path / "_pitr" / CLUSTER / ".last-failure-base.json").write_text(json.dumps(
        {"job": "base", "time": "2026-12-01T04:00:00Z", "error": "pg_basebackup exited with 1"}))
    (tmp_path / "_pitr" / ".last-failure-receiver.json").write_text(json.dumps(
        {"job": "receiver", "time": "2026-12-01T05:00:00Z", "error": "connection refused", "cluster": None}))
    listed = sorted((f.shown() for f in failures.of_repository(tmp_path)), key=lambda f: f["database"] or "")
    assert [(f["database"], f["kind"], f["time"], f["error"]) for f in listed] == [
        (None, "database", "2026-12-01T02:00:00Z", "the server is down"),
        ("shop", "database", "2026-12-01T03:00:00Z", "pg_dump exited with 1")]
    assert failures.shown(failures.of_cluster(tmp_path, CLUSTER)) == {
        "base": {"job": "base", "time": "2026-12-01T04:00:00Z", "error": "pg_basebackup exited with 1",
                 "cluster": CLUSTER},
        "receiver": {"job": "receiver", "time": "2026-12-01T05:00:00Z", "error": "connection refused",
                     "cluster": None}}
    failures.clear(tmp_path, failures.pitr("receiver", CLUSTER))  # the server answered: no cluster's is over too
    failures.clear(tmp_path, failures.database("shop"))
    assert set(failures.of_cluster(tmp_path, CLUSTER)) == {"base"}
    assert [f.job.name for f in failures.of_repository(tmp_path)] == [None]


def test_written_records_keep_the_layout(tmp_path: Path):
    failures.record(tmp_path, failures.database("films", "volume"), "tar failed", WHEN)
    failures.record(tmp_path, failures.pitr("verify", CLUSTER), "the drill failed", WHEN)
    assert json.loads((tmp_path / "_volumes" / "films" / ".last-failure.json").read_text())["kind"] == "volume"
    assert json.loads((tmp_path / "_pitr" / CLUSTER / ".last-failure-verify.json").read_text())["job"] == "verify"


def test_the_newer_of_a_record_in_memory_and_one_on_disk_wins_for_every_job(tmp_path: Path, monkeypatch):
    """Before: the repository let the one in memory hide a newer file; PITR let any file
    hide a newer record in memory. Both kinds now follow one rule."""
    for job in (failures.database("shop"), failures.pitr("base", CLUSTER)):
        failures.record(tmp_path, job, "older, on disk", WHEN)
        with monkeypatch.context() as patched:  # the disk is full now
            patched.setattr(failures, "write_json_atomically", _no_space)
            failures.record(tmp_path, job, "newer, in memory", WHEN + timedelta(hours=1))
        assert _errors(tmp_path, job) == ["newer, in memory"]
        job.path(tmp_path).write_text(job.path(tmp_path).read_text().replace("older, on disk", "newest, on disk")
                                      .replace("03:00:00Z", "05:00:00Z"))  # another process failed later
        assert _errors(tmp_path, job) == ["newest, on disk"]
        failures.clear(tmp_path, job)
        assert _errors(tmp_path, job) == []


def _no_space(path: Path, text: str) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _errors(backup_dir: Path, job: failures.Job) -> list[str]:
    if job.pitr:
        return [f.error for f in failures.of_cluster(backup_dir, job.cluster).values()]
    return [f.error for f in failures.of_repository(backup_dir) if f.job.name == job.name]
