"""Class 9: the documented manual restore works as written.

The shell blocks of docs/storage-layout.md's "Restoring by hand" section (each marked
with ``<!-- manual-restore: NAME -->``) are run verbatim with bash against a real
backup that backupd just made, after replacing only the example values that the
page names as such: the backup folder, the database, the times, the new database
and the age key.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from psycopg import sql

from tests.conftest import REPO, Backupd
from tests.pg import MATRIX, Cluster, matrix_bindir, remove_cluster, start_cluster

OWNER = "manual_restore_owner"
BLOCK = re.compile(r"<!-- manual-restore: (?P<name>[\w-]+) -->\s*```sh\n(?P<body>.*?)```", re.DOTALL)
# The page's example values, longest first where one contains another.
PLACEHOLDER = re.compile(r"/backups\b|globals@20261121T020000Z|20261121T020000Z|\bshop_restored\b|\bshop\b|"
                         r"\bkey\.txt\b")


def readme_blocks() -> dict[str, str]:
    text = (REPO / "docs" / "storage-layout.md").read_text(encoding="utf-8")
    section = text[text.index("## Restoring by hand"):]
    end = section.find("\n## ", 1)  # the next section, or the page's end
    section = section if end < 0 else section[:end]
    return {match["name"]: match["body"] for match in BLOCK.finditer(section)}


def test_every_manual_restore_block_is_run_by_this_module():
    assert set(readme_blocks()) == {"custom", "custom-inside", "encrypted", "plain", "directory", "checksum"}


def with_real_values(block: str, values: dict[str, str]) -> str:
    for placeholder in ("/backups", "shop", "20261121T020000Z"):
        assert placeholder in block, f"the documented block no longer uses the example value {placeholder!r}"
    return PLACEHOLDER.sub(lambda match: values[match.group(0)], block)


def run_block(cluster: Cluster, block: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """As a person at a shell would, with only the libpq variables for the connection, and
    the client tools of the server's own major first on PATH."""
    env = {"PATH": f"{cluster.bindir}:{os.environ['PATH']}", "HOME": str(tmp_path), "LANG": "C.UTF-8", "PGHOST": cluster.host,
           "PGPORT": str(cluster.port), "PGUSER": cluster.user, "PGPASSWORD": cluster.password}
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"the documented commands failed:\n{block}\n{result.stderr}"
    return result


def execute(cluster: Cluster, statement: sql.Composable, dbname: str = "postgres") -> list[tuple]:
    with cluster.connect(dbname) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


def drop(cluster: Cluster, *names: str) -> None:
    for name in names:
        execute(cluster, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def role_exists(cluster: Cluster) -> bool:
    return bool(execute(cluster, sql.SQL("SELECT 1 FROM pg_roles WHERE rolname = {}").format(sql.Literal(OWNER))))


def make_source(cluster: Cluster, name: str) -> None:
    """A database whose table belongs to a role of its own, so the data needs the role back."""
    drop(cluster, name, f"{name}_restored")
    if not role_exists(cluster):
        execute(cluster, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(OWNER)))
    execute(cluster, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with cluster.connect(name) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 250) g")
        conn.execute(sql.SQL("ALTER TABLE orders OWNER TO {}").format(sql.Identifier(OWNER)))


@pytest.fixture
def age_key(tmp_path) -> tuple[Path, str]:
    key = tmp_path / "backupd-key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout
    return key, public.strip()


def example_values(backup_dir: Path, database: str, backup_id: str, manifest: dict, key: str) -> dict[str, str]:
    """The page's example values, and what stands for each in this test."""
    return {"/backups": str(backup_dir), "shop": database, "shop_restored": f"{database}_restored",
            "20261121T020000Z": backup_id.rsplit("-", 1)[1], "globals@20261121T020000Z": manifest["globals_id"],
            "key.txt": key}


def assert_restored(cluster: Cluster, restored: str) -> None:
    """The data and its owner (a role that had to come back first) are there."""
    assert execute(cluster, sql.SQL("SELECT count(*), max(note) FROM orders"), restored) == [(250, "order 99")]
    owner = execute(cluster, sql.SQL("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'"), restored)
    assert owner == [(OWNER,)]


