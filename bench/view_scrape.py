"""How much one /metrics scrape reads: a BACKUP_DIR with BACKUPS dumps over four databases
and three PITR clusters, scraped by a daemon that is built but not started (its WAL stream
stands as connected to the first cluster). Counts folder listings (os.scandir, os.listdir)
and files opened, and times the scrape.

    python bench/view_scrape.py [BACKUPS]
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's backupd, whichever is installed
FIXTURE = ROOT / "tests/adversarial/fixtures/main_backup_dir/shop"
DATABASES = ("shop", "crm", "blog", "wiki")
SCRAPES = 5
SYSIDS = ("7400000000000000001", "7400000000000000002", "7400000000000000003")


def make_repository(root: Path, count: int) -> None:
    manifest = json.loads((FIXTURE / "shop-20261204T203810Z.json").read_text())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index in range(count):
        database = DATABASES[index % len(DATABASES)]
        stamp = (start + timedelta(minutes=index)).strftime("%Y%m%dT%H%M%SZ")
        backup_id, folder = f"{database}-{stamp}", root / database
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{backup_id}.dump.zst").write_bytes(b"x" * 788)
        stamp_iso = (start + timedelta(minutes=index)).strftime("%Y-%m-%dT%H:%M:%SZ")
        (folder / f"{backup_id}.json").write_text(json.dumps({
            **manifest, "id": backup_id, "database": database, "file": f"{backup_id}.dump.zst",
            "started": stamp_iso, "finished": stamp_iso}))
    for sysid in SYSIDS:
        store = root / "_pitr" / sysid
        for sub in ("base", "wal"):
            (store / sub).mkdir(parents=True)
        base = "base-20261201T000000Z"
        (store / "base" / f"{base}.tar").write_bytes(b"data")
        (store / "base" / f"{base}.json").write_text(json.dumps({
            "kind": "pitr-base", "id": base, "file": f"{base}.tar", "system_identifier": sysid,
            "server_major": 17, "wal_segment_size": 16777216, "timeline": 1, "start_lsn": "0/2000028",
            "stop_lsn": "0/2000120", "start_time": "2026-12-01T00:00:00Z", "stop_time": "2026-12-01T00:00:05Z",
            "size": 4, "sha256": "0" * 64, "server_manifest": None}))
        (store / "cluster.json").write_text(json.dumps({"system_identifier": sysid, "wal_segment_size": 16777216,
                                                        "server_major": 17}))
        for segno in range(2, 12):
            name = f"0000000100000000{segno:08X}"
            (store / "wal" / name).write_bytes(b"wal!")
            (store / "wal" / f"{name}.json").write_text(json.dumps({
                "name": name, "end_lsn": f"0/{segno + 1:X}000000", "last_commit": "2026-12-01T00:10:00Z",
                "size": 4, "sha256": "0" * 64, "recorded": "2026-12-01T00:10:01Z"}))


def counted(calls: Counter[str]) -> list[tuple[object, str, object]]:
    """Wraps the functions that read BACKUP_DIR; returns what to put back."""
    saved = [(os, "scandir", os.scandir), (os, "listdir", os.listdir), (io, "open", io.open),
             (builtins, "open", builtins.open)]
    for owner, name, original in saved:
        def wrapper(*args, _original=original, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            calls[_name if _name in ("scandir", "listdir") else "open"] += 1
            return _original(*args, **kwargs)
        setattr(owner, name, wrapper)
    return saved


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    root = Path(tempfile.mkdtemp(prefix="backupd-view-bench-"))
    try:
        make_repository(root / "backups", count)
        os.environ.update({"BACKUP_DIR": str(root / "backups"), "PITR_ENABLED": "true", "DB_PORT": "1",
                           "DB_NAME": ",".join(DATABASES)})
        from backupd.daemon import Daemon
        from backupd.settings import load_settings

        daemon = Daemon(load_settings())
        assert daemon.receiver is not None
        daemon.receiver.state = lambda: {"system_identifier": SYSIDS[0], "lag_bytes": 0}  # type: ignore[method-assign]
        daemon.metrics.render()  # the first scrape fills the caches of unchanged documents
        times = []
        for _ in range(SCRAPES):
            if hasattr(daemon.metrics, "repository"):  # before the view: a reading cached for 5 s
                daemon.metrics.repository.invalidate()
            calls: Counter[str] = Counter()
            saved = counted(calls)
            clock = time.perf_counter()
            text = daemon.metrics.render()
            times.append(time.perf_counter() - clock)
            for owner, name, original in saved:
                setattr(owner, name, original)
        assert b"backupd_healthy" in text and b"backupd_pitr_base_last_success" in text, text.decode()
        print(f"{count} backups, {len(SYSIDS)} clusters, one scrape: {calls['scandir']} scandir, "
              f"{calls['listdir']} listdir, {calls['open']} files opened; fastest of {SCRAPES} {min(times) * 1000:.0f} "
              f"ms, median {statistics.median(times) * 1000:.0f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
