"""``backupd pitr restore --time T --database NAME (--into NEWDB | --over NAME)``: one
database as of T, into the running server, which never stops.

The cluster is rebuilt as of T in a scratch folder (``pitr.restore``, as the drill does;
fetched from a replication target when the local archive cannot reach T), a private
server recovers it (``private_server``: Unix socket only), NAME is dumped from it as a
backup dumps (custom format, through the compression stage) with its roles, and the dump
is restored into the live server by the dump restore's own code: the same roles handling,
the same refusals, ``--over`` by the same safe swap with the same ``--yes`` rules. The
private server is stopped and the scratch folder removed on success, failure or signal.

The scratch dump is not encrypted: it sits beside the unpacked cluster it comes from, in
a folder only the server's user and root can enter, and goes with it."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from backupd import leftovers, pgtools
from backupd.documents import parse
from backupd.dump_formats import inspect_archive, pg_dump_argv, pg_dumpall_globals_argv
from backupd.errors import NotFoundError, RefusedError, RestoreError, UsageError
from backupd.logging import get_logger
from backupd.manifests import DumpManifest
from backupd.naming import make_id, utc_now
from backupd.pitr import clusters, room
from backupd.pitr.private_server import server_binary, serving
from backupd.pitr.restore import restore
from backupd.pitr.staging import checkpoint
from backupd.pitr.store import Base
from backupd.postgres import Server, advisory_lock, count_rows, database_access, database_exists, database_info
from backupd.repository import FORMAT_SUFFIXES, Backup, Repository, iso
from backupd.restoring.builder import restore_tools
from backupd.restoring.swap import (
    RestoreResult,
    check_consent,
    check_destination_options,
    check_replaceable,
    restore_into,
)
from backupd.roles import create_missing_roles
from backupd.stream import Pipeline, stream_to_file
from backupd.transforms import Transform

if TYPE_CHECKING:
    from backupd.pgtools import Tools
    from backupd.settings import Settings

log = get_logger("pitr")

SCRATCH_PREFIX = "backupd-pitr-db-"  # then the pid that made it: a killed run's folder is known


@dataclass
class Restored:
    database: str  # the database as of the target, in the rebuilt cluster
    target: datetime | None
    base: str
    result: RestoreResult
    notes: list[str] = field(default_factory=list)


@dataclass
class _Dump:
    backup: Backup  # the dump as the restore code reads it: a file and its manifest
    roles: str  # the rebuilt cluster's roles (pg_dumpall --globals-only)


def restore_database(settings: Settings, target: datetime | None, database: str, into: str | None,
                     over: str | None, yes: bool, cluster: str | None = None) -> Restored:
    """Everything is checked that can be before the cluster is rebuilt: the destination, the
    consent, the disk room; refusals raise (exit 2) with nothing touched."""
    destination = _check_request(settings, target, database, into, over, yes)
    scratch = _scratch()
    try:
        checked = _check_room(settings, target, database, scratch, cluster)
        built = restore(settings, target, scratch / "data", False, cluster)
        if not checked:
            _check_dump_room(settings, built.base, database, scratch, target)
        with serving(settings, scratch, built.major) as private:
            dump = _dump(settings, private, database, scratch, target)
        shutil.rmtree(scratch / "data")  # stopped: its room goes back before the live server's restore
        checkpoint()
        result = _restore_dump(settings, dump, destination, into, over, yes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        log.info("removed the scratch folder", folder=str(scratch))
    return Restored(database, target, built.base.id, result, built.notes)


def _planned(database: str, target: datetime | None) -> Backup:
    """What the dump will be, for the checks made before it exists."""
    dump_id = _dump_id(database, target)
    planned = parse(DumpManifest, {"id": dump_id, "kind": "database", "database": database, "file": f"{dump_id}.dump",
                                   "format": "custom", "size_bytes": 0, "sha256": "0" * 64})
    return Backup(planned, Path("."))  # its checksum is never read: the checks need only its name


def _check_request(settings: Settings, target: datetime | None, database: str, into: str | None,
                   over: str | None, yes: bool) -> str:
    """The options, then the live server's refusals; returns the destination."""
    if not database:
        raise UsageError("--database needs a database name, and it was given an empty one")
    check_destination_options(into, over)
    destination = into if into is not None else over
    if destination is None:
        raise UsageError("--database NAME restores one database into the running server: give --into NEWDB "
                         "(a new database) or --over NAME --yes (replace one by a safe swap)")
    _check_live(settings, _planned(database, target), destination, into, over, yes)
    return destination


def check_without_touching(settings: Settings, target: datetime | None, database: str, into: str | None,
                           over: str | None, yes: bool, cluster: str | None = None) -> None:
    """What ``--dry-run`` adds to the plan for one database: every refusal the restore
    makes before it rebuilds anything (the options, the live server's, the disk room of
    the scratch folder), with nothing created."""
    _check_request(settings, target, database, into, over, yes)
    _check_room(settings, target, database, Path(tempfile.gettempdir()), cluster)


def _dump_id(database: str, target: datetime | None) -> str:
    return make_id(database, target or utc_now())  # "latest": the moment it is taken


