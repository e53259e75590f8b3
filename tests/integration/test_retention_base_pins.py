"""A base backup is pinned like a dump (``backupd pin base-…``): ``prune --dry-run`` lists
every base backup with its reasons, and ``prune`` keeps the pinned one and the WAL it needs,
while a base backup between them, kept by no rule, goes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

SYSID = "7400000000000000042"
SIZE = 16 * 1024 * 1024
PITR = {"PITR_ENABLED": "true", "PITR_RETENTION_DAYS": "14", "BACKUP_MIN_KEEP": "1"}


def segment(segno: int) -> str:
    return f"00000001{segno // 256:08X}{segno % 256:08X}"


def make_base(store: Path, ended: datetime, segno: int) -> str:
    base_id = f"base-{ended - timedelta(minutes=5):%Y%m%dT%H%M%SZ}"
    (store / "base" / f"{base_id}.tar").write_bytes(b"data")
    (store / "base" / f"{base_id}.json").write_text(json.dumps({
        "kind": "pitr-base", "id": base_id, "file": f"{base_id}.tar", "system_identifier": SYSID,
        "server_major": 17, "wal_segment_size": SIZE, "timeline": 1,
        "start_lsn": f"0/{segno * SIZE + 40:X}", "stop_lsn": f"0/{segno * SIZE + 400:X}",
        "start_time": f"{ended - timedelta(minutes=5):%Y-%m-%dT%H:%M:%SZ}",
        "stop_time": f"{ended:%Y-%m-%dT%H:%M:%SZ}", "size": 4, "sha256": "0" * 64, "server_manifest": None}))
    return base_id


def rows(output: str) -> dict[str, str]:
    return {line.split()[0]: line for line in output.splitlines() if line.startswith("base-")}


def test_a_pinned_base_backup_and_its_wal_outlive_retention(backupd, backup_dir: Path):
    store = backup_dir / "_pitr" / SYSID
    for folder in ("base", "wal"):
        (store / folder).mkdir(parents=True)
    (store / "cluster.json").write_text(json.dumps({"system_identifier": SYSID, "wal_segment_size": SIZE,
                                                    "server_major": 17}))
    now = datetime.now(UTC).replace(microsecond=0)
    oldest, middle, window_start, newest = (make_base(store, now - timedelta(days=days), segno)
                                            for days, segno in ((60, 2), (30, 4), (20, 6), (1, 8)))
    for segno in range(2, 10):
        (store / "wal" / segment(segno)).write_bytes(b"wal!")

    assert f"{oldest} pinned (cluster {SYSID})" in backupd.ok("pin", oldest).stdout
    dry = rows(backupd.ok("prune", "--dry-run", extra_env=PITR).stdout)
    assert "keep" in dry[oldest] and dry[oldest].endswith("pinned")
    assert "would delete" in dry[middle]
    assert dry[window_start].endswith("the recovery window starts from it")
    assert "keep" in dry[newest] and "younger than 14 days (counted from" in dry[newest]

    backupd.ok("prune", extra_env=PITR)
    assert not (store / "base" / f"{middle}.json").exists() and not (store / "base" / f"{middle}.tar").exists()
    assert (store / "base" / f"{oldest}.tar").exists() and (store / "base" / f"{oldest}.pinned").exists()
    assert sorted(p.name for p in (store / "wal").iterdir()) == [segment(n) for n in range(2, 10)]

    backupd.ok("unpin", oldest)
    backupd.ok("prune", extra_env=PITR)
    assert sorted(p.name for p in (store / "base").iterdir() if p.suffix == ".json") == \
        sorted([f"{window_start}.json", f"{newest}.json"])
    assert not (store / "base" / f"{oldest}.pinned").exists()
    assert sorted(p.name for p in (store / "wal").iterdir()) == [segment(n) for n in range(6, 10)]


def test_pinning_a_base_backup_that_is_not_there_is_refused_clearly(backupd, backup_dir: Path):
    (backup_dir / "_pitr" / SYSID / "base").mkdir(parents=True)
    missing = backupd("pin", "base-20261201T000000Z")
    assert missing.returncode == 2 and "base-20261201T000000Z" in missing.stderr and "Traceback" not in missing.stderr
    other = backupd("pin", "base-20261201T000000Z", "--cluster", "123")
    assert other.returncode == 2 and "no such cluster" in other.stderr
    dump = backupd("pin", "shop-20261201T000000Z", "--cluster", SYSID)
    assert dump.returncode == 2 and "not a base backup id" in dump.stderr
