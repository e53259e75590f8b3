"""A pipeline stage for base backups: copies ``pg_basebackup``'s tar from stdin to stdout
unchanged, and keeps aside, in the folder it is given, the few members backupd reads
(``backup_manifest``, the WAL segments under ``pg_wal/``). Only the 512-byte headers pass
through Python; every other member's bytes move pipe to pipe with ``splice`` (no copy in
user space), so the stream is read once, by the compressor.

Run as ``python -m backupd.pitr.tarrelay FOLDER``; it imports only the standard library."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

BLOCK = 512
CHUNK = 1 << 20
KEPT_FOLDERS = ("pg_wal/",)
KEPT_NAMES = ("backup_manifest",)


def _read_exactly(fd: int, count: int) -> bytes:
    parts, left = [], count
    while left:
        data = os.read(fd, min(left, CHUNK))
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _move(source: int, sink: int, limit: int) -> int:
    """Up to ``limit`` bytes from ``source`` to ``sink``, by ``splice`` when both ends are
    pipes; 0 at the end of the stream."""
    if _PIPES.setdefault((source, sink), _is_pipe(source) and _is_pipe(sink)):
        return os.splice(source, sink, limit)
    data = os.read(source, limit)
    _write_all(sink, data)
    return len(data)


def _is_pipe(fd: int) -> bool:
    return stat.S_ISFIFO(os.fstat(fd).st_mode)


_PIPES: dict[tuple[int, int], bool] = {}


def _pass_on(source: int, sink: int, count: int) -> None:
    while count:
        if not (moved := _move(source, sink, min(count, CHUNK))):
            raise EOFError("the tar stream ended inside a member")
        count -= moved


def _size(header: bytes) -> int:
    """The member's size: octal, or base-256 for a file of 8 GB and more (GNU)."""
    field = header[124:136]
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") if header[257:262] == b"ustar" else ""
    return (f"{prefix}/{name}" if prefix else name).removeprefix("./")


def _kept(name: str, kind: bytes) -> str | None:
    """Where a member is kept (relative to the folder), or None. Only regular files, by a
    plain name: nothing in the stream can write outside the folder."""
    if kind not in (b"0", b"\0") or "/../" in f"/{name}/" or "/./" in f"/{name}/" or name.startswith("/"):
        return None
    if name in KEPT_NAMES:
        return name
    for folder in KEPT_FOLDERS:
        rest = name.removeprefix(folder)
        if name.startswith(folder) and rest and "/" not in rest:
            return name
    return None


def relay(source: int, sink: int, folder: Path) -> None:
    while True:
        header = _read_exactly(source, BLOCK)
        _write_all(sink, header)
        if len(header) < BLOCK or header == bytes(BLOCK):
            break  # the end-of-archive blocks (or a short stream): the rest as it comes
        size = _size(header)
        padded = -(-size // BLOCK) * BLOCK
        if (kept := _kept(_name(header), header[156:157])) is None:
            _pass_on(source, sink, padded)
            continue
        (folder / kept).parent.mkdir(parents=True, exist_ok=True)
        with open(folder / kept, "wb") as out:
            left = padded
            while left:
                data = _read_exactly(source, min(left, CHUNK))
                if not data:
                    raise EOFError("the tar stream ended inside a member")
                _write_all(sink, data)
                out.write(data[: max(0, min(len(data), size - (padded - left)))])
                left -= len(data)
    while _move(source, sink, CHUNK):
        pass


def main() -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # the reader stopped: end as tee would, by SIGPIPE
    try:
        relay(sys.stdin.fileno(), sys.stdout.fileno(), Path(sys.argv[1]))
    except (OSError, EOFError, ValueError) as err:
        print(f"reading the base backup's tar stream failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
