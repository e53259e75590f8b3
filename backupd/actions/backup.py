"""``backupd backup``: dump each database (and the roles) into the repository.

Given the settings and optionally the databases, a label and the scheduled time;
returns a ``BackupResult`` with one outcome per database. A database that fails
does not stop the others; the caller decides the exit code from ``result.ok``.
Raises ``ConnectionFailed`` when the server cannot be reached at all.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from backupd import __version__, cancel, failures, origin, pgtools
from backupd.dump_formats import (
    ArchiveContents,
    StreamInspector,
    inspect_archive,
    pg_dump_argv,
    pg_dumpall_globals_argv,
)
from backupd.errors import Aborted, BackupdError, DumpError, UsageError
from backupd.logging import get_logger
from backupd.pgtools import Tools
from backupd.postgres import (
    DatabaseAccess,
    ExportedSnapshot,
    Server,
    TableCount,
    advisory_lock,
    count_rows,
    database_access,
    database_info,
    list_databases,
    one,
    server_version,
    stranded_by_a_swap,
)
from backupd.repository import FORMAT_SUFFIXES, GLOBALS, Repository, iso, pending_path, storage_error, utc_now
from backupd.stream import Pipeline, StreamResult, stream_to_file
from backupd.transforms import Transform, commit_manifest

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.backup")

ProgressFactory = Callable[[str], Callable[[int], None] | None]


@dataclass
class Outcome:
    database: str
    ok: bool
    backup_id: str | None = None
    error: str | None = None
    size: int = 0
    seconds: float = 0.0
    path: Path | None = None
    skipped: str | None = None  # why nothing was done (another daemon has it, or it exists)


@dataclass
class BackupResult:
    outcomes: list[Outcome] = field(default_factory=list)
    globals: Outcome | None = None
    # Set by what follows a backup (``coordinator``): backups deleted by the retention that
    # follows each successful one, and why pinning or that retention failed.
    pruned: int = 0
    finish_error: str | None = None

    @property
    def ok(self) -> bool:
        return (all(o.ok for o in self.outcomes) and (self.globals is None or self.globals.ok)
                and self.finish_error is None)


@dataclass
class _Run:
    """What every database's backup in one run shares."""

    settings: Settings
    server: Server
    repo: Repository
    transform: Transform
    server_version: str
    tools: Tools
    deadline: float
    progress: ProgressFactory | None
    origin: dict[str, Any] = field(default_factory=dict)  # {"origin": ...}: the server, this instance, the host

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Aborted(f"backup exceeded BACKUP_TIMEOUT ({self.settings.backup_timeout:g}s)")
        return left

    def progress_for(self, name: str) -> Callable[[int], None] | None:
        return self.progress(name) if self.progress else None

    def manifest(self, kind: str, backup_id: str, label: str | None, scheduled_for: datetime | None,
                 started: datetime, clock: float, fmt: str, final: Path, stream: StreamResult,
                 transform: Transform | None = None) -> dict[str, Any]:
        """The fields every manifest of this run has."""
        return {
            "kind": kind, "id": backup_id, "label": label, "scheduled_for": iso(scheduled_for),
            "started": iso(started), "finished": iso(utc_now()), "duration_seconds": round(time.monotonic() - clock, 3),
            "format": fmt, **(transform or self.transform).manifest_fields(),
            "file": final.name, "size_bytes": stream.size, "sha256": stream.sha256,
            "server": {"host": self.settings.db_host, "port": self.settings.db_port, "version": self.server_version},
            "pg_dump_version": self.tools.version, "tools": self.tools.describe(), "backupd_version": __version__,
            **self.origin,
        }


