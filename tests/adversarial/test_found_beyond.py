"""Breaks found beyond the issue's list, by trying backupd as an adversarial user would."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from psycopg import sql

from backupd.restoring.builder import _create_database
from backupd.errors import RestoreError
from backupd.postgres import database_info
from backupd.repository import Repository
from tests.integration.helpers import make_database


@pytest.fixture(scope="module")
def beyond_db(cluster):
    make_database(cluster, "beyond_db", rows=100)
    return "beyond_db"


def test_a_volume_restore_aimed_at_the_repository_or_its_parent_is_refused(backupd, backup_dir, tmp_path, beyond_db):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "a.txt").write_text("a")
    env = {"VOLUME_PATHS": f"data={volume}"}
    backupd.ok("backup", "--database", beyond_db)
    backupd.ok("volumes", "backup", extra_env=env)
    before = sorted(p.relative_to(backup_dir) for p in backup_dir.rglob("*") if p.is_file())
    for destination in (backup_dir.parent, backup_dir, backup_dir / beyond_db):
        refused = backupd("volumes", "restore", "latest", "--to", str(destination), "--yes", extra_env=env)
        assert refused.returncode == 2 and "overlaps BACKUP_DIR" in refused.stderr, refused.stderr
    assert sorted(p.relative_to(backup_dir) for p in backup_dir.rglob("*") if p.is_file()) == before


@pytest.mark.parametrize("opts", ["-Of/tmp/backupd-victim", "-xFp", "-xhlocalhost", "-vZ9"])
def test_extra_dump_options_cannot_hide_an_output_option_in_a_cluster(backupd, tmp_path, opts):
    result = backupd("backup", extra_env={"BACKUP_EXTRA_OPTS": opts})
    assert result.returncode == 2 and "BACKUP_EXTRA_OPTS" in result.stderr
    assert not (tmp_path / "backupd-victim").exists()


def test_a_pin_set_after_prune_listed_the_backup_still_holds(backupd, backup_dir, beyond_db):
    backup_id = backupd.ok("backup", "--database", beyond_db).stdout.split()[0]
    repo = Repository(backup_dir)
    listed = repo.find(backup_id)  # what prune decided from: not pinned
    backupd.ok("pin", backup_id)  # then the user pins it
    assert repo.delete(listed) is False
    assert backupd.listing("--database", beyond_db)[0]["pinned"] is True


def test_a_backup_dated_in_the_future_never_makes_a_run_delete_its_own_backup(backupd, beyond_db):
    keep_one = {"BACKUP_RETENTION_DAYS": "0", "BACKUP_KEEP_LAST": "1"}
    backupd.at("2099-03-01 02:00:00", "backup", "--database", beyond_db, extra_env=keep_one)
    made = backupd.ok("backup", "--database", beyond_db, extra_env=keep_one).stdout.split()[0]
    assert made in {b["id"] for b in backupd.listing("--database", beyond_db)}


def test_a_database_someone_else_created_meanwhile_is_never_dropped(cluster):
    with cluster.connect() as admin:
        admin.execute("DROP DATABASE IF EXISTS beyond_theirs")
        admin.execute("CREATE DATABASE beyond_theirs")  # an app, or another restore, got there first
        with pytest.raises(RestoreError, match="someone else"):
            _create_database(admin, "beyond_theirs", database_info(admin, "beyond_theirs"))
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = 'beyond_theirs'").fetchone()
        admin.execute(sql.SQL("DROP DATABASE beyond_theirs"))
    assert exists


def test_a_deletion_that_cannot_be_finished_never_blocks_later_backups(backupd, backup_dir, beyond_db):
    backup_id = backupd.ok("backup", "--database", beyond_db).stdout.split()[0]
    folder = backup_dir / beyond_db
    manifest = folder / f"{backup_id}.json"
    (folder / f"{backup_id}.state.json").mkdir()  # not a file: unlink fails
    manifest.rename(folder / f".{manifest.name}.deleting")
    assert json.loads((folder / f".{manifest.name}.deleting").read_text())["id"] == backup_id
    time.sleep(1.1)  # the next backups get ids of their own
    backupd.ok("backup", "--database", beyond_db)
    backupd.ok("backup", "--database", beyond_db)


def database_with_settings(cluster, name: str, rows: int, *settings: str) -> None:
    """A database with a table ``many`` of ``rows`` rows and these database-level settings."""
    make_database(cluster, name, rows=10)
    with cluster.connect(name) as conn:
        conn.execute("CREATE TABLE many AS SELECT g AS id FROM generate_series(1, %s) g", (rows,))
    with cluster.connect() as admin:
        for setting in settings:
            admin.execute(sql.SQL("ALTER DATABASE {} SET " + setting).format(sql.Identifier(name)))


def test_a_databases_own_short_timeouts_do_not_fail_its_backup(cluster, backupd):
    """An app's statement_timeout and idle_in_transaction_session_timeout, set on its
    database, are the app's: the row counts (a long count) and the snapshot's transaction
    (idle while pg_dump works) run without them."""
    name = "short_timeouts_db"
    database_with_settings(cluster, name, 2_000_000, "statement_timeout = '20ms'",
                           "idle_in_transaction_session_timeout = '200ms'")
    try:
        backupd.ok("backup", extra_env={"DB_NAME": name, "BACKUP_GLOBALS": "false"})
        (newest,) = backupd.listing("--database", name)
        manifest = json.loads((Path(newest["file"]).parent / f"{newest['id']}.json").read_text())
        assert {t["name"]: t["rows"] for t in manifest["tables"]}["many"] == 2_000_000
    finally:
        with cluster.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_typo_in_backup_database_is_refused_and_never_remembered_as_a_failure(backupd, backup_dir):
    result = backupd("backup", "--database", "no_such_db_typo")
    assert result.returncode == 2 and "no such database on the server: 'no_such_db_typo'" in result.stderr
    assert not list(backup_dir.rglob(".last-failure.json"))  # /healthz stays as it was


def test_a_read_only_database_with_a_short_statement_timeout_restores_and_verifies(cluster, backupd):
    """Its settings (default_transaction_read_only, statement_timeout) are set after its data."""
    name = "read_only_db"
    database_with_settings(cluster, name, 1_000_000, "default_transaction_read_only = on",
                           "statement_timeout = '20ms'")
    try:
        backupd.ok("backup", extra_env={"DB_NAME": name, "BACKUP_GLOBALS": "false"})
        (newest,) = backupd.listing("--database", name)
        assert backupd.ok("verify", newest["id"]).stdout.startswith(f"{newest['id']}: passed")
        backupd.ok("restore", newest["id"], "--into", "read_only_copy")
        with cluster.connect("read_only_copy") as conn:
            assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
            conn.execute("SET statement_timeout = 0")
            assert conn.execute("SELECT count(*) FROM many").fetchone()[0] == 1_000_000
    finally:
        with cluster.connect() as admin:
            for db in (name, "read_only_copy"):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def test_a_database_left_aside_by_an_interrupted_swap_fails_loudly_with_the_fix(cluster, backupd, backup_dir):
    """A kill -9 between the swap's two renames: the live name is gone, the old database
    waits with connections off. Every backup run says so (a failure for that database, so
    /healthz and the page turn red) and gives the two statements that put it back."""
    from backupd.dbnames import old_name

    live = "stranded_db"
    make_database(cluster, live, rows=20)
    aside = old_name(live)
    with cluster.connect() as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(live), sql.Identifier(aside)))
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(aside)))
    try:
        result = backupd("backup", extra_env={"BACKUP_GLOBALS": "false", "DB_NAME": live})
        assert result.returncode == 1
        fix = f'ALTER DATABASE "{aside}" RENAME TO "{live}"; ALTER DATABASE "{live}" ALLOW_CONNECTIONS true;'
        errors = [json.loads(line).get("error", "") for line in result.stderr.splitlines() if line.startswith("{")]
        assert any(fix in error for error in errors), errors
        assert "interrupted restore" in json.loads((backup_dir / live / ".last-failure.json").read_text())["error"]
        with cluster.connect() as admin:  # the fix, as given
            for statement in fix.split("; "):
                admin.execute(statement.rstrip(";"))
        backupd.ok("backup", extra_env={"BACKUP_GLOBALS": "false", "DB_NAME": live})
        assert not (backup_dir / live / ".last-failure.json").exists()
    finally:
        with cluster.connect() as admin:
            for name in (live, aside):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
