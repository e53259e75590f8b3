"""Base backups: ``pg_basebackup`` writes the cluster as one tar on stdout, which streams
through compression and encryption into the repository, like a dump; nothing is staged.
The WAL the backup needs to be consistent is inside the tar (``-X fetch``), so a base
backup restores even without the stream. The server's ``backup_manifest`` (the tar's last
member) is read from a copy of the stream on the way and kept beside it."""

from __future__ import annotations

import fcntl
import json
import os
import re
import tarfile
import threading
import time

from backupd import __version__
from backupd.artifact import Transform
from backupd.errors import BackupdError, DumpError, RefusedError
from backupd.logging import get_logger
from backupd.pgtools import Tools
from backupd.pitr import cluster
from backupd.pitr.store import Base, Store, clear_failure, record_failure
from backupd.postgres import Server
from backupd.repository import iso, make_id, utc_now
from backupd.stream import AtomicFile, Pipeline, stream_to_file, write_json_atomically

log = get_logger("pitr")

_START = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_STOP = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")
SERVER_MANIFEST = "backup_manifest"


class ManifestCatcher:
    """Walks a copy of the tar stream (``tee``) and keeps the member ``backup_manifest``."""

    def __init__(self):
        read_end, self.write_end = os.pipe()
        self.pipe_inode = os.fstat(self.write_end).st_ino
        self.source = os.fdopen(read_end, "rb", buffering=0)
        self.manifest: bytes | None = None
        self.reader = threading.Thread(target=self._walk, name="backup-manifest", daemon=True)
        self.reader.start()

    def tee_stage(self) -> tuple[str, list[str], tuple[int]]:
        return "tee", ["tee", "-p", f"/dev/fd/{self.write_end}"], (self.write_end,)

    def _walk(self) -> None:
        try:
            with tarfile.open(fileobj=self.source, mode="r|", bufsize=1 << 20) as tar:
                for member in tar:
                    if member.name.lstrip("./") == SERVER_MANIFEST and (data := tar.extractfile(member)):
                        self.manifest = data.read()
        except (tarfile.TarError, OSError, ValueError):
            pass
        finally:
            while self.source.read(1 << 20):  # never leave tee blocked on a full pipe
                pass
            self.source.close()

    def abandon(self) -> None:
        """The pipeline failed to start: the write end goes unless tee got (and closed) it, so
        the reader ends. Its number may have been reused since: closed only if still our pipe."""
        try:
            if os.fstat(self.write_end).st_ino == self.pipe_inode:
                os.close(self.write_end)
        except OSError:
            pass

    def result(self) -> bytes | None:
        self.reader.join()
        return self.manifest


def take_base_backup(settings, info: cluster.ClusterInfo, tools: Tools, reason: str = "manual") -> Base:
    """A base backup of the cluster ``info`` describes, now; returns it once its file and
    manifest are in place."""
    server = Server.from_settings(settings)
    store = Store(settings.backup_dir, info.system_identifier)
    store.ensure()
    store.remember_cluster(info.segment_size, info.major)
    with _only_one(store):
        started, clock = utc_now(), time.monotonic()
        backup_id = _free_id(store, started)
        transform = Transform(settings)
        final = store.base_dir / f"{backup_id}{transform.suffix('.tar')}"
        argv = [tools.path("pg_basebackup"), "--pgdata=-", "--format=tar", "--wal-method=fetch",
                "--checkpoint=fast", "--no-password", "--verbose", f"--label=backupd {backup_id}"]
        for stale in store.base_dir.glob(".*.partial"):  # of a base backup that was killed (we hold the lock)
            stale.unlink()
        catcher = ManifestCatcher()
        try:
            try:
                # Its messages in English: the start and end points are read from them.
                pipeline = Pipeline([("pg_basebackup", argv), catcher.tee_stage(), *transform.stages()],
                                    env={**server.libpq_env(), "LC_MESSAGES": "C"}, secrets=server.secrets)
            except BaseException:
                catcher.abandon()
                raise
            producer = pipeline.children[0]
            stream = stream_to_file(pipeline, final, timeout=settings.backup_timeout, what="base backup")
        finally:
            server_manifest = catcher.result()
        start, stop = _START.search(producer.tail), _STOP.search(producer.tail)
        if not (start and stop):
            final.unlink(missing_ok=True)
            raise DumpError(f"pg_basebackup did not report where the backup starts and ends: {producer.tail}")
        base = Base({
            "kind": "pitr-base", "id": backup_id, "reason": reason, "file": final.name,
            "system_identifier": info.system_identifier, "server_major": info.major,
            "wal_segment_size": info.segment_size, "timeline": int(start.group(2)),
            "start_lsn": start.group(1), "stop_lsn": stop.group(1),
            "start_time": iso(started), "stop_time": iso(utc_now()),
            "duration_seconds": round(time.monotonic() - clock, 3), "size": stream.size, "sha256": stream.sha256,
            **transform.manifest_fields(), "tools": tools.describe(), "backupd_version": __version__,
            "server_manifest": f"{backup_id}.{SERVER_MANIFEST}" if server_manifest else None,
        }, store.base_dir)
        if server_manifest:
            with AtomicFile(base.server_manifest_path) as out:
                out.write(server_manifest)
                out.commit()
        write_json_atomically(base.manifest_path, _json(base.manifest))
    log.info("base backup taken", id=backup_id, size=stream.size, seconds=base.manifest["duration_seconds"],
             start_lsn=base.manifest["start_lsn"], stop_lsn=base.manifest["stop_lsn"])
    return base


def run_base_backup(settings, reason: str = "manual") -> Base:
    """``take_base_backup`` of the server's cluster, with its failure recorded for /healthz
    (and cleared by a success): as that cluster's, or as no cluster's when the server could
    not be asked which it is."""
    try:
        with Server.from_settings(settings).wait_connect() as conn:
            info = cluster.cluster_info(conn)
            tools = cluster.pitr_tools(settings.pg_bindir, info.major)
    except BackupdError as err:
        record_failure(settings.backup_dir, "base", str(err), utc_now())
        raise
    try:
        base = take_base_backup(settings, info, tools, reason)
    except BackupdError as err:
        record_failure(settings.backup_dir, "base", str(err), utc_now(), info.system_identifier)
        raise
    clear_failure(settings.backup_dir, "base", info.system_identifier)
    return base


def _free_id(store: Store, when) -> str:
    """``base-<time>``; a second base backup within the same second waits for the next one."""
    while (store.base_dir / f"{(backup_id := make_id('base', when))}.json").exists():
        time.sleep(1)
        when = utc_now()
    return backup_id


class _only_one:
    """One base backup of a cluster at a time, across processes."""

    def __init__(self, store: Store):
        self.path = store.root / ".base.lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RefusedError("a base backup of this cluster is already running") from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def needs_base(store: Store | None) -> bool:
    """No base backup that recovers to the newest WAL: one is due now."""
    return store is None or store.window() is None
