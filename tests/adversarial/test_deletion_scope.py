"""Class 1: backupd deletes only what it wrote. Foreign files survive every prune,
clean-up and restore; a stored file whose manifest is lost is reported, never deleted;
an empty or relative BACKUP_DIR is refused before anything runs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.integration.helpers import make_database

TWO_DAYS_AGO = time.time() - 2 * 86400


def _age(path: Path) -> None:
    """Older than any 'stale after a day' rule, so age alone never protects it."""
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (TWO_DAYS_AGO, TWO_DAYS_AGO), follow_symlinks=False)


@pytest.fixture(scope="module")
def scope_db(cluster):
    make_database(cluster, "scope_db", rows=200)
    return "scope_db"


@pytest.mark.parametrize("value", ["", "backups", "./backups", "  "])
@pytest.mark.parametrize("verb", [["backup"], ["prune"], ["run"], ["list"]])
def test_an_empty_or_relative_backup_dir_is_a_configuration_error(backupd, tmp_path, value, verb):
    bystander = tmp_path / "old-notes.txt"
    bystander.write_text("mine")
    _age(bystander)
    result = backupd.run_argv(backupd.argv(*verb), extra_env={"BACKUP_DIR": value})
    assert result.returncode == 2, result.stderr
    assert "BACKUP_DIR" in result.stderr and ("absolute" in result.stderr or "empty" in result.stderr)
    assert "Traceback" not in result.stderr
    assert bystander.read_text() == "mine"


def _plant_foreign_files(folder: Path) -> list[Path]:
    """What people keep beside their backups, including names that look almost like ours."""
    folder.mkdir(parents=True, exist_ok=True)
    planted = {
        "README": "where these backups come from",
        "notes.txt": "restore drill on friday",
        ".notes.partial": "someone's editor swap",
        "old.dump": "a dump made by hand",
        "scope_db-2024.dump.zst": "a hand-made name",
        ".hidden.staging": "not ours",
        "scope_db-20200101T000000Z.dump.zst.bak": "a copy someone kept",
    }
    paths = []
    for name, text in planted.items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    notes = folder / "notes"
    notes.mkdir(exist_ok=True)
    (notes / "a.dump").write_text("keep")
    paths += [notes, notes / "a.dump"]
    for path in paths:
        _age(path)
    return paths


def test_foreign_files_survive_backup_prune_cleanup_and_restore(backupd, backup_dir, scope_db, cluster):
    backupd.ok("backup", "--database", scope_db)
    planted = _plant_foreign_files(backup_dir) + _plant_foreign_files(backup_dir / scope_db) \
        + _plant_foreign_files(backup_dir / "_globals")
    contents = {p: p.read_text() for p in planted if p.is_file()}

    keep_one = {"BACKUP_RETENTION_DAYS": "0", "BACKUP_KEEP_LAST": "1"}
    for _ in range(2):  # the second backup makes the first one go by retention
        backupd.ok("backup", "--database", scope_db, extra_env=keep_one)
    backupd.ok("prune", extra_env=keep_one)
    with cluster.connect() as admin:
        admin.execute("DROP DATABASE IF EXISTS scope_copy")
    backupd.ok("restore", "latest", "--database", scope_db, "--into", "scope_copy", "--jobs", "2")

    for path, text in contents.items():
        assert path.is_file(), f"{path} was deleted"
        assert path.read_text() == text
    assert (backup_dir / scope_db / "notes").is_dir()
    assert len(backupd.listing("--database", scope_db)) == 1  # retention itself still works


def test_a_stored_file_without_its_manifest_is_reported_never_deleted(backupd, backup_dir, scope_db, cluster):
    first = backupd.ok("backup", "--database", scope_db).stdout.split()[0]
    backupd.ok("backup", "--database", scope_db)
    manifest = backup_dir / scope_db / f"{first}.json"
    stored = next(p for p in (backup_dir / scope_db).iterdir() if p.name.startswith(first) and p.suffix == ".zst")
    manifest.unlink()  # lost: a careless rm, a sync tool, a half-copied folder
    _age(stored)

    for verb in (["prune"], ["backup", "--database", scope_db]):
        backupd.ok(*verb, extra_env={"BACKUP_RETENTION_DAYS": "0", "BACKUP_KEEP_LAST": "1"})
    assert stored.is_file(), "a complete backup file was deleted as a leftover"

    listing = backupd.listing("--database", scope_db)
    unaccounted = [row for row in listing if row["status"] == "unaccounted"]
    assert [row["file"] for row in unaccounted] == [str(stored)]
    table = backupd.ok("list").stdout
    assert "UNACCOUNTED" in table and str(stored) in table and "restore it by path" in table

    # The documented way back: restore by path.
    with cluster.connect() as admin:
        admin.execute("DROP DATABASE IF EXISTS scope_orphan")
    backupd.ok("restore", str(stored), "--into", "scope_orphan", "--yes")
    with cluster.connect("scope_orphan") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 200


def test_an_unreadable_manifest_keeps_its_file_and_is_reported(backupd, backup_dir, scope_db):
    backup_id = backupd.ok("backup", "--database", scope_db).stdout.split()[0]
    backupd.ok("backup", "--database", scope_db)
    manifest = backup_dir / scope_db / f"{backup_id}.json"
    manifest.write_text("{ half written")
    stored = next(p for p in (backup_dir / scope_db).iterdir() if p.name.startswith(backup_id) and p.suffix == ".zst")
    _age(stored)
    _age(manifest)
    backupd.ok("prune", extra_env={"BACKUP_RETENTION_DAYS": "0", "BACKUP_KEEP_LAST": "1"})
    assert stored.is_file() and manifest.is_file()
    statuses = {row["status"] for row in backupd.listing("--database", scope_db)}
    assert {"unaccounted", "invalid"} <= statuses


def test_a_manifest_naming_a_file_elsewhere_never_deletes_it(backupd, backup_dir, scope_db, tmp_path):
    """A manifest is only believed about a file of backupd's own name in its own folder."""
    victim = tmp_path / "precious.dump.zst"
    victim.write_text("not a backup")
    backup_id = backupd.ok("backup", "--database", scope_db).stdout.split()[0]
    backupd.ok("backup", "--database", scope_db)
    manifest_path = backup_dir / scope_db / f"{backup_id}.json"
    manifest = json.loads(manifest_path.read_text())
    os.unlink(backup_dir / scope_db / manifest["file"])
    manifest["file"] = os.path.relpath(victim, manifest_path.parent)
    manifest_path.write_text(json.dumps(manifest))
    backupd.ok("prune", extra_env={"BACKUP_RETENTION_DAYS": "0", "BACKUP_KEEP_LAST": "1"})
    assert victim.read_text() == "not a backup"
    assert manifest_path.is_file()  # not backupd's to delete either: reported instead
    assert any(row["status"] == "invalid" for row in backupd.listing("--database", scope_db))


def test_a_deletion_cut_short_is_finished_and_nothing_else_goes(backupd, backup_dir, scope_db):
    """prune moves the manifest aside first; a kill there leaves a marker the next run completes."""
    backup_id = backupd.ok("backup", "--database", scope_db).stdout.split()[0]
    folder = backup_dir / scope_db
    manifest = folder / f"{backup_id}.json"
    stored = folder / json.loads(manifest.read_text())["file"]
    marker = folder / f".{manifest.name}.deleting"
    manifest.rename(marker)  # as if prune was killed right after its first step
    bystander = folder / "notes.txt"
    bystander.write_text("mine")
    time.sleep(1.1)  # the next backup gets an id of its own
    new_id = backupd.ok("backup", "--database", scope_db).stdout.split()[0]
    assert not marker.exists() and not stored.exists()
    assert bystander.read_text() == "mine"
    assert [(row["id"], row["status"]) for row in backupd.listing("--database", scope_db)] == [(new_id, "ok")]
