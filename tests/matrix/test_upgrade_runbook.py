"""The upgrade runbook of docs/restore.md, done for real: a stack on PostgreSQL 15 moves to 17.
A pinned backup before the upgrade, the new server, a restore (roles first, from the
roles dump), a verify on the new server. The same BACKUP_DIR and image serve both."""

from __future__ import annotations

import pytest

from tests.conftest import Backupd
from tests.content import AWKWARD_DB, READER_ROLE, create_awkward_database, fingerprint
from tests.pg import MATRIX, matrix_bindir, remove_cluster, start_cluster


@pytest.fixture
def old_and_new():
    old = start_cluster(matrix_bindir(15))
    new = start_cluster(matrix_bindir(17))
    yield old, new
    remove_cluster(old)
    remove_cluster(new)


def test_a_stack_moves_from_postgres_15_to_17_with_a_pinned_backup_restore_and_verify(old_and_new, backup_dir):
    old, new = old_and_new
    common = {"BACKUP_DIR": str(backup_dir), "LOG_FORMAT": "json", "DB_WAIT_TIMEOUT": "5s", "PG_BINDIR": str(MATRIX)}
    on_old, on_new = Backupd({**old.env(), **common}), Backupd({**new.env(), **common})
    create_awkward_database(old)
    before = fingerprint(old, AWKWARD_DB)

    # 1. A pinned backup before the upgrade (the app is stopped: nothing changes after it).
    on_old.ok("backup", "--label", "pre-upgrade", "--pin")  # every database, and the roles
    pre = on_old.listing("--database", AWKWARD_DB)[0]
    assert pre["pinned"] and pre["label"] == "pre-upgrade"

    # 2. The new server (postgres:17 with an empty volume), 3. the restore into it.
    on_new.ok("restore", "latest", "--database", AWKWARD_DB, "--yes")
    after = fingerprint(new, AWKWARD_DB)
    for part in ("data", "sequences", "large_objects", "settings", "database"):
        assert after[part] == before[part], part
    with new.connect() as admin:
        assert admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)).fetchone()
        assert admin.execute("SHOW server_version_num").fetchone()[0].startswith("17")

    # 4. The restore drill on the new server passes for the pre-upgrade backup.
    verified = on_new.ok("verify", "latest", "--database", AWKWARD_DB)
    assert verified.stdout.startswith(f"{pre['id']}: passed"), verified.stdout
    assert on_new.listing("--database", AWKWARD_DB)[0]["verified"] == "passed"

    # The first backup on the new server is made with its own tools; the pinned one stays.
    on_new.ok("backup", "--label", "post-upgrade", extra_env={"DB_NAME": AWKWARD_DB})
    rows = on_new.listing("--database", AWKWARD_DB)
    assert [r["label"] for r in rows[:2]] == ["post-upgrade", "pre-upgrade"]
    on_new.ok("unpin", pre["id"])
