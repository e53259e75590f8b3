"""Restore creates the roles that are missing from the globals dump, with their
attributes, settings and memberships, and never alters a role that exists."""

from __future__ import annotations

import pytest
from psycopg import sql

ROLES = ("rr_owner", "rr_group", "rr_member", "rr_existing")


def _drop_all(cluster):
    with cluster.connect() as admin:
        for db in ("rolesdb", "rolesdb_restored"):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        for role in ROLES:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def roles_db(cluster):
    _drop_all(cluster)
    with cluster.connect() as admin:
        admin.execute("CREATE ROLE rr_owner LOGIN CREATEDB PASSWORD 'owner-secret'")
        admin.execute("CREATE ROLE rr_group NOLOGIN")
        admin.execute("CREATE ROLE rr_member LOGIN IN ROLE rr_group")
        admin.execute("ALTER ROLE rr_member SET work_mem = '4MB'")
        admin.execute("CREATE ROLE rr_existing LOGIN PASSWORD 'before'")
        admin.execute("CREATE DATABASE rolesdb OWNER rr_owner")
    with cluster.connect("rolesdb") as conn:
        conn.execute("SET ROLE rr_owner")
        conn.execute("CREATE TABLE owned (id int)")
        conn.execute("INSERT INTO owned VALUES (1), (2)")
        conn.execute("GRANT SELECT ON owned TO rr_group, rr_existing")
    yield
    _drop_all(cluster)


def role_facts(conn, role):
    return conn.execute("SELECT a.rolcanlogin, a.rolcreatedb, a.rolpassword, r.rolconfig "
                        "FROM pg_authid a JOIN pg_roles r ON r.oid = a.oid WHERE a.rolname = %s", (role,)).fetchone()


def test_missing_roles_are_created_and_existing_roles_are_never_altered(cluster, backupd, roles_db):
    backupd.ok("backup", extra_env={"DB_NAME": "rolesdb"})
    with cluster.connect() as admin:
        before = {role: role_facts(admin, role) for role in ROLES}
        admin.execute("DROP DATABASE rolesdb")
        for role in ("rr_member", "rr_group", "rr_owner"):
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.execute("ALTER ROLE rr_existing PASSWORD 'after'")
        existing_after = role_facts(admin, "rr_existing")

    backupd.ok("restore", "latest", "--database", "rolesdb", "--into", "rolesdb_restored")

    with cluster.connect() as admin:
        for role in ("rr_owner", "rr_group", "rr_member"):
            assert role_facts(admin, role) == before[role], role
        assert role_facts(admin, "rr_existing") == existing_after  # the live password survives
        member_of = admin.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = 'rr_member'").fetchall()
        assert member_of == [("rr_group",)]
        owner = admin.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'rolesdb_restored'").fetchone()
        assert owner == ("rr_owner",)
    with cluster.connect("rolesdb_restored") as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'owned'").fetchone() == ("rr_owner",)
        grants = conn.execute("SELECT grantee FROM information_schema.role_table_grants "
                              "WHERE table_name = 'owned' AND privilege_type = 'SELECT' ORDER BY 1").fetchall()
        assert grants == [("rr_existing",), ("rr_group",), ("rr_owner",)]


def test_restore_to_the_original_name_when_that_database_is_gone(cluster, backupd, roles_db):
    backupd.ok("backup", extra_env={"DB_NAME": "rolesdb"})
    with cluster.connect() as admin:
        admin.execute("DROP DATABASE rolesdb")
    result = backupd.ok("restore", "latest")
    assert "into rolesdb" in result.stdout
    with cluster.connect("rolesdb") as conn:
        assert conn.execute("SELECT count(*) FROM owned").fetchone() == (2,)
