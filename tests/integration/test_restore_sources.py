"""Restore checks before it touches anything, and takes explicit files as well as ids."""

from __future__ import annotations

import os
import shutil

import pytest
from psycopg import sql

from tests.integration.helpers import flip_a_byte, make_database, run_at_terminal


@pytest.fixture(scope="module")
def source_db(cluster):
    make_database(cluster, "sources_db", rows=300)
    return "sources_db"


def database_names(cluster):
    with cluster.connect() as admin:
        return {name for (name,) in admin.execute("SELECT datname FROM pg_database").fetchall()}


def drop(cluster, name):
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_corrupted_file_is_refused_before_anything_is_created(cluster, backupd, source_db):
    backupd.ok("backup", extra_env={"DB_NAME": source_db})
    (backup,) = backupd.listing()
    flip_a_byte(backup["file"])
    before = database_names(cluster)
    result = backupd("restore", backup["id"], "--into", "never_created")
    assert result.returncode == 1
    assert "does not match its manifest" in result.stderr
    assert database_names(cluster) == before


def test_restore_from_a_path_uses_the_manifest_beside_it_or_the_name_alone(cluster, backupd, backup_dir, tmp_path, source_db):
    backupd.ok("backup", extra_env={"DB_NAME": source_db, "BACKUP_FORMAT": "plain", "BACKUP_COMPRESSION": "gzip"})
    (backup,) = backupd.listing()
    backupd.ok("restore", backup["file"], "--into", "from_path")
    lone = tmp_path / "copied.sql.gz"
    shutil.copy(backup["file"], lone)
    backupd.ok("restore", str(lone), "--into", "from_lone_file")
    try:
        for name in ("from_path", "from_lone_file"):
            with cluster.connect(name) as conn:
                assert conn.execute("SELECT count(*) FROM items").fetchone() == (300,)
    finally:
        drop(cluster, "from_path")
        drop(cluster, "from_lone_file")


def test_a_failing_restore_drops_the_database_it_created(cluster, backupd, tmp_path, source_db):
    broken = tmp_path / "broken.sql"
    broken.write_text("CREATE TABLE fine (id int);\nTHIS IS NOT SQL;\n")
    result = backupd("restore", str(broken), "--into", "half_restored")
    assert result.returncode == 1
    assert "syntax error" in result.stderr
    assert "half_restored" not in database_names(cluster)


def test_a_pg_dump_older_than_the_server_is_refused_clearly(backupd, backup_dir, tmp_path, source_db):
    """Only an old pg_dump on PATH, none in PG_BINDIR: refused, naming both versions."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    (fake / "pg_dump").chmod(0o755)
    result = backupd("backup", extra_env={"DB_NAME": source_db, "PATH": f"{fake}:{os.environ['PATH']}",
                                          "PG_BINDIR": str(tmp_path / "no-tools")})
    assert result.returncode == 1
    assert "PostgreSQL 15 server" in result.stderr and "the newest is 9" in result.stderr, result.stderr
    assert backupd.listing() == []


def test_progress_is_shown_in_a_terminal(env, source_db):
    code, text = run_at_terminal({**env, "DB_NAME": source_db}, ["backup"])
    assert code == 0
    assert f"backing up {source_db}:" in text
    assert "/s, " in text and "elapsed" in text