def _check_live(settings: Settings, backup: Backup, destination: str, into: str | None, over: str | None,
                yes: bool) -> bool:
    """The dump restore's refusals (templates, ``postgres``, --into an existing database,
    --over a missing one, no --yes); returns whether the destination exists."""
    with Server.from_settings(settings).wait_connect("postgres") as admin:
        exists = database_exists(admin, destination)
        if exists:
            check_replaceable(admin, destination)
        restore_tools(settings, admin, backup)
    check_consent(settings, backup, destination, exists, into, over, yes, None)
    return exists


def _scratch() -> Path:
    """A new private folder in TMPDIR (as root the server runs as another user, who cannot
    enter BACKUP_DIR's private folders); first, those of runs that were killed go."""
    parent = Path(tempfile.gettempdir())
    for folder in parent.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name[len(SCRATCH_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            log.warning("removing what a killed restore left", folder=str(folder))
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent))


def _check_room(settings: Settings, target: datetime | None, database: str, scratch: Path,
                cluster: str | None) -> bool:
    """Refuse, with the figures, a restore the scratch folder's disk cannot hold, or one no
    installed server can recover; False when the local archive cannot tell (it is fetched
    from a target: checked once fetched)."""
    try:
        store = clusters.choose(settings, cluster)
    except NotFoundError:
        return False
    if (known := store.cluster) is not None:  # before the long rebuild
        server_binary(settings, known.server_major)
    needs = room.estimate(store, target, settings.backup_dir, database, scratch)
    if needs is None:
        return False
    room.check(needs, scratch, database, target)
    return True


def _check_dump_room(settings: Settings, base: Base, database: str, scratch: Path,
                     target: datetime | None) -> None:
    data = room.unpacked_size(base)
    needs = room.Room(0, 0, room.dump_size(settings.backup_dir, database, data), shutil.disk_usage(scratch).free)
    room.check(needs, scratch, database, target)


def _dump(settings: Settings, private: Server, database: str, folder: Path, target: datetime | None) -> _Dump:
    """``database`` from the private server into ``folder``, with the manifest a backup
    writes (its settings, grants, tables and row counts), and the cluster's roles."""
    with private.wait_connect("postgres") as admin:
        if not database_exists(admin, database):
            raise NotFoundError(f"database {database!r} did not exist at {iso(target) or 'the end of the WAL'}; "
                                "nothing was touched")
        tools = pgtools.for_connection(settings.pg_bindir, admin)
        info, access = database_info(admin, database), database_access(admin, database)
    with private.wait_connect(database) as conn:  # nobody writes there: the counts are the dump's
        counts = list(count_rows(conn, settings.backup_row_counts))
    transform = Transform(settings).for_dump("custom", tools)
    file = folder / f"dump{FORMAT_SUFFIXES['custom']}{transform.stream_compression.suffix}"
    argv = pg_dump_argv(tools, "custom", None, settings.backup_lock_wait_timeout, settings.extra_dump_args,
                        compress=transform.pg_dump_compress())
    log.info("dumping the database from the private server", database=database)
    pipeline = Pipeline([("pg_dump", argv), *transform.compressor()], env=private.libpq_env(database))
    stream = stream_to_file(pipeline, file, timeout=settings.backup_timeout, what=f"the dump of {database!r}")
    contents = inspect_archive(file, "custom", tools)
    grants = None if access.grants is None else [grant.to_json() for grant in access.grants]
    manifest = {"kind": "database", "id": _dump_id(database, target), "database": database, "file": file.name,
                "format": "custom", "compression": transform.compression.name, "encryption": None,
                "size_bytes": stream.size, "sha256": stream.sha256, "pg_dump_version": tools.version,
                "database_info": {**info.to_json(), "grants": grants}, "row_counts": settings.backup_row_counts,
                "tables": [c.to_json() for c in counts if contents.holds(c.schema, c.name, c.oid)],
                "globals_id": None}
    return _Dump(Backup(parse(DumpManifest, manifest), folder), _roles(private, tools))


def _roles(private: Server, tools: Tools) -> str:
    """The rebuilt cluster's roles, as a roles dump holds them."""
    pipeline = Pipeline([("pg_dumpall", pg_dumpall_globals_argv(tools))], env=private.libpq_env())
    script = pipeline.output.read()
    pipeline.finish()
    return bytes(script).decode("utf-8")


def _restore_dump(settings: Settings, dump: _Dump, destination: str, into: str | None, over: str | None,
                  yes: bool) -> RestoreResult:
    """As ``backupd restore`` does with a stored dump: checked again (the live server may
    have changed during the rebuild), one restore of a database at a time, the roles it
    lacks created first (existing ones never altered)."""
    exists = _check_live(settings, dump.backup, destination, into, over, yes)
    server = Server.from_settings(settings)
    with advisory_lock(server, "restore", destination) as locked:
        if locked is None:
            raise RefusedError(f"another restore of {destination!r} is running; nothing was touched")
        leftovers.drop_for(locked, destination)
        try:
            created = create_missing_roles(locked, dump.roles).created
        except psycopg.Error as err:
            raise RestoreError(f"creating the missing roles failed: {str(err).strip()}") from None
        result = restore_into(settings, Repository(settings.backup_dir), dump.backup, server, destination, exists, 1,
                          False, False)
    result.roles_created = created
    return result
