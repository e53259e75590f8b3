"""Backups made at chosen past times (under faketime) are pruned with the CLI, and exactly
the expected set is kept."""

from __future__ import annotations

import os
import time

import pytest

from tests.integration.helpers import make_database

TIMES = ["2026-08-01 02:00:00", "2026-09-01 02:00:00", "2026-10-01 02:00:00", "2026-10-15 02:00:00",
         "2026-11-01 02:00:00", "2026-11-14 02:00:00", "2026-11-18 02:00:00", "2026-11-20 02:00:00"]
PRUNE_AT = "2026-11-21 12:00:00"


def day_of(when: str) -> str:
    """The id's date part: faketime's clock starts at ``when`` and runs, so seconds vary."""
    return when[:10].replace("-", "")


def days_of(ids) -> set[str]:
    return {i.rsplit("-", 1)[1][:8] for i in ids}


def deletions(output: str, database: str, word: str) -> int:
    return sum(1 for line in output.splitlines() if line.split()[1:2] == [database] and word in line)


@pytest.fixture(scope="module")
def retention_db(cluster):
    make_database(cluster, "retention_db", rows=20)
    return "retention_db"


def test_prune_keeps_exactly_what_the_rules_say(backupd, backup_dir, retention_db):
    no_rules = {"DB_NAME": retention_db, "BACKUP_RETENTION_DAYS": "0"}
    for when in TIMES:
        backupd.at(when, "backup", *(["--pin"] if when == TIMES[0] else []), extra_env=no_rules)
    assert len(backupd.listing()) == len(TIMES)
    stale = backup_dir / retention_db / f".{retention_db}-20260101T000000Z.dump.zst.partial"  # a dead run's
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)

    policy = {"BACKUP_RETENTION_DAYS": "7", "BACKUP_KEEP_MONTHLY": "2"}
    dry = backupd.at(PRUNE_AT, "prune", "--dry-run", extra_env=policy)
    assert deletions(dry.stdout, retention_db, "would delete") == 4
    assert len(backupd.listing()) == len(TIMES)  # a dry run deletes nothing
    result = backupd.at(PRUNE_AT, "prune", extra_env=policy)
    kept = days_of(b["id"] for b in backupd.listing())
    expected = {day_of(t) for t in
                ("2026-08-01 02:00:00",   # pinned
                 "2026-10-15 02:00:00",   # newest of October (monthly 2)
                 "2026-11-18 02:00:00",   # younger than 7 days
                 "2026-11-20 02:00:00")}  # younger than 7 days, newest of November
    assert kept == expected
    assert deletions(result.stdout, retention_db, "deleted") == 4
    assert "pinned" in result.stdout and "younger than 7 days" in result.stdout
    assert not stale.exists()
    globals_kept = {p.name for p in (backup_dir / "_globals").glob("*Z.json")}
    assert len(globals_kept) == 4  # one for each kept backup; the rest followed their backups

    (pinned,) = [b["id"] for b in backupd.listing() if b["pinned"]]
    backupd.ok("unpin", pinned)
    backupd.at(PRUNE_AT, "prune", extra_env=policy)
    assert day_of(TIMES[0]) not in days_of(b["id"] for b in backupd.listing())


def test_retention_runs_after_each_backup_and_never_deletes_the_newest(backupd, retention_db):
    for when in ("2026-01-01 02:00:00", "2026-02-01 02:00:00"):
        backupd.at(when, "backup", extra_env={"DB_NAME": retention_db})
    # Each run pruned with the default 7 days: the January backup went when February's was made.
    assert days_of(b["id"] for b in backupd.listing()) == {"20260201"}
    result = backupd.ok("prune")  # today, that backup is months old: still the newest, so kept
    assert "BACKUP_MIN_KEEP floor" in result.stdout
    assert len(backupd.listing()) == 1
