"""Base backups: ``pg_basebackup`` writes the cluster as one tar on stdout, which streams
through compression and encryption into the repository, like a dump; nothing is staged.
The WAL the backup needs to be consistent is inside the tar (``-X fetch``), so a base
backup restores even without the stream. The server's ``backup_manifest`` (the tar's last
member) and that WAL are kept aside on the way by a stage of the one stream (tarrelay):
the manifest is stored beside the backup, and the WAL says when the backup became
consistent, to the microsecond (``consistent_time``), which is where its window starts."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backupd import __version__, failures
from backupd.documents import dump_json, parse
from backupd.errors import BackupdError, DumpError, RefusedError
from backupd.logging import get_logger
from backupd.pgtools import Tools
from backupd.pitr import cluster, waldump
from backupd.pitr.incremental import incremental_parent
from backupd.pitr.records import BaseManifest
from backupd.pitr.store import Base, Store
from backupd.postgres import Server
from backupd.repository import iso, make_id, utc_now
from backupd.stream import AtomicFile, Pipeline, stream_to_file, write_json_atomically
from backupd.transforms import Transform

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("pitr")

_START = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_STOP = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")
SERVER_MANIFEST = "backup_manifest"
SCRATCH_PREFIX = ".base-scratch-"


def _relay_stage(scratch: Path) -> tuple[str, list[str]]:
    """The stage that keeps ``backup_manifest`` and the backup's WAL aside (tarrelay)."""
    return "tar-relay", [sys.executable, "-m", "backupd.pitr.tarrelay", str(scratch)]


def consistent_time(settings: Settings, major: int, scratch: Path, start_lsn: str, stop_lsn: str) -> datetime:
    """The first moment a recovery from this base backup may stop at, to the microsecond:
    the newest commit in its own WAL before its end (the server's clock, as recovery
    targets are), else now (nothing committed while it ran: any later moment is fine;
    not cut down to the second, which could be before a commit it holds)."""
    tool = waldump.tool(settings.pg_bindir, major)
    newest = None
    if tool is not None and (scratch / "pg_wal").is_dir():
        try:
            newest = waldump.newest_commit_before(tool, scratch / "pg_wal", start_lsn, stop_lsn)
        except BackupdError as err:
            log.warning("the base backup's own WAL could not be read: its end is taken as now", error=str(err))
    return newest or utc_now()


def take_base_backup(settings: Settings, info: cluster.ClusterInfo, tools: Tools, reason: str = "manual",
                     parent: Base | None = None) -> Base:
    """A base backup of the cluster ``info`` describes, now; returns it once its file and
    manifest are in place. With ``parent``: an incremental one against it (its server's
    ``backup_manifest`` says which blocks it already holds)."""
    server = Server.from_settings(settings)
    store = Store(settings.backup_dir, info.system_identifier)
    store.ensure()
    store.remember_cluster(info.segment_size, info.major)
    with _only_one(store):
        backup_id, started = _free_second(store)
        clock = time.monotonic()
        transform = Transform(settings)
        final = store.base_dir / f"{backup_id}{transform.suffix('.tar')}"
        argv = [tools.path("pg_basebackup"), "--pgdata=-", "--format=tar", "--wal-method=fetch",
                "--checkpoint=fast", "--no-password", "--verbose", f"--label=backupd {backup_id}"]
        if parent is not None:
            argv.append(f"--incremental={parent.server_manifest_path}")
        _remove_stale(store)
        with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=store.root) as folder:
            scratch = Path(folder)
            # Its messages in English: the start and end points are read from them.
            pipeline = Pipeline([("pg_basebackup", argv), _relay_stage(scratch), *transform.stages()],
                                env={**server.libpq_env(), "LC_MESSAGES": "C"}, secrets=server.secrets)
            producer = pipeline.children[0]
            stream = stream_to_file(pipeline, final, timeout=settings.backup_timeout, what="base backup")
            start, stop = _START.search(producer.tail), _STOP.search(producer.tail)
            if not (start and stop):
                final.unlink(missing_ok=True)
                raise DumpError(f"pg_basebackup did not report where the backup starts and ends: {producer.tail}")
            consistent = consistent_time(settings, info.major, scratch, start.group(1), stop.group(1))
            manifest_file = scratch / SERVER_MANIFEST
            server_manifest = manifest_file.read_bytes() if manifest_file.is_file() else None
        base = Base(parse(BaseManifest, {
            "kind": "pitr-base", "id": backup_id, "reason": reason, "file": final.name,
            "system_identifier": info.system_identifier, "server_major": info.major,
            "wal_segment_size": info.segment_size, "timeline": int(start.group(2)),
            "start_lsn": start.group(1), "stop_lsn": stop.group(1),
            "start_time": iso(started), "stop_time": iso(utc_now()), "consistent_time": consistent.isoformat(),
            "duration_seconds": round(time.monotonic() - clock, 3), "size": stream.size, "sha256": stream.sha256,
            **transform.manifest_fields(), "tools": tools.describe(), "backupd_version": __version__,
            "server_manifest": f"{backup_id}.{SERVER_MANIFEST}" if server_manifest else None,
            "parent": parent.id if parent is not None else None,
        }), store.base_dir)
        _keep_manifests(base, server_manifest)
    log.info("base backup taken", id=backup_id, size=stream.size, seconds=base.doc.duration_seconds,
             incremental_on=base.doc.parent, start_lsn=base.doc.start_lsn, stop_lsn=base.doc.stop_lsn)
    return base


