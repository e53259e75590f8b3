"""Class 2: one id space per kind. A database may have any name, and its backups never
share an id with the roles dumps or with another database's; every id ``backup`` prints
works as printed with restore, verify, pin and unpin."""

from __future__ import annotations

import tempfile
from pathlib import Path

import psycopg
from hypothesis import HealthCheck, example, given, settings as hypothesis_settings, strategies as st
from psycopg import sql

from backupd.actions.backup import run_backup
from backupd.restoring.source import resolve_source
from backupd.repository import Repository, is_globals_id
from backupd.settings import load_settings

# Names that once collided with backupd's own (`_globals`), escaped a folder (`/`, `..`),
# broke percent-encoding (`%`), or need quoting everywhere.
AWKWARD_NAMES = ["_globals", "roles", "globals", "a/b", "../up", "100%", "%2F", "it's \"quoted\"", "Ünïcødé 数据",
                 "UPPER", ".hidden", "-", "shop-20261121T020000Z", "with space", "x" * 63, "é" * 31 + "x"]


def _create(cluster, name: str) -> None:
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with cluster.connect(name) as conn:
        conn.execute("CREATE TABLE whose (name text)")
        conn.execute("INSERT INTO whose VALUES (%s)", (name,))


def _whose(cluster, dbname: str) -> str:
    with cluster.connect(dbname) as conn:
        return conn.execute("SELECT name FROM whose").fetchone()[0]


def test_every_printed_id_works_with_restore_verify_pin_and_unpin(cluster, backupd, backup_dir):
    for name in AWKWARD_NAMES:
        _create(cluster, name)
    database_args = [arg for name in AWKWARD_NAMES for arg in ("--database", name)]
    ids = backupd.ok("backup", *database_args).stdout.split("\n")[:-1]
    assert len(ids) == len(AWKWARD_NAMES) == len(set(ids))
    listed = {row["id"]: row for row in backupd.listing()}
    roles_dumps = [p for p in (backup_dir / "_globals").iterdir() if p.name.endswith(".json")]
    assert len(roles_dumps) == 1 and is_globals_id(roles_dumps[0].stem)

    for index, (name, backup_id) in enumerate(zip(AWKWARD_NAMES, ids)):
        assert listed[backup_id]["database"] == name and listed[backup_id]["status"] == "ok"
        assert backup_id != roles_dumps[0].stem
        copy = f"restored_{index}"
        with cluster.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(copy)))
        backupd.ok("restore", backup_id, "--into", copy)
        assert _whose(cluster, copy) == name  # this database's data, not another's
        verified = backupd.ok("verify", backup_id).stdout
        assert f"{backup_id}: passed" in verified
        assert backupd.ok("pin", backup_id).stdout.strip() == f"{backup_id} pinned"
        assert backupd.listing("--database", name)[0]["pinned"] is True
        backupd.ok("unpin", backup_id)
        assert backupd.listing("--database", name)[0]["pinned"] is False

    # A database called _globals does not make the run's roles dump unreadable.
    with cluster.connect() as admin:
        admin.execute("DROP DATABASE IF EXISTS restored_globals_again")
    restored = backupd.ok("restore", "latest", "--database", "_globals", "--into", "restored_globals_again")
    assert "restored" in restored.stdout
    assert _whose(cluster, "restored_globals_again") == "_globals"


def test_a_roles_dump_id_is_refused_where_a_database_backup_is_meant(cluster, backupd, backup_dir):
    _create(cluster, "plain_db")
    backupd.ok("backup", "--database", "plain_db")
    roles_id = next(p.stem for p in (backup_dir / "_globals").iterdir() if p.name.endswith(".json"))
    result = backupd("restore", roles_id, "--into", "never_created")
    assert result.returncode == 2 and "globals" in result.stderr


# Any name PostgreSQL accepts (no control characters: pg_dumpall refuses newlines in names)
# of at most 63 bytes, the server's limit.
database_names = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=63,
).filter(lambda n: len(n.encode()) <= 63 and n not in ("postgres", "template0", "template1")
         and not n.startswith("backupd_verify_"))


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(database_names, min_size=1, max_size=3, unique=True))
@example(names=["_globals", "globals"])
@example(names=["a/b", "a%2Fb"])
@example(names=["shop", "shop-20261121T020000Z"])
def test_name_to_backup_to_id_to_lookup_is_the_same_backup_and_never_another(cluster, names):
    """name -> backup -> id -> lookup -> the same backup, for any names backed up together."""
    with tempfile.TemporaryDirectory(prefix="backupd-ids-") as folder:
        env = {**cluster.env(), "BACKUP_DIR": str(Path(folder) / "backups"), "LOG_LEVEL": "error"}
        settings = load_settings(env)
        for name in names:
            _create(cluster, name)
        result = run_backup(settings, databases=names)
        assert result.ok, [o.error for o in result.outcomes]
        repo = Repository(settings.backup_dir)
        ids = [o.backup_id for o in result.outcomes]
        all_ids = ids + [result.globals.backup_id]
        assert len(set(all_ids)) == len(all_ids)
        for name, backup_id in zip(names, ids):
            found = resolve_source(repo, backup_id, None, settings)
            assert (found.id, found.kind, found.database) == (backup_id, "database", name)
            assert found.path.is_file() and found.path.parent == repo.folder_for(name)
            assert repo.latest(name).id == backup_id
        roles = repo.find(result.globals.backup_id, kind="globals")
        assert roles.kind == "globals"
        for backup_id in ids:
            try:
                repo.find(backup_id, kind="globals")
            except Exception as err:  # a database backup is never taken for a roles dump
                assert "no backup" in str(err)
            else:
                raise AssertionError(f"{backup_id} was found as a roles dump")
    with cluster.connect() as admin:
        for name in names:
            try:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            except psycopg.Error:
                pass
