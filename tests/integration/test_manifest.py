"""The manifest tells the truth: checksum of the stored file, and row counts taken in
the dump's own snapshot even while other sessions write."""

from __future__ import annotations

import hashlib
import json
import threading

from psycopg import sql

from tests.integration.helpers import make_database


def manifests(backup_dir, kind="database"):
    found = []
    for path in backup_dir.rglob("*.json"):
        if path.name.endswith(".state.json"):
            continue
        manifest = json.loads(path.read_text())
        if manifest["kind"] == kind:
            found.append((path, manifest))
    return found


def test_manifest_sha256_and_size_match_the_stored_file(cluster, backupd, backup_dir):
    make_database(cluster, "manifest_sha", rows=500)
    backupd.ok("backup", "--label", "pre-deploy", extra_env={"DB_NAME": "manifest_sha"})
    (path, manifest), = manifests(backup_dir)
    stored = path.with_name(manifest["file"])
    assert manifest["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert manifest["size_bytes"] == stored.stat().st_size
    assert manifest["label"] == "pre-deploy"
    assert manifest["database_info"]["owner"] == "postgres"
    assert manifest["database_info"]["encoding"] == "UTF8"
    assert manifest["server"]["version"].startswith(str(cluster.bindir.parent.name))
    assert manifest["pg_dump_version"].startswith("pg_dump (PostgreSQL)")
    assert manifest["started"] <= manifest["finished"]
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    (globals_path, globals_manifest), = manifests(backup_dir, "globals")
    assert manifest["globals_id"] == globals_manifest["id"]
    assert backupd.listing()[0]["label"] == "pre-deploy"


def test_row_counts_equal_what_the_dump_holds_while_rows_are_inserted(cluster, backupd, backup_dir):
    make_database(cluster, "manifest_busy", rows=20000, payload=256)
    stop = threading.Event()
    inserted = []

    def writer():
        with cluster.connect("manifest_busy") as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO items (payload) VALUES ('written during the dump')")
                inserted.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        backupd.ok("backup", extra_env={"DB_NAME": "manifest_busy", "BACKUP_GLOBALS": "false"})
    finally:
        stop.set()
        thread.join()
    assert len(inserted) > 10, "the writer did not overlap with the dump"
    (path, manifest), = manifests(backup_dir)
    counted = {t["name"]: t["rows"] for t in manifest["tables"]}
    backupd.ok("restore", manifest["id"], "--into", "manifest_busy_restored")
    try:
        with cluster.connect("manifest_busy_restored") as conn:
            (restored,) = conn.execute("SELECT count(*) FROM items").fetchone()
        with cluster.connect("manifest_busy") as conn:
            (live,) = conn.execute("SELECT count(*) FROM items").fetchone()
        assert counted["items"] == restored
        assert live > restored  # rows kept arriving after the snapshot
    finally:
        with cluster.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier("manifest_busy_restored")))


def test_estimate_and_off_row_count_modes(cluster, backupd, backup_dir):
    make_database(cluster, "manifest_modes", rows=300)
    with cluster.connect("manifest_modes") as conn:
        conn.execute("ANALYZE items")
    backupd.ok("backup", extra_env={"DB_NAME": "manifest_modes", "BACKUP_ROW_COUNTS": "estimate"})
    backupd.ok("backup", extra_env={"DB_NAME": "manifest_modes", "BACKUP_ROW_COUNTS": "off"})
    by_mode = {m["row_counts"]: m for _, m in manifests(backup_dir)}
    assert by_mode["estimate"]["tables"] == [{"schema": "public", "name": "items", "rows": 300}]
    assert by_mode["off"]["tables"] == []
