"""Restoring over a live database: a safe swap, and the live database untouched by any failure."""

from __future__ import annotations

import json
import os
import signal

import psycopg
import pytest
from psycopg import sql

from backupd.dbnames import old_name, scratch_name, side_name
from tests.content import fingerprint
from tests.integration.helpers import make_database, run_at_terminal, start_backupd, wait_for_child

LIVE = "swap_live"


def databases(cluster) -> set[str]:
    with cluster.connect() as admin:
        return {name for (name,) in admin.execute("SELECT datname FROM pg_database").fetchall()}


def drop_backupd_databases(cluster, live: str = LIVE) -> None:
    with cluster.connect() as admin:
        for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s OR datname LIKE %s",
                                     (f"{live[:20]}%__restoring_%", f"{live[:20]}%__before_restore_%")).fetchall():
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def live(cluster):
    make_database(cluster, LIVE, rows=2000, payload=128)
    with cluster.connect() as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'swap_app'").fetchone():
            admin.execute("CREATE ROLE swap_app LOGIN")
        admin.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(LIVE)))
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO swap_app").format(sql.Identifier(LIVE)))
    yield LIVE
    drop_backupd_databases(cluster)


def change_live(cluster) -> None:
    with cluster.connect(LIVE) as conn:
        conn.execute("INSERT INTO items (payload) VALUES ('written after the backup')")
        conn.execute("CREATE TABLE after_backup (id int)")


def test_restore_over_a_live_database_with_an_open_session_swaps_in_identical_content(cluster, backupd, live):
    backupd.ok("backup", extra_env={"DB_NAME": LIVE})
    at_backup = fingerprint(cluster, LIVE)
    change_live(cluster)
    changed = fingerprint(cluster, LIVE)
    session = cluster.connect(LIVE)  # an app still connected
    try:
        result = backupd.ok("restore", "latest", "--database", LIVE, "--yes")
    finally:
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")  # its session was ended for the swap
        session.close()
    assert fingerprint(cluster, LIVE) == at_backup
    kept = [name for name in databases(cluster) if "__before_restore_" in name]
    assert len(kept) == 1 and kept[0] in result.stdout
    assert fingerprint(cluster, kept[0])["data"] == changed["data"]
    assert not [name for name in databases(cluster) if "__restoring_" in name]
    with cluster.connect() as admin:
        (acl,) = admin.execute("SELECT datacl::text FROM pg_database WHERE datname = %s", (LIVE,)).fetchone()
    assert "swap_app=c/" in acl and not acl.startswith("{=")  # database-level grants came along


def test_drop_old_removes_the_replaced_database(cluster, backupd, live):
    backupd.ok("backup", extra_env={"DB_NAME": LIVE})
    backupd.ok("restore", "latest", "--database", LIVE, "--yes", "--drop-old")
    assert not [name for name in databases(cluster) if LIVE in name and name != LIVE]


def test_force_restore_setting_counts_as_yes_and_in_place_keeps_no_copy(cluster, backupd, live):
    backupd.ok("backup", extra_env={"DB_NAME": LIVE})
    at_backup = fingerprint(cluster, LIVE)
    change_live(cluster)
    backupd.ok("restore", "latest", "--database", LIVE, "--in-place", extra_env={"FORCE_RESTORE": "true"})
    assert fingerprint(cluster, LIVE) == at_backup
    assert not [name for name in databases(cluster) if LIVE in name and name != LIVE]


def test_without_yes_nothing_is_touched(cluster, backupd, live):
    backupd.ok("backup", extra_env={"DB_NAME": LIVE})
    change_live(cluster)
    before = fingerprint(cluster, LIVE)
    result = backupd("restore", "latest", "--database", LIVE, input="swap_live\n")  # stdin is not a terminal
    assert result.returncode == 2 and "--yes" in result.stderr
    assert fingerprint(cluster, LIVE) == before
    assert databases(cluster) & {LIVE} and not [n for n in databases(cluster) if "__restoring_" in n]


def test_a_restore_killed_midway_leaves_the_live_database_and_no_side_database(cluster, env, backupd, live):
    make_database(cluster, LIVE, rows=60000, payload=512)  # big enough to catch pg_restore at work
    backupd.ok("backup", extra_env={"DB_NAME": LIVE})
    change_live(cluster)
    before = fingerprint(cluster, LIVE)
    proc = start_backupd(env, "restore", "latest", "--database", LIVE, "--yes")
    os.kill(wait_for_child(proc, "pg_restore"), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert "pg_restore was killed by SIGKILL" in stderr
    assert fingerprint(cluster, LIVE) == before
    assert not [name for name in databases(cluster) if "__restoring_" in name or "__before_restore_" in name]


def test_a_restore_that_does_not_match_its_manifest_is_never_swapped_in(cluster, backupd, backup_dir, live):
    backupd.ok("backup", extra_env={"DB_NAME": LIVE})
    (manifest_path,) = (backup_dir / LIVE).glob("*Z.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"][0]["rows"] += 1
    manifest_path.write_text(json.dumps(manifest))
    change_live(cluster)
    before = fingerprint(cluster, LIVE)
    result = backupd("restore", "latest", "--database", LIVE, "--yes")
    assert result.returncode == 1
    assert "does not match the manifest" in result.stderr
    assert fingerprint(cluster, LIVE) == before
    assert not [name for name in databases(cluster) if "__restoring_" in name]


def test_names_backupd_creates_fit_63_bytes_and_never_collide():
    longest = "ü" * 31 + "x"  # 63 bytes
    assert len(longest.encode()) == 63
    names = {longest, side_name(longest), old_name(longest), scratch_name(longest)}
    assert len(names) == 4
    assert all(len(name.encode()) <= 63 for name in names)


def test_a_database_with_a_63_byte_name_can_be_restored_over(cluster, backupd):
    name = "ü" * 31 + "x"
    make_database(cluster, name, rows=100)
    try:
        backupd.ok("backup", extra_env={"DB_NAME": name})
        at_backup = fingerprint(cluster, name)
        with cluster.connect(name) as conn:
            conn.execute("DELETE FROM items")
        backupd.ok("restore", "latest", "--yes", "--drop-old")
        assert fingerprint(cluster, name) == at_backup
    finally:
        with cluster.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_terminal_asks_and_only_the_database_name_confirms(cluster, env, backupd, live):
    backupd.ok("backup", extra_env={"DB_NAME": LIVE})
    change_live(cluster)
    before = fingerprint(cluster, LIVE)
    code, output = run_at_terminal(env, ["restore", "latest", "--database", LIVE, "--drop-old"], b"yes\r")
    assert code == 2 and fingerprint(cluster, LIVE) == before
    code, output = run_at_terminal(env, ["restore", "latest", "--database", LIVE, "--drop-old"], LIVE.encode() + b"\r")
    assert code == 0, output
    assert fingerprint(cluster, LIVE) != before
