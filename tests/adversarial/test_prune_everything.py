"""``backupd prune`` is the daemon's prune: database backups, volume archives and PITR
alike (one function, ``coordinator.prune``). Before, the command left volume archives
alone, so a machine pruned by cron kept every archive for ever while the daemon's pruned."""

from __future__ import annotations

import json

from tests.integration.helpers import make_database

TIMES = ("2026-09-01 02:00:00", "2026-10-01 02:00:00", "2026-11-20 02:00:00")
PRUNE_AT = "2026-11-21 12:00:00"


def volume_ids(backupd, env: dict[str, str]) -> list[str]:
    return sorted(b["id"] for b in json.loads(backupd.ok("volumes", "list", "--json", extra_env=env).stdout))


def test_prune_deletes_volume_archives_by_their_rules(backupd, cluster, tmp_path):
    make_database(cluster, "prune_all_db", rows=5)
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / "notes.txt").write_text("notes")
    keep_all = {"VOLUME_PATHS": f"uploads={folder}", "VOLUME_RETENTION_DAYS": "365", "DB_NAME": "prune_all_db",
                "BACKUP_RETENTION_DAYS": "365", "BACKUP_GLOBALS": "false"}
    for when in TIMES:
        backupd.at(when, "volumes", "backup", extra_env=keep_all)
        backupd.at(when, "backup", extra_env=keep_all)
    assert len(volume_ids(backupd, keep_all)) == 3

    policy = {**keep_all, "VOLUME_RETENTION_DAYS": "7", "BACKUP_RETENTION_DAYS": "7"}
    dry = backupd.at(PRUNE_AT, "prune", "--dry-run", extra_env=policy)
    assert dry.returncode == 0, dry.stderr
    assert sum("volume uploads" in line and "would delete" in line for line in dry.stdout.splitlines()) == 2
    assert len(volume_ids(backupd, keep_all)) == 3  # a dry run deletes nothing

    result = backupd.at(PRUNE_AT, "prune", extra_env=policy)
    assert result.returncode == 0, result.stderr
    (kept,) = volume_ids(backupd, keep_all)
    assert "20261120T" in kept  # the newest, inside 7 days
    assert [b["id"] for b in backupd.listing()][0].split("-")[-1].startswith("20261120T")
    assert len(backupd.listing()) == 1  # the database backups by their own rules, in the same run