def run_backup(settings: Settings, databases: list[str] | None = None, label: str | None = None,
               scheduled_for: datetime | None = None, progress: ProgressFactory | None = None) -> BackupResult:
    """A scheduled run (``scheduled_for`` set) skips a database whose backup for that time
    exists or is running in another daemon; a manual run waits for the other one instead.
    What follows (pins, retention, replication) is the caller's: ``coordinator``."""
    server = Server.from_settings(settings)
    repo = Repository(settings.backup_dir)
    try:
        repo.clean_unfinished()
        with server.wait_connect("postgres") as conn:
            _, server_text = server_version(conn)
            names = list(databases or settings.databases or list_databases(conn, settings.db_exclude))
            if databases:  # typed on the command line: a typo is refused, never remembered as a failure
                existing = {name for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall()}
                if missing := [name for name in databases if name not in existing]:
                    raise UsageError(f"no such database on the server: {', '.join(map(repr, missing))}")
            superuser = one(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))[0]
            stranded = stranded_by_a_swap(conn)
            # A server no installed pg_dump can serve safely is refused here, before anything is written.
            tools = pgtools.for_connection(settings.pg_bindir, conn)
            origin_fields = origin.manifest_fields(settings, conn)
    except UsageError:
        raise
    except BackupdError as err:
        if not cancel.requested():
            _record_run_failure(repo, databases or settings.databases, str(err))
        raise
    log.info("client tools chosen", server=server_text, **tools.describe())
    run = _Run(settings, server, repo, Transform(settings), server_text, tools,
               time.monotonic() + settings.backup_timeout, progress, origin_fields)
    result = BackupResult()
    # The roles dump runs beside the first database dump, not before it: it is small, and
    # only the manifests need its id, when they are written at the end of each dump.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="globals") as side:
        roles = side.submit(_guarded, repo, GLOBALS, "globals",
                            lambda: _backup_globals(run, superuser, label, scheduled_for)) \
            if settings.backup_globals else None

        def roles_outcome() -> Outcome | None:
            try:
                return roles.result() if roles else None
            except Exception as err:  # a bug, not a failed dump: the databases' backups still stand
                log.error("the roles dump failed", error=str(err))
                return Outcome(database=GLOBALS, ok=False, error=str(err))

        def globals_id() -> str | None:
            outcome = roles_outcome()
            return outcome.backup_id if outcome and outcome.ok else None

        with ThreadPoolExecutor(max_workers=settings.backup_concurrency, thread_name_prefix="backup") as pool:
            result.outcomes = list(pool.map(
                lambda name: _guarded(repo, name, "database",
                                      lambda: _backup_database(run, name, label, scheduled_for, globals_id)),
                [name for name in names if name not in dict(stranded)]))
        result.globals = roles_outcome()
    result.outcomes += [_guarded(repo, live, "database", partial(_stranded, live, now_named))
                        for live, now_named in stranded]
    failures.clear(repo.root, failures.database(None))  # the server answered: a run-level failure is over
    return result


