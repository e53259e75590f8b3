"""Dump formats: how pg_dump writes each one, how to read back what an archive holds
(its table of contents), and which tool restores it.

Every stored artifact is one file: ``custom``, ``tar`` and ``plain`` stream
straight from pg_dump; ``directory`` is dumped to a staging folder (so pg_dump
can run ``-j`` workers) and packed with tar.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeAlias

from backupd import encryption
from backupd.errors import DumpError
from backupd.pgtools import Tools
from backupd.process import run
from backupd.repository import PENDING_SUFFIX
from backupd.stream import Compression, Pipeline, compression_for_suffix

# A stage of a reading pipeline: (name, argv), or with the descriptors it inherits (age's identity).
ReadStage: TypeAlias = tuple[str, list[str]] | tuple[str, list[str], tuple[int, ...]]

# A TABLE DATA line of ``pg_restore -l``: "<dumpId>; <tableoid> <oid> TABLE DATA <schema> <name> <owner>".
# For table data pg_dump stores the table's own oid, which identifies it without
# parsing names that may hold spaces.
_TOC_TABLE_DATA = re.compile(rb"^\d+; \d+ (\d+) TABLE DATA ", re.MULTILINE)
_PLAIN_TABLE_DATA = re.compile(rb"^-- Data for Name: (.*); Type: TABLE DATA; Schema: (.*?); Owner: ", re.MULTILINE)
_PLAIN_COMPLETE = b"-- PostgreSQL database dump complete"


@dataclass(frozen=True)
class ArchiveContents:
    """Which tables have their data in an archive: by oid (archive formats) or by name (plain)."""

    oids: frozenset[int] | None = None
    names: frozenset[tuple[str, str]] | None = None

    def holds(self, schema: str, name: str, oid: int) -> bool:
        if self.oids is not None:
            return oid in self.oids
        return (schema, name) in (self.names or frozenset())


def pg_dump_argv(tools: Tools, fmt: str, snapshot: str | None, lock_wait_seconds: float, extra: list[str],
                 jobs: int = 1, directory: Path | None = None, compress: str = "0") -> list[str]:
    """``compress``: pg_dump's own compression (custom and directory formats); by default
    none, because the stage after pg_dump compresses in parallel."""
    argv = [tools.path("pg_dump"), f"--format={fmt}", "--no-password",
            f"--lock-wait-timeout={int(lock_wait_seconds * 1000)}"]
    if fmt in ("custom", "directory"):
        argv.append(f"--compress={compress}")
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    if fmt == "directory":
        argv += [f"--jobs={jobs}", f"--file={directory}"]
    return argv + list(extra)


def pg_dumpall_globals_argv(tools: Tools) -> list[str]:
    return [tools.path("pg_dumpall"), "--globals-only", "--no-password"]


def stored_transforms(name: str) -> tuple[bool, Compression, str]:
    """What a stored file's name says it went through: (encrypted, compression, the name
    without those suffixes). ``x.dump.zst.age`` -> (True, zstd, ``x.dump``). A file still
    waiting for its manifest (``.x.dump.zst.pending``) is read by the name it will have."""
    if name.startswith(".") and name.endswith(PENDING_SUFFIX):
        name = name[1:].removesuffix(PENDING_SUFFIX)
    encrypted = name.endswith(encryption.SUFFIX)
    base = name.removesuffix(encryption.SUFFIX)
    compression = compression_for_suffix(base)
    return encrypted, compression, base.removesuffix(compression.suffix) if compression.suffix else base


def is_transformed(path: Path) -> bool:
    """Whether the file must be decrypted or decompressed before a tool can read it."""
    encrypted, compression, _ = stored_transforms(path.name)
    return encrypted or compression.decompress_argv() is not None


def reader_stages(path: Path, identity: str | None = None) -> list[ReadStage]:
    """The stages that turn a stored file back into the dump: decrypt (``.age``), then decompress."""
    name = path.name
    encrypted, compression, _ = stored_transforms(name)
    stages: list[ReadStage] = []
    if encrypted:
        stages.append(encryption.decrypt_stage(identity, name))
    if argv := compression.decompress_argv():
        stages.append((argv[0], argv))
    return stages


def _reading(path: Path, identity: str | None, consumer: tuple[str, list[str]], env: dict[str, str] | None = None,
             secrets: Sequence[str] = (), stdout: int | IO[bytes] | None = subprocess.PIPE) -> Pipeline:
    """A pipeline that feeds the stored file, decrypted and decompressed, to ``consumer``'s stdin."""
    with open(path, "rb") as source:
        return Pipeline([*reader_stages(path, identity), consumer], env=env, secrets=secrets, stdin=source,
                        stdout=stdout)


def _inspector_stage(fmt: str, tools: Tools) -> tuple[str, list[str]]:
    if fmt == "plain":
        pattern = r"^-- (Data for Name: .*; Type: TABLE DATA;|PostgreSQL database dump complete)"
        return "grep", ["grep", "-a", "-E", pattern]
    return "pg_restore", [tools.path("pg_restore"), "--list", f"--format={fmt}"]