def _keep_manifests(base: Base, server_manifest: bytes | None) -> None:
    """The server's manifest, then backupd's, which makes it a base backup: written last. A
    full disk here leaves no file of it behind (its tar is removed too)."""
    try:
        if server_manifest:
            with AtomicFile(base.server_manifest_path) as out:
                out.write(server_manifest)
                out.commit()
        write_json_atomically(base.manifest_path, dump_json(base.doc))
    except OSError as err:
        for path in (base.manifest_path, base.server_manifest_path, base.path):
            path.unlink(missing_ok=True)
        raise DumpError(f"writing base backup {base.id}'s manifest failed: {err.strerror or err}") from None


def _remove_stale(store: Store) -> None:
    """What a base backup that was killed left (we hold the lock: none is running)."""
    for stale in store.base_dir.glob(".*.partial"):
        stale.unlink()
    for scratch in store.root.glob(f"{SCRATCH_PREFIX}*"):
        shutil.rmtree(scratch, ignore_errors=True)


def run_base_backup(settings: Settings, reason: str = "manual", incremental: bool = False) -> Base:
    """``take_base_backup`` of the server's cluster, with its failure recorded for /healthz
    (and cleared by a success): as that cluster's, or as no cluster's when the server could
    not be asked which it is. ``incremental``: against the newest base backup when the
    server can (see ``incremental.incremental_parent``), else a full one."""
    try:
        with Server.from_settings(settings).wait_connect() as conn:
            info = cluster.cluster_info(conn)
            tools = cluster.pitr_tools(settings.pg_bindir, info.major)
            parent = incremental_parent(conn, info, Store(settings.backup_dir, info.system_identifier)) \
                if incremental else None
    except BackupdError as err:
        failures.record(settings.backup_dir, failures.pitr("base", None), str(err), utc_now())
        raise
    try:
        base = _take(settings, info, tools, reason, parent)
    except BackupdError as err:
        failures.record(settings.backup_dir, failures.pitr("base", info.system_identifier), str(err), utc_now())
        raise
    failures.clear(settings.backup_dir, failures.pitr("base", info.system_identifier))
    return base


def _take(settings: Settings, info: cluster.ClusterInfo, tools: Tools, reason: str, parent: Base | None) -> Base:
    """An incremental base backup the server cannot take (its WAL summaries do not reach back
    to the parent's start: ``summarize_wal`` was off then, or they were removed after
    ``wal_summary_keep_time``) is taken as a full one, which starts a new chain."""
    if parent is None:
        return take_base_backup(settings, info, tools, reason)
    try:
        return take_base_backup(settings, info, tools, reason, parent)
    except DumpError as err:
        if "summar" not in str(err).lower():
            raise
        log.warning("the server cannot take an incremental base backup against the newest one: taking a "
                    "full one", parent=parent.id, error=str(err))
        return take_base_backup(settings, info, tools, reason)


def _free_second(store: Store) -> tuple[str, datetime]:
    """``base-<time>`` and its start time, a second of its own: times are kept to the
    second, so a second base backup within the same second, or one that follows a gap
    recorded in this second, waits for the next one. Else two would tie for which is newer,
    and a base backup taken because of a gap would count as begun before it (unusable)."""
    gaps = {gap.time for gap in store.gaps()}
    when = utc_now()
    while (store.base_dir / f"{(backup_id := make_id('base', when))}.json").exists() or when in gaps:
        time.sleep(1)
        when = utc_now()
    return backup_id, when


class _only_one:
    """One base backup of a cluster at a time, across processes."""

    def __init__(self, store: Store):
        self.path = store.root / ".base.lock"

    def __enter__(self) -> _only_one:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RefusedError("a base backup of this cluster is already running") from None
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)


def needs_base(store: Store | None) -> bool:
    """No base backup that recovers to the newest WAL: one is due now."""
    return store is None or store.window() is None
