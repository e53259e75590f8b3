"""Which tools a server gets when its own major is not installed: the nearest newer one,
unless that one's restore scripts set a parameter the server lacks (17's
transaction_timeout on a 16 server: such a dump could never go back into its own server);
none at all when every installed client is older than the server (refused before anything
is written, naming both versions); and a restore never uses a pg_restore older than the
pg_dump that wrote the archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Backupd
from tests.integration.helpers import make_database
from tests.pg import MATRIX, matrix_bindir, remove_cluster, start_cluster

DB = "choice_db"


def server_of(major: int):
    cluster = start_cluster(matrix_bindir(major))
    make_database(cluster, DB, rows=300)
    return cluster


@pytest.fixture(scope="module")
def pg14():
    cluster = server_of(14)
    yield cluster
    remove_cluster(cluster)


@pytest.fixture(scope="module")
def pg16():
    cluster = server_of(16)
    yield cluster
    remove_cluster(cluster)


def tools_folder(tmp_path: Path, *majors: int) -> Path:
    """A PG_BINDIR holding only the given majors."""
    folder = tmp_path / "pg-bindir"
    folder.mkdir()
    for major in majors:
        (folder / str(major)).symlink_to(MATRIX / str(major))
    return folder


@pytest.fixture(scope="module")
def bare_path(tmp_path_factory) -> str:
    """Every program of /usr/bin but Debian's PostgreSQL wrappers: only PG_BINDIR counts here."""
    folder = tmp_path_factory.mktemp("bin")
    for program in Path("/usr/bin").iterdir():
        if not program.name.startswith(("pg_", "psql")):
            (folder / program.name).symlink_to(program)
    return str(folder)


def on(cluster, backup_dir: Path, bindir: Path, path: str) -> Backupd:
    return Backupd({**cluster.env(), "BACKUP_DIR": str(backup_dir), "LOG_FORMAT": "json", "DB_WAIT_TIMEOUT": "5s",
                    "PG_BINDIR": str(bindir), "DB_NAME": DB, "PATH": path})


def manifest_of(backup: dict) -> dict:
    return json.loads((Path(backup["file"]).parent / f"{backup['id']}.json").read_text())


def test_a_server_without_its_own_major_gets_the_nearest_newer_tools(pg14, backup_dir, tmp_path, bare_path):
    backupd = on(pg14, backup_dir, tools_folder(tmp_path, 15, 16, 18), bare_path)
    backupd.ok("backup")
    backup = backupd.listing("--database", DB)[0]
    manifest = manifest_of(backup)
    assert manifest["tools"]["major"] == 15 and manifest["pg_dump_version"].startswith("pg_dump (PostgreSQL) 15.")
    backupd.ok("restore", backup["id"], "--into", "choice_copy")  # back into a server like its own
    with pg14.connect("choice_copy") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 300
    assert backupd.ok("verify", backup["id"]).stdout.startswith(f"{backup['id']}: passed")


def test_newer_tools_whose_restore_the_server_would_reject_are_not_used(pg16, backup_dir, tmp_path, bare_path):
    backupd = on(pg16, backup_dir, tools_folder(tmp_path, 15, 17, 18), bare_path)
    result = backupd("backup")
    assert result.returncode == 1
    assert "PostgreSQL 16 server" in result.stderr and "transaction_timeout" in result.stderr, result.stderr
    assert "postgresql-client-16" in result.stderr
    assert backupd.listing() == []


def test_a_server_newer_than_every_client_is_refused_and_nothing_is_written(pg16, backup_dir, tmp_path, bare_path):
    backupd = on(pg16, backup_dir, tools_folder(tmp_path, 14, 15), bare_path)
    result = backupd("backup")
    assert result.returncode == 1
    message = result.stderr
    assert "PostgreSQL 16 server" in message and "the newest is 15" in message, message
    assert "postgresql-client-16" in message
    written = [p for p in backup_dir.rglob("*") if p.is_file() and not p.name.startswith(".")] \
        if backup_dir.exists() else []
    assert written == []
    assert backupd.listing() == []
    # The failure is recorded where /healthz, /status and the metrics see it.
    assert "PostgreSQL 16 server" in json.loads((backup_dir / DB / ".last-failure.json").read_text())["error"]


def test_a_restore_never_uses_a_pg_restore_older_than_the_archive(pg14, backup_dir, tmp_path, bare_path):
    newer = on(pg14, backup_dir, tools_folder(tmp_path, 16), bare_path)
    newer.ok("backup")
    backup = newer.listing("--database", DB)[0]
    assert manifest_of(backup)["tools"]["major"] == 16
    (tmp_path / "older").mkdir()
    for major in (14, 15):
        (tmp_path / "older" / str(major)).symlink_to(MATRIX / str(major))
    older = on(pg14, backup_dir, tmp_path / "older", bare_path)
    result = older("restore", backup["id"], "--into", "never_created")
    assert result.returncode == 1
    assert "dump made by pg_dump 16" in result.stderr, result.stderr
    with pg14.connect() as admin:
        assert not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'never_created'").fetchone()