def _contents(fmt: str, output: bytes, name: str) -> ArchiveContents:
    if fmt == "plain":
        if _PLAIN_COMPLETE not in output:
            raise DumpError(f"{name} is not a complete plain dump: the end marker is missing")
        names = frozenset((m.group(2).decode("utf-8", "replace"), m.group(1).decode("utf-8", "replace"))
                          for m in _PLAIN_TABLE_DATA.finditer(output))
        return ArchiveContents(names=names)
    return ArchiveContents(oids=frozenset(int(m) for m in _TOC_TABLE_DATA.findall(output)))


def _finish_inspection(pipeline: Pipeline, fmt: str, output: bytes, name: str) -> ArchiveContents:
    try:
        pipeline.finish(ignore_sigpipe_upstream=True)
    except DumpError as err:
        if fmt == "plain" and not output:  # grep exits 1 when nothing matched: the marker is missing
            raise DumpError(f"{name} is not a complete plain dump: the end marker is missing") from None
        raise DumpError(f"the dump's table of contents cannot be read: {err}") from None
    return _contents(fmt, output, name)


def inspect_archive(path: Path, fmt: str, tools: Tools, identity: str | None = None) -> ArchiveContents:
    """Read back what the stored archive (or a staged directory) holds; DumpError when its
    structure is not complete."""
    if fmt == "directory" and path.is_dir():
        code, output, err = run("pg_restore", [tools.path("pg_restore"), "--list", str(path)])
        if code != 0:
            raise DumpError(f"the dump's table of contents cannot be read: {err}")
        return _contents(fmt, output, path.name)
    pipeline = _reading(path, identity, _inspector_stage(fmt, tools))
    output = pipeline.output.read()
    return _finish_inspection(pipeline, fmt, output, path.name)


class StreamInspector:
    """Reads the table of contents from a copy of the compressed stream while it is being
    written (``tee``), for encrypted backups whose stored file the sidecar cannot decrypt."""

    def __init__(self, fmt: str, compression: Compression, tools: Tools):
        self.fmt = fmt
        read_end, self.write_end = os.pipe()
        stages = [(argv[0], argv)] if (argv := compression.decompress_argv()) else []
        with os.fdopen(read_end, "rb") as source:
            self.pipeline = Pipeline([*stages, _inspector_stage(fmt, tools)], stdin=source)
        self.output = b""
        self.reader = threading.Thread(target=self._drain, name="inspector", daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        self.output = self.pipeline.output.read()

    def tee_stage(self) -> tuple[str, list[str], tuple[int]]:
        """Copies the stream to the inspector; ``-p`` goes on when the inspector stops reading."""
        return "tee", ["tee", "-p", f"/dev/fd/{self.write_end}"], (self.write_end,)

    def result(self, name: str) -> ArchiveContents:
        self.reader.join()
        return _finish_inspection(self.pipeline, self.fmt, self.output, name)

    def kill(self) -> None:
        self.pipeline.kill()


def dbname_conninfo(name: str) -> str:
    """``dbname='...'``: pg_restore -d reads any value holding ``=`` as a connection string,
    so the name is always given in that form, quoted as libpq expects."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def restore_consumer(tools: Tools, fmt: str, dbname: str, jobs: int = 1, source: Path | None = None,
                     no_owner: bool = False) -> tuple[str, list[str]]:
    """The command that restores ``fmt`` into ``dbname`` (psql reads it from PGDATABASE).
    ``source`` is a file or folder; without it the archive comes on stdin. ``no_owner``
    leaves ownership and grants out (verification needs no roles)."""
    if fmt == "plain":
        return "psql", [tools.path("psql"), "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
                        "--single-transaction", "--output=/dev/null", "--file=-"]
    argv = [tools.path("pg_restore"), "--exit-on-error", "--no-password", f"--format={fmt}",
            f"--dbname={dbname_conninfo(dbname)}"]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    if jobs > 1 and source is not None:
        argv.append(f"--jobs={jobs}")
    elif jobs <= 1:
        argv.append("--single-transaction")
    if source is not None:
        argv.append(str(source))
    return "pg_restore", argv


def run_consumer_on_stdin(path: Path, identity: str | None, consumer: tuple[str, list[str]], env: dict[str, str],
                          secrets: Sequence[str]) -> None:
    _reading(path, identity, consumer, env=env, secrets=secrets).finish()


def unpack_directory_archive(path: Path, identity: str | None, into: Path) -> None:
    """Unpack a stored directory-format dump into ``into`` for ``pg_restore -j``."""
    into.mkdir(mode=0o700)
    _reading(path, identity, ("tar", ["tar", "-x", "-f", "-", "-C", str(into)])).finish()


def decompress_to(path: Path, identity: str | None, into: Path) -> None:
    """Write the plain archive to ``into`` (for ``pg_restore -j`` on a custom dump).
    The last stage writes straight to the file: no bytes pass through Python."""
    stages = reader_stages(path, identity)
    with open(path, "rb") as source, open(into, "wb") as out:
        Pipeline(stages, stdin=source, stdout=out).finish()


def read_small(path: Path, identity: str | None) -> bytes:
    """A small artifact (the roles dump) decrypted and decompressed into memory."""
    stages = reader_stages(path, identity)
    if not stages:
        return path.read_bytes()
    with open(path, "rb") as source:
        pipeline = Pipeline(stages, stdin=source)
    data = pipeline.output.read()
    pipeline.finish()
    return data
