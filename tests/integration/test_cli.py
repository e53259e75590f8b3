"""What a user sees at the shell: stdout for results, JSON logs on stderr, exit codes."""

from __future__ import annotations

import json
import time

import pytest
from psycopg import sql

from tests.conftest import log_lines
from tests.integration.helpers import cmdline, make_database, start_backupd, table_locked, wait_for_child


@pytest.fixture(scope="module")
def two_dbs(cluster):
    make_database(cluster, "cli_one", rows=100)
    make_database(cluster, "cli_two", rows=50)
    return ["cli_one", "cli_two"]


def test_list_json_goes_to_stdout_and_every_log_line_is_json(backupd, two_dbs):
    backup = backupd.ok("backup", extra_env={"DB_NAME": ",".join(two_dbs)})
    ids = backup.stdout.splitlines()
    assert [i.rsplit("-", 1)[0] for i in ids] == two_dbs
    events = log_lines(backup.stderr)
    finished = [e for e in events if e["event"] == "backup finished"]
    assert {e["database"] for e in finished} >= set(two_dbs)
    assert all({"id", "duration_seconds", "size_bytes"} <= e.keys() for e in finished)
    listed = backupd.ok("list", "--json")
    assert sorted(b["id"] for b in json.loads(listed.stdout)) == sorted(ids)
    assert [b["database"] for b in backupd.listing("--database", "cli_two")] == ["cli_two"]
    table = backupd.ok("list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "DATABASE", "INSTANCE"] and len(table) == 3


def test_all_databases_excludes_templates_excluded_names_and_scratch_databases(cluster, backupd, two_dbs):
    from psycopg import sql

    from backupd.dbnames import scratch_name

    scratch = scratch_name("cli_one")  # a verification's scratch database, as backupd names it
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(scratch)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    try:
        backupd.ok("backup", extra_env={"DB_EXCLUDE": "cli_one"})
        names = {b["database"] for b in backupd.listing()}
        assert "cli_two" in names and "postgres" in names
        assert not names & {"cli_one", "template0", "template1", scratch}
    finally:
        with cluster.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(scratch)))


def test_restore_over_an_existing_database_is_refused_and_changes_nothing(cluster, backupd, two_dbs):
    backupd.ok("backup", extra_env={"DB_NAME": "cli_one"})
    with cluster.connect("cli_one") as conn:
        conn.execute("INSERT INTO items (payload) VALUES ('after the backup')")
        (before,) = conn.execute("SELECT count(*) FROM items").fetchone()
    result = backupd("restore", "latest", "--database", "cli_one")
    assert result.returncode == 2
    assert "exists" in result.stderr
    with cluster.connect("cli_one") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (before,)


def test_latest_needs_database_when_several_are_stored(backupd, two_dbs):
    backupd.ok("backup", extra_env={"DB_NAME": ",".join(two_dbs)})
    result = backupd("restore", "latest", "--into", "x")
    assert result.returncode == 2
    assert "--database" in result.stderr


@pytest.mark.parametrize("source", ["cli_one-20200101T000000Z", "../../etc/passwd", "nonsense"])
def test_unknown_or_outside_sources_are_refused(backupd, source):
    result = backupd("restore", source, "--into", "never_created")
    assert result.returncode == 2, result.stderr


def test_database_names_cannot_escape_their_folder(cluster, backupd, backup_dir):
    name = "a/../../b"
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        backup_id = backupd.ok("backup", extra_env={"DB_NAME": name}).stdout.splitlines()[0]
        assert backup_id.startswith(name + "-")
        folders = {p.name for p in backup_dir.iterdir()}
        assert folders == {"_globals", "a%2F..%2F..%2Fb"}
        assert [b["id"] for b in backupd.listing()] == [backup_id]
        assert not (backup_dir.parent.parent / "b").exists()
    finally:
        with cluster.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def test_two_backups_in_the_same_second_get_distinct_ids(backupd, two_dbs):
    first = backupd.ok("backup", extra_env={"DB_NAME": "cli_two", "BACKUP_GLOBALS": "false"}).stdout.strip()
    second = backupd.ok("backup", extra_env={"DB_NAME": "cli_two", "BACKUP_GLOBALS": "false"}).stdout.strip()
    assert first != second
    assert len(backupd.listing()) == 2


def test_bad_configuration_exits_2_naming_every_variable(backupd):
    result = backupd("backup", extra_env={"BACKUP_FORMAT": "zip", "DB_PORT": "nope", "BACKUP_SCHEDULE": "every day"})
    assert result.returncode == 2
    for name in ("BACKUP_FORMAT", "DB_PORT", "BACKUP_SCHEDULE"):
        assert name in result.stderr
    assert result.stdout == ""


def test_config_masks_the_password(backupd, cluster):
    result = backupd.ok("config")
    assert "DB_PASSWORD=********" in result.stdout
    assert cluster.password not in result.stdout + result.stderr


def test_the_password_never_reaches_argv_or_logs(cluster, env, backupd, backup_dir, two_dbs):
    seen_argv = []
    with table_locked(cluster, "cli_one"):
        proc = start_backupd({**env, "DB_NAME": "cli_one"}, "backup")
        pid = wait_for_child(proc, "pg_dump")
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            from pathlib import Path

            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    seen_argv.append(" ".join(cmdline(int(entry.name))))
            time.sleep(0.1)
        assert any("pg_dump" in argv for argv in seen_argv), pid
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert not [argv for argv in seen_argv if cluster.password in argv]
    assert cluster.password not in stdout + stderr
    restore = backupd.ok("restore", stdout.strip(), "--into", "cli_one_copy")
    assert cluster.password not in restore.stdout + restore.stderr
    with cluster.connect() as admin:
        admin.execute("DROP DATABASE cli_one_copy")
