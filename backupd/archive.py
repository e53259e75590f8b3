"""Dump formats: how pg_dump writes each one, how to read back what an archive holds
(its table of contents), and which tool restores it.

Every stored artifact is one file: ``custom``, ``tar`` and ``plain`` stream
straight from pg_dump; ``directory`` is dumped to a staging folder (so pg_dump
can run ``-j`` workers) and packed with tar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from backupd.errors import DumpError
from backupd.process import run
from backupd.stream import Compression, Pipeline

# A TABLE DATA line of ``pg_restore -l``: "<dumpId>; <tableoid> <oid> TABLE DATA <schema> <name> <owner>".
# For table data pg_dump stores the table's own oid, which identifies it without
# parsing names that may hold spaces.
_TOC_TABLE_DATA = re.compile(rb"^\d+; \d+ (\d+) TABLE DATA ", re.MULTILINE)
_PLAIN_TABLE_DATA = re.compile(rb"^-- Data for Name: (.*); Type: TABLE DATA; Schema: (.*?); Owner: ", re.MULTILINE)
_PLAIN_COMPLETE = b"-- PostgreSQL database dump complete"
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class ArchiveContents:
    """Which tables have their data in an archive: by oid (archive formats) or by name (plain)."""

    oids: frozenset[int] | None = None
    names: frozenset[tuple[str, str]] | None = None

    def holds(self, schema: str, name: str, oid: int) -> bool:
        if self.oids is not None:
            return oid in self.oids
        return (schema, name) in (self.names or frozenset())


def tool_major(tool: str) -> tuple[int, str]:
    """(major, full version text) of pg_dump / pg_restore / psql."""
    code, out, err = run(tool, [tool, "--version"])
    if code != 0:
        raise DumpError(f"{tool} --version failed: {err}")
    text = out.decode().strip()
    match = _VERSION.search(text.rsplit(")", 1)[-1]) or _VERSION.search(text)
    return int(match.group(1)), text


def pg_dump_argv(fmt: str, snapshot: str | None, lock_wait_seconds: float, extra: list[str],
                 jobs: int = 1, directory: Path | None = None) -> list[str]:
    argv = ["pg_dump", f"--format={fmt}", "--no-password", f"--lock-wait-timeout={int(lock_wait_seconds * 1000)}"]
    if fmt in ("custom", "directory"):
        argv.append("--compress=0")  # compression happens once, outside, in parallel
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    if fmt == "directory":
        argv += [f"--jobs={jobs}", f"--file={directory}"]
    return argv + list(extra)


def pg_dumpall_globals_argv() -> list[str]:
    return ["pg_dumpall", "--globals-only", "--no-password"]


def _decompressing(path: Path, compression: Compression, consumer: tuple[str, list[str]], env=None,
                   secrets=()) -> Pipeline:
    """A pipeline that feeds the decompressed file to ``consumer``'s stdin."""
    stages = []
    decompress = compression.decompress_argv()
    if decompress:
        stages.append((decompress[0], decompress))
    stages.append(consumer)
    with open(path, "rb") as source:
        return Pipeline(stages, env=env, secrets=secrets, stdin=source)


def inspect_archive(path: Path, fmt: str, compression: Compression) -> ArchiveContents:
    """Read back what the stored archive holds; DumpError when its structure is not complete."""
    if fmt == "plain":
        pattern = rb"^-- (Data for Name: .*; Type: TABLE DATA;|PostgreSQL database dump complete)"
        pipeline = _decompressing(path, compression, ("grep", ["grep", "-a", "-E", pattern.decode()]))
        output = pipeline.output.read()
        try:
            pipeline.finish()
        except DumpError:
            if not output:  # grep exits 1 when nothing matched: the marker is missing
                raise DumpError(f"{path.name} is not a complete plain dump: the end marker is missing") from None
            raise
        if _PLAIN_COMPLETE not in output:
            raise DumpError(f"{path.name} is not a complete plain dump: the end marker is missing")
        names = frozenset((m.group(2).decode("utf-8", "replace"), m.group(1).decode("utf-8", "replace"))
                          for m in _PLAIN_TABLE_DATA.finditer(output))
        return ArchiveContents(names=names)
    if fmt == "directory":
        code, output, err = run("pg_restore", ["pg_restore", "--list", str(path)])
        if code != 0:
            raise DumpError(f"the dump's table of contents cannot be read: {err}")
        return ArchiveContents(oids=frozenset(int(m) for m in _TOC_TABLE_DATA.findall(output)))
    pipeline = _decompressing(path, compression, ("pg_restore", ["pg_restore", "--list", f"--format={fmt}"]))
    output = pipeline.output.read()
    try:
        pipeline.finish(ignore_sigpipe_upstream=True)
    except DumpError as err:
        raise DumpError(f"the dump's table of contents cannot be read: {err}") from None
    return ArchiveContents(oids=frozenset(int(m) for m in _TOC_TABLE_DATA.findall(output)))


def dbname_conninfo(name: str) -> str:
    """``dbname='...'``: pg_restore -d reads any value holding ``=`` as a connection string,
    so the name is always given in that form, quoted as libpq expects."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def restore_consumer(fmt: str, dbname: str, jobs: int = 1, source: Path | None = None,
                     no_owner: bool = False) -> tuple[str, list[str]]:
    """The command that restores ``fmt`` into ``dbname`` (psql reads it from PGDATABASE).
    ``source`` is a file or folder; without it the archive comes on stdin. ``no_owner``
    leaves ownership and grants out (verification needs no roles)."""
    if fmt == "plain":
        return "psql", ["psql", "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
                        "--single-transaction", "--output=/dev/null", "--file=-"]
    argv = ["pg_restore", "--exit-on-error", "--no-password", f"--format={fmt}", f"--dbname={dbname_conninfo(dbname)}"]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    if jobs > 1 and source is not None:
        argv.append(f"--jobs={jobs}")
    elif jobs <= 1:
        argv.append("--single-transaction")
    if source is not None:
        argv.append(str(source))
    return "pg_restore", argv


def run_consumer_on_stdin(path: Path, compression: Compression, consumer, env, secrets) -> None:
    pipeline = _decompressing(path, compression, consumer, env=env, secrets=secrets)
    pipeline.finish()


def unpack_directory_archive(path: Path, compression: Compression, into: Path) -> None:
    """Unpack a stored directory-format dump into ``into`` for ``pg_restore -j``."""
    into.mkdir(mode=0o700)
    pipeline = _decompressing(path, compression, ("tar", ["tar", "-x", "-f", "-", "-C", str(into)]))
    pipeline.finish()


def decompress_to(path: Path, compression: Compression, into: Path) -> None:
    """Write the decompressed archive to ``into`` (for ``pg_restore -j`` on a custom dump).
    The decompressor writes straight to the file: no bytes pass through Python."""
    argv = compression.decompress_argv()
    with open(path, "rb") as source, open(into, "wb") as out:
        Pipeline([(argv[0], argv)], stdin=source, stdout=out).finish()
