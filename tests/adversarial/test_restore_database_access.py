"""Class 8 (issue 22): a restored database is as closed as the one backed up.

Database-level grants (CONNECT, CREATE, TEMPORARY for roles and PUBLIC) and the connection
limit come back in every mode, as ``pg_dump --create`` carries them. A database that only
one role may connect to used to come back open to every role, and its limit was lost.
"""

from __future__ import annotations

from psycopg import sql

from tests.pg import Cluster

DB, OTHER, NEW, ROLE = "access_src", "access_other", "access_new", "access_app"
GRANTS = "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, " \
         "a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s"


def access(cluster: Cluster, name: str) -> tuple[set, int]:
    with cluster.connect() as admin:
        grants = set(admin.execute(GRANTS, (name,)).fetchall())
        (limit,) = admin.execute("SELECT datconnlimit FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return grants, limit


def run(cluster: Cluster, *statements: str) -> None:
    with cluster.connect() as admin:
        for statement in statements:
            admin.execute(statement)


def reset(cluster: Cluster) -> None:
    with cluster.connect() as admin:
        for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'access\\_%'").fetchall():
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_grants_and_connection_limit_come_back_in_every_mode(cluster, backupd):
    reset(cluster)
    run(cluster, f"DROP ROLE IF EXISTS {ROLE}", f"CREATE ROLE {ROLE} LOGIN", f"CREATE DATABASE {DB}",
        f"REVOKE ALL ON DATABASE {DB} FROM PUBLIC", f"GRANT CONNECT ON DATABASE {DB} TO {ROLE}",
        f"GRANT TEMPORARY ON DATABASE {DB} TO {ROLE} WITH GRANT OPTION", f"ALTER DATABASE {DB} CONNECTION LIMIT 7")
    expected = access(cluster, DB)
    assert ("PUBLIC", "CONNECT", False) not in expected[0] and expected[1] == 7
    backup_id = backupd.ok("backup", extra_env={"DB_NAME": DB}).stdout.strip()
    try:
        backupd.ok("restore", backup_id, "--into", NEW)
        assert access(cluster, NEW) == expected, "--into"

        run(cluster, f"DROP DATABASE {DB}")
        backupd.ok("restore", backup_id)
        assert access(cluster, DB) == expected, "its own name, gone"

        loosen = (f"GRANT ALL ON DATABASE {DB} TO PUBLIC", f"ALTER DATABASE {DB} CONNECTION LIMIT -1")
        run(cluster, *loosen)
        backupd.ok("restore", backup_id, "--yes", "--drop-old")
        assert access(cluster, DB) == expected, "swap"

        run(cluster, *loosen)
        backupd.ok("restore", backup_id, "--yes", "--in-place")
        assert access(cluster, DB) == expected, "in place"

        run(cluster, f"CREATE DATABASE {OTHER}")
        backupd.ok("restore", backup_id, "--over", OTHER, "--yes", "--drop-old")
        assert access(cluster, OTHER) == expected, "--over another database"
    finally:
        reset(cluster)
