"""The byte pipeline: producer -> compressor (-> encryptor) -> sha256 -> atomic file.

The bytes move between child processes through OS pipes; Python only reads the
last stage's output in large blocks, hashes it (hashlib releases the GIL on big
blocks) and writes it. Nothing is staged, so memory stays flat at any size.
A non-zero exit or a kill of any stage fails the whole pipeline.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO

from backupd import cancel
from backupd.errors import Aborted, DumpError
from backupd.process import Child, is_libpq_tool, spawn

BLOCK = 1 << 20
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Compression:
    name: str
    suffix: str
    default_level: int

    def compress_argv(self, level: int, threads: int) -> list[str] | None:
        if self.name == "zstd":
            # A long window finds the repeats a dump is full of (the same texts, keys and
            # values far apart) at no measurable cost at the fast levels; its 16 MiB stay well
            # within the 128 MiB that ``zstd -d`` accepts without flags.
            window = [f"--long={ZSTD_LONG_WINDOW_LOG}"] if level <= ZSTD_LONG_MAX_LEVEL else []
            return ["zstd", "-q", f"-{level}", *window, f"-T{threads}", "-c"]
        if self.name == "gzip":
            if threads > 1 and shutil.which("pigz"):
                return ["pigz", f"-{level}", f"-p{threads}", "-c"]
            return ["gzip", f"-{level}", "-c"]
        if self.name == "bzip2":
            return ["bzip2", f"-{level}", "-c"]
        if self.name == "xz":
            return ["xz", f"-{level}", f"-T{threads}", "-c"]
        return None

    def decompress_argv(self) -> list[str] | None:
        return {
            "zstd": ["zstd", "-q", "-d", "-c"],
            "gzip": ["gzip", "-d", "-c"],
            "bzip2": ["bzip2", "-d", "-c"],
            "xz": ["xz", "-d", "-c"],
        }.get(self.name)


ZSTD_LONG_WINDOW_LOG = 24
ZSTD_LONG_MAX_LEVEL = 3

# Default levels favour throughput. zstd's was chosen on two kinds of data, 2 CPUs
# (bench/compression_level.py; the figures and the reasons are in bench/README.md):
# level 1 with a 16 MiB window is as fast as plain level 1 and, unlike it, smaller than
# the seeds' gzip -9 on both; when pg_dump compresses itself (artifact.py) it is level 2.
COMPRESSIONS = {
    "zstd": Compression("zstd", ".zst", 1),
    "gzip": Compression("gzip", ".gz", 6),
    "bzip2": Compression("bzip2", ".bz2", 9),
    "xz": Compression("xz", ".xz", 3),
    "none": Compression("none", "", 0),
}


def compression_for_suffix(name: str) -> Compression:
    for compression in COMPRESSIONS.values():
        if compression.suffix and name.endswith(compression.suffix):
            return compression
    return COMPRESSIONS["none"]


def _widen_pipe(fd: int) -> None:
    # Bigger pipes mean fewer, larger reads and fewer context switches.
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Written data is handed to the disk in windows of this size while the stream goes on.
WRITEBACK_WINDOW = 8 << 20


class AtomicFile:
    """A hidden ``.<name>.partial`` beside ``final``; ``commit`` fsyncs and renames it.

    Until committed, the file does not look like anything: leaving the context
    without committing removes it.

    While it is written, each full window is pushed to the disk at once (``POSIX_FADV_DONTNEED``
    starts the writeback of dirty pages and drops the clean ones), so the final fsync only
    waits for the last window instead of the whole file, and a backup does not push the
    database's own pages out of the page cache it shares with the server.
    """

    def __init__(self, final: Path):
        self.final = final
        self.partial = final.with_name(f".{final.name}.partial")
        self.file: BinaryIO | None = None
        self._written = 0
        self._pushed = 0  # where the window not yet handed to the disk starts

    def __enter__(self) -> AtomicFile:
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.file = os.fdopen(fd, "wb", buffering=0)
        return self

    def write(self, data: memoryview | bytes) -> None:
        assert self.file is not None, "write inside the with block"
        view = memoryview(data)
        while view:
            written = self.file.write(view)
            view = view[written:]
            self._written += written
        if self._written - self._pushed >= WRITEBACK_WINDOW:
            self._push()

    def _push(self) -> None:
        # The window before this one was handed over a window ago: its pages are clean
        # by now and are dropped; this one's writeback starts.
        assert self.file is not None, "write inside the with block"
        start = max(self._pushed - WRITEBACK_WINDOW, 0)
        try:
            os.posix_fadvise(self.file.fileno(), start, self._written - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # only advice: the fsync in commit() is what makes the file durable
        self._pushed = self._written

    def commit(self, replace: bool = True) -> None:
        """``replace=False``: FileExistsError, and nothing changed, when ``final`` exists."""
        assert self.file is not None, "commit inside the with block"
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if replace:
            os.rename(self.partial, self.final)
        else:
            _link_exclusively(self.partial, self.final)
            self.partial.unlink(missing_ok=True)  # renamed already where links are not supported
        fsync_dir(self.final.parent)

    def __exit__(self, exc_type: type[BaseException] | None, _exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        if exc_type is not None or not self.final.exists():
            self.partial.unlink(missing_ok=True)


def _link_exclusively(source: Path, final: Path) -> None:
    """Give ``source`` the name ``final`` only if nothing has it: a hard link is made or
    fails with EEXIST in one step, where a rename would replace what another writer put
    there. A file system without hard links (some SMB and FUSE mounts) gets a check, then
    the rename: a writer in between could still be replaced there."""
    try:
        os.link(source, final)
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "exists", str(final)) from None
        os.rename(source, final)


def write_json_atomically(path: Path, text: str) -> None:
    # A partial left by a killed writer would block every later write (O_EXCL): small JSON
    # files are rewritten whole, so the stale one simply goes.
    path.with_name(f".{path.name}.partial").unlink(missing_ok=True)
    with AtomicFile(path) as out:
        out.write(text.encode("utf-8"))
        out.commit()


@dataclass
class StreamResult:
    size: int
    sha256: str
    seconds: float


class Pipeline:
    """A chain of children: the first produces, each next one reads the previous one's stdout.
    A stage is ``(name, argv)``, ``(name, argv, fds)`` or ``(name, argv, fds, ok_codes)``: fds it
    inherits (closed here once passed) and the exit codes that count as success.

    ``abort(reason)`` (from any thread, e.g. a timeout or a shutdown) kills every
    stage; the reader then sees EOF and ``finish`` raises ``Aborted``.
    """

    def __init__(self, stages: Sequence[tuple[Any, ...]], env: dict[str, str] | None = None,
                 secrets: Sequence[str] = (), stdin: int | IO[bytes] | None = subprocess.DEVNULL,
                 stdout: int | IO[bytes] | None = subprocess.PIPE, cwd: str | None = None) -> None:
        self.children: list[Child] = []
        self.abort_reason: str | None = None
        self.abort_error: type[Exception] = Aborted
        self._lock = threading.Lock()
        source: Any = stdin  # a pipe, or what the first stage reads
        try:
            for index, stage in enumerate(stages):
                name, argv, *rest = stage
                inherited = rest[0] if rest else ()
                ok_codes = rest[1] if len(rest) > 1 else (0,)
                last = index == len(stages) - 1
                # ``env`` is the libpq environment: only the stages that connect get it.
                stage_env = env if is_libpq_tool(argv) else None
                child = spawn(name, argv, env=stage_env, stdin=source, stdout=stdout if last else subprocess.PIPE,
                              secrets=secrets, cwd=cwd, pass_fds=inherited)
                child.ok_codes = tuple(ok_codes)
                for fd in inherited:  # the child has its own copy now
                    os.close(fd)
                if child.popen.stdout is not None:
                    _widen_pipe(child.popen.stdout.fileno())
                if source not in (subprocess.DEVNULL, stdin) and hasattr(source, "close"):
                    source.close()  # the next stage owns it now; closing ours lets SIGPIPE travel upstream
                self.children.append(child)
                source = child.popen.stdout
        except BaseException:
            self.kill()
            raise
        cancel.register(self)

    @property
    def output(self) -> IO[bytes]:
        """The last stage's stdout: only a pipeline made with ``stdout=PIPE`` (the default) has one."""
        out = self.children[-1].popen.stdout
        if out is None:
            raise ValueError("this pipeline writes its output elsewhere")
        return out

    def kill(self) -> None:
        for child in self.children:
            child.kill()
        cancel.unregister(self)

    def abort(self, reason: str, error: type[Exception] = Aborted) -> None:
        """Stop every stage; ``finish`` then raises ``error(reason)`` (the first reason wins)."""
        with self._lock:
            if self.abort_reason is None:
                self.abort_reason, self.abort_error = reason, error
        self.kill()

    def finish(self, ignore_sigpipe_upstream: bool = False) -> None:
        """Wait for every stage; raise on the first one that failed (upstream first)."""
        if (out := self.children[-1].popen.stdout) is not None:
            out.close()
        try:
            for child in self.children:
                child.popen.wait()
        except BaseException:  # interrupted while waiting: the children must not outlive this
            self.kill()
            raise
        cancel.unregister(self)
        try:
            if self.abort_reason:
                raise self.abort_error(self.abort_reason)
            failed = [(index, child) for index, child in enumerate(self.children)
                      if child.popen.returncode not in child.ok_codes]
            last = len(self.children) - 1
            if ignore_sigpipe_upstream:  # the consumer stopped reading early on purpose
                failed = [(i, c) for i, c in failed if i == last or c.popen.returncode not in (-13, 141)]
            # A stage killed by SIGPIPE is a symptom: the stage after it stopped reading.
            causes = [c for i, c in failed if c.popen.returncode != -13] or [c for _, c in failed]
            if causes:
                raise DumpError(causes[0].describe_failure())
        finally:
            for child in self.children:
                child.tail = child.stderr_tail()
                child.close()


