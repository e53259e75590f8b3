"""Class 9 (issue 22): what a killed restore leaves is found and cleaned.

``kill -9`` of a swap restore used to leave ``<db>__restoring_<time>``, a full copy of the
database that nothing reported and the next restore did not drop. It is marked as
backupd's when created: ``list``, ``/status`` and ``/healthz`` (a warning) name it with the
command that drops it, and the next restore of the database drops it. A database that only
looks like one (same name shape, no mark) is never touched nor reported.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime

from psycopg import sql

from backupd.health import evaluate
from backupd.leftovers import LeftoverView
from backupd.repository import Repository
from backupd.settings import load_settings
from tests.integration.helpers import descendants, make_database, start_backupd, wait_for_child
from tests.pg import Cluster

DB = "killed_swap"
LOOK_ALIKE = f"{DB}__restoring_20200101T000000"


def side_databases(cluster: Cluster) -> list[str]:
    with cluster.connect() as admin:
        return [n for (n,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
                                            (f"{DB}\\_\\_restoring\\_%",)).fetchall()]


def test_a_killed_swap_leaves_a_side_database_that_is_reported_then_dropped(cluster, backupd, env, backup_dir):
    make_database(cluster, DB, rows=60000, payload=256)
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(LOOK_ALIKE)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(LOOK_ALIKE)))
    try:
        backup_id = backupd.ok("backup", extra_env={"DB_NAME": DB, "BACKUP_ROW_COUNTS": "off"}).stdout.strip()
        restore = start_backupd(env, "restore", backup_id, "--yes")
        wait_for_child(restore, "pg_restore", with_arg="--dbname")
        for pid in [restore.pid, *descendants(restore.pid)]:
            os.kill(pid, signal.SIGKILL)
        restore.wait(10)
        (side,) = [name for name in side_databases(cluster) if name != LOOK_ALIKE]

        listed = json.loads(backupd.ok("list", "--json").stdout)
        reported = [entry for entry in listed if entry.get("status") == "leftover"]
        assert [entry["database"] for entry in reported] == [side]
        assert reported[0]["command"] == f'DROP DATABASE "{side}";'
        assert side in backupd.ok("list").stdout

        settings = load_settings(env)
        view = LeftoverView(settings)
        view.refresh()
        now = datetime.now(UTC)
        health = evaluate(settings, Repository(backup_dir), now, now, leftovers=view.current())
        assert any(side in warning and "DROP DATABASE" in warning for warning in health.warnings)
        assert not any(LOOK_ALIKE in warning for warning in health.warnings)

        backupd.ok("restore", backup_id, "--yes", "--drop-old", timeout=120)
        assert side_databases(cluster) == [LOOK_ALIKE]
        assert not [e for e in json.loads(backupd.ok("list", "--json").stdout) if e.get("status") == "leftover"]
    finally:
        with cluster.connect() as admin:
            for name in [DB, *side_databases(cluster)]:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