def _stranded(live: str, now_named: str) -> Outcome:
    """A failure that says how to put back a database an interrupted restore left aside."""
    def quoted(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    raise DumpError(
        f"database {live!r} is gone: an interrupted restore left it as {now_named!r}, with connections off. "
        f"To put it back: ALTER DATABASE {quoted(now_named)} RENAME TO {quoted(live)}; "
        f"ALTER DATABASE {quoted(live)} ALLOW_CONNECTIONS true;")


def _record_run_failure(repo: Repository, names: Sequence[str] | None, error: str) -> None:
    """The server (or the repository) could not be reached: every database this run was for failed."""
    try:
        known = sorted({b.database for b in repo.backups()})
    except BackupdError:
        known = []
    chosen: list[str | None] = [*(names or known)] or [None]  # None: the run as a whole
    for name in chosen:
        failures.record(repo.root, failures.database(name), error)


def _guarded(repo: Repository, name: str, kind: str, work: Callable[[], Outcome]) -> Outcome:
    """Turn one backup's failure into an outcome, so the others go on; remember the
    failure beside the database's backups until its next success."""
    started = time.monotonic()
    try:
        try:
            outcome = work()
        except psycopg.Error as err:  # e.g. the server restarted in the middle
            raise DumpError(f"the database connection failed: {str(err).strip()}") from None
        except OSError as err:  # the repository: a full disk, a read-only mount, no permission
            raise storage_error(err, f"write the backup of {name!r}") from None
    except BackupdError as err:
        seconds = time.monotonic() - started
        if stop := cancel.requested():  # an abort (a signal, a shutdown) is not the database's failure
            log.warning("backup not finished: nothing of it is kept", database=name, reason=stop)
        else:
            log.error("backup failed", database=name, error=str(err), duration_seconds=round(seconds, 3))
            failures.record(repo.root, failures.database(name, kind), str(err))
        return Outcome(database=name, ok=False, error=str(err), seconds=seconds)
    if outcome.skipped:
        log.info("backup skipped", database=name, reason=outcome.skipped)
        return outcome
    failures.clear(repo.root, failures.database(name, kind))
    log.info("backup finished", database=name, id=outcome.backup_id, duration_seconds=round(outcome.seconds, 3),
             size_bytes=outcome.size)
    return outcome


class _RowCounter(threading.Thread):
    """Counts rows on the snapshot's own connection while pg_dump streams, so the
    counts cost no extra wall time and see exactly the dumped rows.

    It is registered with ``cancel`` like a pipeline: the counting can outlast pg_dump
    (a big table, a table waiting for a lock), and a SIGTERM then must stop it at once,
    not after the count or the forced exit, which would leave the finished file without
    its manifest."""

    def __init__(self, snapshot: ExportedSnapshot, mode: str):
        super().__init__(name="row-counts", daemon=True)
        self.snapshot, self.mode = snapshot, mode
        self.counts: list[TableCount] = []
        self.error: BaseException | None = None
        self.abort_reason: str | None = None

    def start(self) -> None:
        cancel.register(self)
        super().start()

    def run(self) -> None:
        try:
            self.counts = list(count_rows(self.snapshot.conn, self.mode))
        except BaseException as err:  # reported by result()
            self.error = err

    def abort(self, reason: str) -> None:
        """From any thread (a signal, a shutdown): stop the query that counts."""
        self.abort_reason = self.abort_reason or reason
        self._cancel_query()

    def _cancel_query(self) -> None:
        if self.is_alive():
            try:
                self.snapshot.conn.cancel_safe()
            except psycopg.Error:
                pass  # the connection is already gone, and the count with it

    def cancel(self) -> None:
        self._cancel_query()
        if self.is_alive():
            self.join(10)
        cancel.unregister(self)

    def result(self, timeout: float) -> list[TableCount]:
        self.join(timeout)
        if self.is_alive():
            self.cancel()
            raise Aborted("row counts did not finish within BACKUP_TIMEOUT")
        cancel.unregister(self)
        if self.abort_reason:
            raise Aborted(self.abort_reason)
        if self.error:
            raise DumpError(f"counting rows failed: {str(self.error).strip()}") from None
        return self.counts


def _backup_database(run: _Run, name: str, label: str | None, scheduled_for: datetime | None,
                     globals_id: Callable[[], str | None]) -> Outcome:
    settings, repo, server = run.settings, run.repo, run.server
    folder = repo.folder_for(name)
    started, clock = utc_now(), time.monotonic()
    # A scheduled run gives way to another daemon; a manual one waits its turn.
    wait = 0.0 if scheduled_for else max(run.remaining(), 0.0)
    with advisory_lock(server, "backup", name, wait) as admin, repo.lock(folder, "backup"):
        if admin is None:
            return Outcome(database=name, ok=True, skipped="another backupd is backing up this database")
        if scheduled_for and any(iso(b.doc.scheduled_for) == iso(scheduled_for) for b in repo.backups(name)):
            return Outcome(database=name, ok=True, skipped=f"the backup scheduled for {iso(scheduled_for)} exists")
        info, access = database_info(admin, name), database_access(admin, name)
        _check_room(repo, admin, name, folder)
        backup_id, _ = repo.reserve_id(name)
        fmt = settings.backup_format
        transform = run.transform.for_dump(fmt, run.tools)
        final = folder / repo.file_name(backup_id, transform.suffix(FORMAT_SUFFIXES[fmt]))
        pending = pending_path(final)  # where the file waits for its manifest
        try:
            with ExportedSnapshot(server, name, settings.backup_lock_wait_timeout) as snapshot:
                counter = _RowCounter(snapshot, settings.backup_row_counts)
                counter.start()
                try:
                    stream, contents = _dump(run, admin, transform, name, fmt, snapshot.snapshot_id, pending)
                except BaseException:
                    counter.cancel()
                    raise
                counts = counter.result(max(run.remaining(), 1.0))
            if contents is None:
                contents = inspect_archive(pending, fmt, run.tools)
            tables = [c.to_json() for c in counts if contents.holds(c.schema, c.name, c.oid)]
        except BaseException:
            pending.unlink(missing_ok=True)
            raise
        commit_manifest(repo, folder, final, {
            **run.manifest("database", backup_id, label, scheduled_for, started, clock, fmt, final, stream,
                           transform),
            "database": name, "database_info": {**info.to_json(), "grants": _grants_json(access)},
            "row_counts": settings.backup_row_counts, "tables": tables, "globals_id": globals_id(),
        })
    return Outcome(database=name, ok=True, backup_id=backup_id, size=stream.size,
                   seconds=time.monotonic() - clock, path=final)


def _grants_json(access: DatabaseAccess) -> list[dict[str, Any]] | None:
    """The database-level grants as the manifest keeps them; None for the defaults (no ACL)."""
    return None if access.grants is None else [grant.to_json() for grant in access.grants]


def _dump(run: _Run, admin: psycopg.Connection, transform: Transform, name: str, fmt: str, snapshot_id: str,
          final: Path) -> tuple[StreamResult, ArchiveContents | None]:
    """Dump into ``final``; returns the stream result, and the archive's contents when
    they were read on the way (directory format) or None."""
    settings, env, secrets = run.settings, run.server.libpq_env(name), run.server.secrets
    dump_argv = partial(pg_dump_argv, run.tools, fmt, snapshot_id, settings.backup_lock_wait_timeout,
                        settings.extra_dump_args, compress=transform.pg_dump_compress())
    progress = run.progress_for(name)
    if fmt != "directory" and not transform.encrypting:
        pipeline = Pipeline([("pg_dump", dump_argv()), *transform.compressor()], env=env, secrets=secrets)
        return stream_to_file(pipeline, final, progress, timeout=run.remaining()), None
    if fmt != "directory":
        # The sidecar may not hold the identity, so the stored file cannot be read back:
        # the table of contents is read from a copy of the stream before encryption.
        inspector = StreamInspector(fmt, transform.stream_compression, run.tools)
        try:
            pipeline = Pipeline([("pg_dump", dump_argv()), *transform.compressor(), inspector.tee_stage(),
                                 *transform.encryptor()], env=env, secrets=secrets)
            stream = stream_to_file(pipeline, final, progress, timeout=run.remaining())
        except BaseException:
            inspector.kill()
            raise
        return stream, inspector.result(final.name)
    # pg_dump -j writes a folder; it is staged beside the backup, then packed into one file.
    staging = final.with_name(f".{final.name}.staging")
    _check_room_to_stage(admin, name, final.parent, transform.inside)
    try:
        dumper = Pipeline([("pg_dump", dump_argv(jobs=settings.backup_jobs, directory=staging))],
                          env=env, secrets=secrets, stdout=None)
        timer = threading.Timer(run.remaining(), dumper.abort, args=("backup exceeded BACKUP_TIMEOUT",))
        timer.start()
        try:
            dumper.finish()
        finally:
            timer.cancel()
        contents = inspect_archive(staging, "directory", run.tools)
        packer = Pipeline([("tar", ["tar", "-c", "-f", "-", "-C", str(staging), "."]), *transform.stages()])
        return stream_to_file(packer, final, progress, timeout=run.remaining()), contents
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_room(repo: Repository, admin: psycopg.Connection, name: str, folder: Path) -> None:
    """Refuse early a backup that clearly cannot fit: the size of the last backup must be free,
    or for a first one a quarter of the data the database holds beyond an empty database
    (its size on disk counts the system catalogs, about 7 MB, and data compresses)."""
    from psycopg import sql

    previous = repo.backups(name)
    if previous:
        needed, basis = previous[0].size, f"the last backup took {previous[0].size} bytes"
    else:
        (size,) = one(admin.execute(sql.SQL("SELECT greatest(pg_database_size({}) - pg_database_size('template0'), 0)")
                                    .format(sql.Literal(name))))
        needed, basis = size // 4, f"the database holds about {size} bytes of data"
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DumpError(f"not enough free space in {folder} for a backup of {name!r}: about {needed} bytes are "
                        f"needed ({basis}), {free} are free")


def _check_room_to_stage(admin: psycopg.Connection, name: str, folder: Path, compressed: bool) -> None:
    """The staged folder and the file packed from it are on one disk until the folder goes:
    uncompressed, the folder alone takes about the database's size; compressed by pg_dump,
    both together take about half of it (a quarter each, as for a first backup)."""
    from psycopg import sql

    (size,) = one(admin.execute(sql.SQL("SELECT pg_database_size({})").format(sql.Literal(name))))
    needed = size // 2 if compressed else size
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DumpError(f"not enough free space in {folder} to stage a directory-format dump of {name!r}: "
                        f"about {needed} bytes are needed (the database takes {size}), {free} are free")


def _backup_globals(run: _Run, superuser: bool, label: str | None, scheduled_for: datetime | None) -> Outcome:
    repo = run.repo
    folder = repo.folder_for(GLOBALS, "globals")
    started, clock = utc_now(), time.monotonic()
    with repo.lock(folder, "globals backup"):
        # Two daemons on one repository: the second finds the first one's roles dump for
        # this scheduled time and links its backups to it instead of writing another.
        existing = scheduled_for and next((b for b in repo.backups(kind="globals")
                                           if iso(b.doc.scheduled_for) == iso(scheduled_for)), None)
        if existing:
            return Outcome(database=GLOBALS, ok=True, backup_id=existing.id, path=existing.path,
                           skipped=f"the roles dump scheduled for {iso(scheduled_for)} exists")
        backup_id, _ = repo.reserve_id(GLOBALS, "globals")
        final = folder / repo.file_name(backup_id, run.transform.suffix(".sql"))
        argv = pg_dumpall_globals_argv(run.tools)
        if not superuser:
            argv.append("--no-role-passwords")  # pg_authid is readable by superusers only
        pipeline = Pipeline([("pg_dumpall", argv), *run.transform.stages()], env=run.server.libpq_env(),
                            secrets=run.server.secrets)
        stream = stream_to_file(pipeline, pending_path(final), timeout=run.remaining(), what="globals backup")
        commit_manifest(repo, folder, final, {
            **run.manifest("globals", backup_id, label, scheduled_for, started, clock, "plain", final, stream),
            "database": None, "role_passwords": superuser,
        })
    return Outcome(database=GLOBALS, ok=True, backup_id=backup_id, size=stream.size,
                   seconds=time.monotonic() - clock, path=final)