def pump(source: IO[bytes], sink: AtomicFile | None, progress: Progress | None = None) -> tuple[int, str]:
    """Copy ``source`` (a pipe) into ``sink`` in large blocks, hashing in the same pass."""
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    total = 0
    raw: Any = getattr(source, "raw", source)  # unbuffered: readinto fills the whole block
    while True:
        if reason := cancel.requested():  # a copy or a checksum of a large file stops at once too
            raise Aborted(reason)
        count = raw.readinto(view)
        if not count:
            break
        chunk = view[:count]
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
        total += count
        if progress:
            progress(total)
    return total, digest.hexdigest()


def stream_to_file(pipeline: Pipeline, final: Path, progress: Progress | None = None,
                   timeout: float | None = None, what: str = "backup") -> StreamResult:
    """Run ``pipeline`` into ``final`` atomically. On any failure nothing is left behind."""
    started = time.monotonic()
    timer = None
    if timeout:
        timer = threading.Timer(timeout, pipeline.abort, args=(f"{what} exceeded its time limit of {timeout:g}s",))
        timer.daemon = True
        timer.start()
    try:
        with AtomicFile(final) as out:
            try:
                size, sha = pump(pipeline.output, out, progress)
            except OSError as err:
                pipeline.abort(f"writing {final.name} failed: {err.strerror or err}", DumpError)
                pipeline.finish()
                raise
            except BaseException:
                pipeline.kill()
                raise
            pipeline.finish()
            try:
                out.commit()
            except OSError as err:
                raise DumpError(f"writing {final.name} failed: {err.strerror or err}") from None
    except BaseException:
        pipeline.kill()
        raise
    finally:
        if timer:
            timer.cancel()
    return StreamResult(size=size, sha256=sha, seconds=time.monotonic() - started)


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    with open(path, "rb", buffering=0) as source:
        _, sha = pump(source, None, progress)
    return sha
