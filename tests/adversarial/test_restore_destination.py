"""Class 3: a restore lands where the user meant.

A backup of database A goes over a different existing database B only when the
user names B as the destination (``--over B --yes``). ``--database`` selects
backups; it never silently becomes the destination.
"""

from __future__ import annotations

import json
import shutil

import pytest
from psycopg import sql

from tests.content import fingerprint
from tests.pg import Cluster

SHOP, CRM = "dest_shop", "dest_crm"


def create(cluster: Cluster, name: str, table: str, rows: int) -> None:
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with cluster.connect(name) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, note text)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("INSERT INTO {} SELECT g, {} || g FROM generate_series(1, %s) g").format(
            sql.Identifier(table), sql.Literal(table)), (rows,))


def databases(cluster: Cluster) -> set[str]:
    with cluster.connect() as admin:
        return {name for (name,) in admin.execute("SELECT datname FROM pg_database").fetchall()}


def backupd_made(cluster: Cluster) -> set[str]:
    """Side and replaced databases of a swap."""
    return {name for name in databases(cluster) if "__restoring_" in name or "__before_restore_" in name}


@pytest.fixture
def shop_and_crm(cluster):
    """Two databases with different content; yields the id of a backup of shop."""
    create(cluster, SHOP, "orders", 300)
    create(cluster, CRM, "contacts", 70)
    yield
    with cluster.connect() as admin:
        for name in {SHOP, CRM} | backupd_made(cluster):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def shop_id(backupd, shop_and_crm) -> str:
    return backupd.ok("backup", extra_env={"DB_NAME": SHOP}).stdout.strip()


def assert_refused_naming_both(result, shop_id: str) -> None:
    assert result.returncode == 2, result.stderr
    message = result.stderr
    assert SHOP in message and CRM in message and shop_id in message, message
    assert "Traceback" not in message
    assert len([line for line in message.splitlines() if line.strip()]) == 1, message


@pytest.mark.parametrize("options, extra_env", [
    (["--in-place", "--yes"], {}),
    (["--yes"], {}),
    (["--yes", "--drop-old"], {}),
    (["--in-place"], {"FORCE_RESTORE": "true"}),
], ids=["in-place", "swap", "swap-drop-old", "force-restore-setting"])
def test_a_backup_of_one_database_is_never_restored_over_another_named_by_database(
        cluster, backupd, shop_id, options, extra_env):
    before = fingerprint(cluster, CRM)
    result = backupd("restore", shop_id, "--database", CRM, *options, extra_env=extra_env)
    assert_refused_naming_both(result, shop_id)
    assert "--over" in result.stderr  # it tells how to say it explicitly
    assert fingerprint(cluster, CRM) == before
    assert not backupd_made(cluster)


def test_a_file_given_by_path_with_its_manifest_is_refused_over_another_database(
        cluster, backupd, backup_dir, shop_id):
    (stored,) = (backup_dir / SHOP).glob(f"{shop_id}.dump*")
    before = fingerprint(cluster, CRM)
    result = backupd("restore", str(stored), "--database", CRM, "--yes")
    assert_refused_naming_both(result, shop_id)
    assert fingerprint(cluster, CRM) == before


def test_a_file_without_a_manifest_needs_an_explicit_destination(cluster, backupd, backup_dir, shop_id, tmp_path):
    (stored,) = (backup_dir / SHOP).glob(f"{shop_id}.dump*")
    lone = tmp_path / stored.name
    shutil.copy(stored, lone)  # no manifest beside it: nothing says whose data it is
    before = fingerprint(cluster, CRM)
    result = backupd("restore", str(lone), "--database", CRM, "--in-place", "--yes")
    assert result.returncode == 2 and "--into" in result.stderr and "--over" in result.stderr, result.stderr
    assert fingerprint(cluster, CRM) == before
    backupd.ok("restore", str(lone), "--over", CRM, "--in-place", "--yes")
    assert "orders" in json.dumps(fingerprint(cluster, CRM)["data"])


def test_the_explicit_destination_restores_one_database_over_another_and_its_own_still_works(
        cluster, backupd, shop_id):
    shop_at_backup, crm_before = fingerprint(cluster, SHOP), fingerprint(cluster, CRM)
    result = backupd.ok("restore", shop_id, "--over", CRM, "--yes")
    assert fingerprint(cluster, CRM)["data"] == shop_at_backup["data"]
    (kept,) = backupd_made(cluster)
    assert kept in result.stdout and fingerprint(cluster, kept)["data"] == crm_before["data"]

    create(cluster, CRM, "contacts", 70)
    backupd.ok("restore", shop_id, "--over", CRM, "--in-place", "--yes")
    assert fingerprint(cluster, CRM)["data"] == shop_at_backup["data"]

    with cluster.connect(SHOP) as conn:
        conn.execute("DELETE FROM orders WHERE id > 100")
    backupd.ok("restore", "latest", "--database", SHOP, "--yes", "--drop-old")
    assert fingerprint(cluster, SHOP) == shop_at_backup


def test_the_explicit_destination_still_needs_consent_and_an_existing_database(cluster, backupd, shop_id):
    before = fingerprint(cluster, CRM)
    without_yes = backupd("restore", shop_id, "--over", CRM)
    assert without_yes.returncode == 2 and "--yes" in without_yes.stderr, without_yes.stderr
    missing = backupd("restore", shop_id, "--over", "dest_no_such_db", "--yes")
    assert missing.returncode == 2 and "--into" in missing.stderr, missing.stderr
    assert "dest_no_such_db" not in databases(cluster)
    both = backupd("restore", shop_id, "--over", CRM, "--into", "dest_new", "--yes")
    assert both.returncode == 2
    assert fingerprint(cluster, CRM) == before and not backupd_made(cluster)


def test_an_empty_new_database_name_never_falls_back_to_the_live_database(cluster, backupd, shop_id):
    """``--into "$NEWDB"`` with an unset variable must not become a restore over shop."""
    with cluster.connect(SHOP) as conn:
        conn.execute("INSERT INTO orders VALUES (100000, 'after the backup')")
    before = fingerprint(cluster, SHOP)
    result = backupd("restore", shop_id, "--into", "", "--yes")
    assert result.returncode == 2 and "--into" in result.stderr, result.stderr
    assert fingerprint(cluster, SHOP) == before and not backupd_made(cluster)


def test_verify_of_one_database_backup_with_another_database_named_is_refused(backupd, shop_id):
    result = backupd("verify", shop_id, "--database", CRM)
    assert_refused_naming_both(result, shop_id)
    assert backupd.listing("--database", SHOP)[0]["verified"] in (None, "")
