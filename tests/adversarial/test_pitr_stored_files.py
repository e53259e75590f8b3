"""Point-in-time recovery's stored files against bad, damaged and hand-copied ones, on a real
cluster: a base manifest never points outside its folder (class 1), a bad document is an
error for that one item (class 4), a base file of the wrong size is damaged at once (class
3), and the recovery window ends where the WAL proves, never where a file's time says
(class 5)."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.daemon_helpers import RunningDaemon
from tests.pitr.helpers import commit, make_shop, pitr_view, wait_for_window

from tests.pitr.conftest import data_home, pitr_backupd, pitr_cluster, pitr_env  # noqa: F401 (shared fixtures)

ENDPOINTS = ("/healthz", "/status", "/metrics", "/")


def cluster_root(backup_dir: Path) -> Path:
    (root,) = (backup_dir / "_pitr").iterdir()
    return root


def status_json(backupd) -> dict:
    result = backupd("pitr", "status", "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def planted_manifest(root: Path, stamp: str, **fields) -> Path:
    """A base manifest as a careless hand (or an adversary) leaves one."""
    real = json.loads(next((root / "base").glob("base-*.json")).read_text())
    backup_id = f"base-{stamp}"
    day = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T00:00:00Z"
    manifest = {**real, "id": backup_id, "start_time": day, "stop_time": day, **fields}
    path = root / "base" / f"{backup_id}.json"
    path.write_text(json.dumps(manifest))
    return path


@pytest.fixture
def pitr_repo(pitr_cluster, pitr_env, pitr_backupd, backup_dir):
    """A cluster with one real base backup, taken by the CLI (no daemon)."""
    make_shop(pitr_cluster)
    pitr_backupd.ok("pitr", "base")
    return cluster_root(backup_dir)


def test_a_base_manifest_pointing_outside_its_folder_is_invalid_and_never_followed(pitr_repo, pitr_backupd,
                                                                                   tmp_path):
    outside = [tmp_path / "etc-passwd-of-someone", tmp_path / "notes.txt", tmp_path / "kept"]
    for path in outside:
        path.write_text("not backupd's")
    # Old enough for retention, and two of them beyond the one it keeps before the window.
    planted_manifest(pitr_repo, "20200103T000000Z", file=str(outside[2]))
    planted_manifest(pitr_repo, "20200102T000000Z", file=str(outside[0]))  # absolute
    planted_manifest(pitr_repo, "20200101T000000Z", file="../../../../../../../../" + str(outside[1]).lstrip("/"))
    planted_manifest(pitr_repo, "20191231T000000Z", id="../../../../../../../../" + str(outside[1]).lstrip("/"))
    env = {"BACKUP_MIN_KEEP": "1"}
    dry = pitr_backupd("prune", "--dry-run", extra_env=env)
    assert dry.returncode == 0 and "Traceback" not in dry.stderr, dry.stderr
    assert not any(str(p) in dry.stdout for p in outside), dry.stdout
    pruned = pitr_backupd("prune", extra_env=env)
    assert pruned.returncode == 0 and "Traceback" not in pruned.stderr, pruned.stderr
    for path in outside:
        assert path.read_text() == "not backupd's", path
    report = status_json(pitr_backupd)
    invalid = {item["file"] for item in report["invalid"]}
    assert {"base/base-20200103T000000Z.json", "base/base-20200102T000000Z.json",
            "base/base-20200101T000000Z.json", "base/base-20191231T000000Z.json"} <= invalid, report["invalid"]
    assert len(report["base_backups"]) == 1 and not report["base_backups"][0]["damaged"]
    assert "invalid" in pitr_backupd("pitr", "status").stdout


def test_bad_documents_are_one_item_each_and_everything_else_goes_on(pitr_repo, pitr_cluster, pitr_env,
                                                                    pitr_backupd):
    manifest = planted_manifest(pitr_repo, "20200101T000000Z")
    data = json.loads(manifest.read_text())
    del data["start_time"]
    manifest.write_text(json.dumps(data))
    (pitr_repo / "gaps.json").write_text(json.dumps({"time": "2026-01-01T00:00:00Z", "reason": "x"}))
    (pitr_repo / "verify.json").write_text(json.dumps({"time": 5, "ok": "yes", "last_success": [1]}))
    report = status_json(pitr_backupd)
    assert {"base/base-20200101T000000Z.json", "gaps.json", "verify.json"} <= {i["file"] for i in report["invalid"]}
    assert pitr_backupd("prune", "--dry-run").returncode == 0
    daemon = RunningDaemon(pitr_env)
    try:
        daemon.wait_until(lambda: (pitr_view(daemon).get("receiver") or {}).get("streaming"), 60, "the stream")
        for path in ENDPOINTS:
            status, body = daemon.get(path)
            assert status in (200, 503), (path, status, body[:500])
        status, health = daemon.json("/healthz")
        assert any("invalid" in reason for reason in health.get("reasons", []) + health.get("warnings", [])), health
        assert pitr_backupd("health").returncode in (0, 1)
        before = commit(pitr_cluster, 1)
        wait_for_window(daemon, before, timeout=60)
        assert pitr_view(daemon)["receiver"]["restarts"] == 0
    finally:
        assert daemon.stop() == 0, daemon.stderr
    assert "Traceback" not in daemon.stderr


def health_warnings(env: dict[str, str]) -> list[str]:
    """What /healthz warns about PITR (the same function the daemon's /healthz calls)."""
    from backupd.pitr.status import problems
    from backupd.settings import load_settings

    return [message for _, message in problems(load_settings(env), None, datetime.now(UTC))[1]]


def test_a_base_file_one_byte_short_is_damaged_at_once(pitr_repo, pitr_env, pitr_backupd):
    (stored,) = [p for p in (pitr_repo / "base").iterdir() if ".tar" in p.name]
    assert not status_json(pitr_backupd)["base_backups"][0]["damaged"]
    assert not any("damaged" in w for w in health_warnings(pitr_env))
    with open(stored, "r+b") as data:
        data.truncate(stored.stat().st_size - 1)
    base = status_json(pitr_backupd)["base_backups"][0]
    assert base["damaged"] and not base["usable"], base
    assert not any(i["file"].startswith("base/") for i in status_json(pitr_backupd)["invalid"])
    assert "damaged" in pitr_backupd("pitr", "status").stdout
    assert any("damaged" in w for w in health_warnings(pitr_env))


def test_touched_or_copied_segments_never_move_the_window_end(pitr_cluster, pitr_env, pitr_backupd, backup_dir,
                                                              data_home):
    make_shop(pitr_cluster)
    daemon = RunningDaemon(pitr_env)
    try:
        wait_for_window(daemon)
        with pitr_cluster.connect() as conn:
            for _ in range(3):  # segments with commits in the archive
                commit(pitr_cluster, 1)
                conn.execute("SELECT pg_switch_wal()")
        last = commit(pitr_cluster, 2)
        wait_for_window(daemon, last + timedelta(seconds=1))
    finally:
        assert daemon.stop() == 0, daemon.stderr
    root = cluster_root(backup_dir)
    before = status_json(pitr_backupd)
    end = datetime.fromisoformat(before["window"]["end"])
    records = {p.name: json.loads(p.read_text()) for p in (root / "wal").glob("*.json")}
    proven = [datetime.fromisoformat(r["last_commit"]) for r in records.values() if r.get("last_commit")]
    assert len(proven) >= 3 and max(proven) > last - timedelta(seconds=30), records  # the switched segments
    time.sleep(2)
    segments = sorted(p for p in (root / "wal").iterdir() if len(p.name.split(".")[0]) == 24
                      and not p.name.endswith(".json"))
    os.utime(segments[0])  # touch
    copy = data_home / "copy"
    shutil.copyfile(segments[1], copy)  # a plain cp, without -p
    shutil.copyfile(copy, segments[1])
    after = datetime.now(UTC)
    touched = status_json(pitr_backupd)
    assert datetime.fromisoformat(touched["window"]["end"]) == end
    assert touched["newest_received"] == before["newest_received"] and before["newest_received"]  # the metric's
    refused = pitr_backupd("pitr", "restore", "--time", (after - timedelta(seconds=1)).isoformat(),
                           "--to", str(data_home / "restored"))
    assert refused.returncode == 2, refused.stderr
    assert "after the newest WAL" in refused.stderr and "Traceback" not in refused.stderr

    # A repository of an older backupd: no records. File times still never move the end,
    # and the receiver records what each segment proves from its content.
    for record in [*(root / "wal").glob("*.json"), root / "received.json"]:
        record.unlink()
    os.utime(segments[-1])
    legacy = status_json(pitr_backupd)["window"]
    assert legacy and datetime.fromisoformat(legacy["end"]) < after, legacy
    # And a hand copy of an old segment under the name of one the stream has not sent yet.
    newest = int(segments[-1].name[:24], 16) & 0xFFFFFFFF  # timeline 1, below 4 GB of WAL
    future = f"{1:08X}{0:08X}{newest + 2:08X}"
    planted = segments[-1].with_name(future + segments[0].name[24:])
    shutil.copyfile(segments[0], planted)
    daemon = RunningDaemon(pitr_env)
    try:
        daemon.wait_until(lambda: len(list((root / "wal").glob("*.json"))) >= len(records), 60, "the records")
        window = wait_for_window(daemon, last)
        assert datetime.fromisoformat(window["end"]) >= last
        assert not (root / "wal" / f"{future}.json").exists()  # its content is not what its name says
        with pitr_cluster.connect() as conn:
            for _ in range(3):  # the stream reaches that segment: the WAL received replaces the copy
                commit(pitr_cluster, 3)
                conn.execute("SELECT pg_switch_wal()")
        real = daemon.wait_until(lambda: (root / "wal" / f"{future}.json").exists()
                                 and json.loads((root / "wal" / f"{future}.json").read_text()), 60, "the segment")
        assert real["last_commit"] and datetime.fromisoformat(real["last_commit"]) > last, real
        assert planted.stat().st_size == real["size"]
    finally:
        assert daemon.stop() == 0, daemon.stderr
    assert "is not this cluster's segment" in daemon.stderr
    for name, record in records.items():  # read back from the content: what the WAL proves, as before
        again = json.loads((root / "wal" / name).read_text())
        assert (again["last_commit"], again["end_lsn"]) == (record["last_commit"], record["end_lsn"]), name

    # An archived segment of the wrong size is damaged at once: the base before it no longer reaches on.
    with open(segments[-1], "ab") as data:
        data.write(b"\0")
    report = status_json(pitr_backupd)
    assert segments[-1].name.split(".")[0] in report["damaged_wal"], report["damaged_wal"]
    assert "damaged" in pitr_backupd("pitr", "status").stdout
