"""Class 10: small noise. backupd's own bookkeeping files are never read as manifests,
and two daemons on one repository write one roles dump per scheduled time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, log_lines
from tests.integration.helpers import make_database, table_locked


def test_bookkeeping_files_are_not_read_as_manifests(backupd, backup_dir, cluster):
    make_database(cluster, "noise_db", rows=50)
    backupd.ok("backup", "--database", "noise_db")
    for folder in (backup_dir, backup_dir / "noise_db", backup_dir / "_globals"):
        (folder / ".last-failure.json").write_text(json.dumps({"database": None, "kind": "database",
                                                               "time": "2026-11-21T02:00:00Z", "error": "x"}))
    (backup_dir / "noise_db" / "notes.json").write_text("{}")  # someone's file: not backupd's, not read
    for args in (["list"], ["list", "--json"], ["prune", "--dry-run"], ["verify", "--database", "noise_db"]):
        result = backupd.ok(*args)
        warnings = [line for line in log_lines(result.stderr) if "manifest" in line.get("event", "")]
        assert warnings == [], (args, warnings)


_RUN_AT = """
import json, sys
from datetime import datetime, timezone
from backupd.actions.backup import run_backup
from backupd.settings import load_settings
result = run_backup(load_settings(), scheduled_for=datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc))
print(json.dumps({"globals": result.globals.backup_id, "skipped": result.globals.skipped,
                  "databases": [o.backup_id for o in result.outcomes]}))
"""


def test_two_daemons_on_one_repository_write_one_roles_dump_per_scheduled_time(env, backup_dir, cluster):
    """Both run the same scheduled run at once, as two daemons' cron jobs do."""
    make_database(cluster, "twin_db", rows=50)
    full = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env, "DB_NAME": "twin_db"}
    with table_locked(cluster, "twin_db"):  # both are in the middle of the run at once
        runs = [subprocess.Popen([sys.executable, "-c", _RUN_AT], env=full, cwd=REPO, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        time.sleep(3)
    results = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    roles_dumps = sorted(p.name for p in Path(backup_dir, "_globals").iterdir() if p.name.endswith(".json"))
    assert len(roles_dumps) == 1, roles_dumps
    assert results[0]["globals"] == results[1]["globals"]
    database_backups = [b for r in results for b in r["databases"] if b]
    assert len(database_backups) == 1  # the other run gave way (advisory lock)
