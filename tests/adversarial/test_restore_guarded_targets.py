"""Class 2 (issue 22): a restore never lands on a database that must not be replaced.

``--over template1`` used to replace the template, and every later ``CREATE DATABASE`` (and
restore) inherited the backup's tables. Templates (by name or by ``datistemplate``) and
``postgres`` are refused with exit 2 in every mode, and nothing is touched.
"""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.pg import Cluster

SOURCE, USER_TEMPLATE = "guard_src", "guard_user_template"


def tables_of(cluster: Cluster, name: str) -> list[str]:
    with cluster.connect(name) as conn:
        return [t for (t,) in conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'guard%'").fetchall()]


@pytest.fixture
def source_id(cluster, backupd):
    with cluster.connect() as admin:
        for name in (SOURCE, USER_TEMPLATE):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true").format(sql.Identifier(USER_TEMPLATE)))
    with cluster.connect(SOURCE) as conn:
        conn.execute("CREATE TABLE guard_orders AS SELECT g AS id FROM generate_series(1, 50) g")
    yield backupd.ok("backup", extra_env={"DB_NAME": SOURCE}).stdout.strip()
    with cluster.connect() as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(USER_TEMPLATE)))
        for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s OR datname LIKE %s "
                                     "OR datname IN (%s, %s)", ("%__restoring_%", "%__before_restore_%",
                                                                SOURCE, USER_TEMPLATE)).fetchall():
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.parametrize("target", ["template1", "template0", "postgres", USER_TEMPLATE])
@pytest.mark.parametrize("mode", [["--yes"], ["--yes", "--in-place"], ["--yes", "--drop-old"]],
                         ids=["swap", "in-place", "drop-old"])
def test_templates_and_postgres_are_never_replaced(cluster, backupd, source_id, target, mode):
    with cluster.connect() as admin:
        before = admin.execute("SELECT datname, oid FROM pg_database ORDER BY 1").fetchall()
    result = backupd("restore", source_id, "--over", target, *mode, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and target in result.stderr, result.stderr
    assert "nothing was touched" in result.stderr
    with cluster.connect() as admin:
        assert admin.execute("SELECT datname, oid FROM pg_database ORDER BY 1").fetchall() == before
    if target != "template0":  # template0 does not accept connections
        assert tables_of(cluster, target) == []
