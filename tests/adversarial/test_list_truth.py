"""Class 7: ``list`` tells the truth cheaply. A stored file whose size differs from its
manifest shows as damaged (a stat, no hashing); health turns unhealthy when it is a
database's newest backup, and retention never counts it as a good backup."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from backupd.health import evaluate
from backupd.repository import Repository
from backupd.settings import load_settings
from tests.integration.helpers import make_database


@pytest.fixture(scope="module")
def truth_db(cluster):
    make_database(cluster, "truth_db", rows=300)
    return "truth_db"


def _stored(backup_dir, backup_id: str):
    return next(p for p in (backup_dir / "truth_db").iterdir() if p.name.startswith(backup_id) and p.suffix == ".zst")


@pytest.mark.parametrize("damage", ["truncated", "grown"])
def test_a_file_whose_size_differs_from_its_manifest_lists_as_damaged(backupd, backup_dir, truth_db, env, damage):
    older = backupd.ok("backup", "--database", truth_db).stdout.split()[0]
    newest = backupd.ok("backup", "--database", truth_db).stdout.split()[0]
    stored = _stored(backup_dir, newest)
    data = stored.read_bytes()
    stored.write_bytes(data[: len(data) // 2] if damage == "truncated" else data + b"\0" * 10)

    rows = {row["id"]: row for row in backupd.listing("--database", truth_db)}
    assert rows[newest]["status"] == "damaged" and str(len(data)) in rows[newest]["problem"]
    assert rows[older]["status"] == "ok"
    table = backupd.ok("list").stdout
    assert "damaged" in table and f"DAMAGED {newest}" in table

    health = evaluate(load_settings(env), Repository(backup_dir), datetime.now(timezone.utc),
                      datetime.now(timezone.utc))
    assert not health.healthy
    assert any(newest in reason and "damaged" in reason for reason in health.reasons)


def test_retention_never_keeps_a_damaged_backup_in_place_of_a_good_one(backupd, backup_dir, truth_db):
    good = backupd.ok("backup", "--database", truth_db).stdout.split()[0]
    newest = backupd.ok("backup", "--database", truth_db).stdout.split()[0]
    stored = _stored(backup_dir, newest)
    stored.write_bytes(stored.read_bytes()[:100])
    keep_one = {"BACKUP_RETENTION_DAYS": "0", "BACKUP_KEEP_LAST": "1", "BACKUP_MIN_KEEP": "1"}
    out = backupd.ok("prune", extra_env=keep_one).stdout
    ids = {row["id"]: row["status"] for row in backupd.listing("--database", truth_db)}
    assert ids == {good: "ok", newest: "damaged"}, out  # the good one stays; the damaged one waits for a person
    assert "damaged" in out