VARIANTS = {  # block name: (backupd settings, whether the block restores the roles too)
    "custom": ({}, True),
    "encrypted": ({"BACKUP_ENCRYPTION_RECIPIENTS": "from the age_key fixture"}, True),
    "plain": ({"BACKUP_FORMAT": "plain", "BACKUP_COMPRESSION": "gzip"}, False),
    # gzip: pg_dump compresses the files itself, on this server's major too (zstd only from 16 on).
    "directory": ({"BACKUP_FORMAT": "directory", "BACKUP_COMPRESSION": "gzip"}, False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_documented_manual_restore_brings_back_the_data_and_the_roles(cluster, backupd, backup_dir, tmp_path,
                                                                        age_key, variant):
    settings, restores_roles = VARIANTS[variant]
    if "BACKUP_ENCRYPTION_RECIPIENTS" in settings:
        settings = {**settings, "BACKUP_ENCRYPTION_RECIPIENTS": age_key[1]}
    database = f"manual_{variant}"
    make_source(cluster, database)
    try:
        backup_id = backupd.ok("backup", extra_env={"DB_NAME": database, **settings}).stdout.strip()
        manifest = json.loads((backup_dir / database / f"{backup_id}.json").read_text())
        drop(cluster, database)  # the server lost it
        if restores_roles:
            execute(cluster, sql.SQL("DROP ROLE {}").format(sql.Identifier(OWNER)))  # and the role with it
        values = example_values(backup_dir, database, backup_id, manifest, str(age_key[0]))
        result = run_block(cluster, with_real_values(readme_blocks()[variant], values), tmp_path)
        if variant == "custom":  # the page says the manifest names the roles dump
            assert manifest["globals_id"] in result.stdout
        assert role_exists(cluster)
        assert_restored(cluster, f"{database}_restored")
    finally:
        drop(cluster, database, f"{database}_restored")


def test_the_documented_checksum_check_shows_the_same_hash_twice(cluster, backupd, backup_dir, tmp_path):
    database = "manual_checksum"
    make_source(cluster, database)
    try:
        backup_id = backupd.ok("backup", extra_env={"DB_NAME": database}).stdout.strip()
        manifest = json.loads((backup_dir / database / f"{backup_id}.json").read_text())
        values = {"/backups": str(backup_dir), "shop": database, "20261121T020000Z": backup_id.rsplit("-", 1)[1]}
        result = run_block(cluster, with_real_values(readme_blocks()["checksum"], values), tmp_path)
        assert result.stdout.count(manifest["sha256"]) == 2, result.stdout
    finally:
        drop(cluster, database)


@pytest.fixture(scope="module")
def pg17():
    cluster = start_cluster(matrix_bindir(17))
    yield cluster
    remove_cluster(cluster)


def test_the_documented_restore_of_an_archive_compressed_by_pg_dump_works(pg17, backup_dir, tmp_path):
    """A PostgreSQL 17 server: pg_dump compresses inside, the file is a plain ``.dump``."""
    backupd = Backupd({**pg17.env(), "BACKUP_DIR": str(backup_dir), "LOG_FORMAT": "json", "PG_BINDIR": str(MATRIX)})
    database = "manual_inside"
    make_source(pg17, database)
    try:
        backup_id = backupd.ok("backup", extra_env={"DB_NAME": database}).stdout.strip()
        manifest = json.loads((backup_dir / database / f"{backup_id}.json").read_text())
        assert manifest["file"] == f"{backup_id}.dump" and manifest["compressed_by"] == "pg_dump"
        drop(pg17, database)
        execute(pg17, sql.SQL("DROP ROLE {}").format(sql.Identifier(OWNER)))
        values = example_values(backup_dir, database, backup_id, manifest, "unused")
        run_block(pg17, with_real_values(readme_blocks()["custom-inside"], values), tmp_path)
        assert_restored(pg17, f"{database}_restored")
    finally:
        drop(pg17, database, f"{database}_restored")
