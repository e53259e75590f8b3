"""The base backup's tar relay, pure: whatever tar goes in comes out byte for byte, through
pipes (splice) and through files (copied), and only the members backupd reads are kept,
inside the folder it is given."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest


def a_tar(tmp_path: Path, fmt: int) -> bytes:
    members = {"PG_VERSION": b"17\n", "base/1/1259": os.urandom(3 * 8192 + 17),
               "pg_wal/000000010000000000000002": os.urandom(1 << 20),
               "pg_wal/archive_status/000000010000000000000002.done": b"",
               "pg_wal/../escape": b"no", "deep/" + "x" * 150: b"a long name",
               "backup_manifest": b'{ "PostgreSQL-Backup-Manifest-Version": 1 }\n'}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue() + os.urandom(700)  # what follows the end blocks passes too


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("through", ["pipe", "file"])
def test_the_stream_passes_unchanged_and_only_wanted_members_are_kept(tmp_path, fmt, through):
    data = a_tar(tmp_path, fmt) if fmt != tarfile.USTAR_FORMAT else _ustar(tmp_path)
    kept = tmp_path / "kept"
    kept.mkdir()
    argv = [sys.executable, "-m", "backupd.pitr.tarrelay", str(kept)]
    if through == "pipe":
        result = subprocess.run(argv, input=data, capture_output=True, timeout=30)
        out = result.stdout
    else:
        (tmp_path / "in.tar").write_bytes(data)
        with open(tmp_path / "in.tar", "rb") as source, open(tmp_path / "out.tar", "wb") as sink:
            result = subprocess.run(argv, stdin=source, stdout=sink, stderr=subprocess.PIPE, timeout=30)
        out = (tmp_path / "out.tar").read_bytes()
    assert result.returncode == 0, result.stderr
    assert out == data
    found = sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file())
    assert found == ["backup_manifest", "pg_wal/000000010000000000000002"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert (kept / "pg_wal/000000010000000000000002").read_bytes() == tar.extractfile(
            "pg_wal/000000010000000000000002").read()
    assert not (tmp_path / "escape").exists()


def _ustar(tmp_path: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in {"PG_VERSION": b"17\n", "pg_wal/000000010000000000000002": os.urandom(70001),
                           "pg_wal/../escape": b"no", ("d" * 120) + "/f": b"prefix field",
                           "backup_manifest": b"{}\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_stream_cut_inside_a_member_fails_clearly(tmp_path):
    data = _ustar(tmp_path)[:2000]
    result = subprocess.run([sys.executable, "-m", "backupd.pitr.tarrelay", str(tmp_path)], input=data,
                            capture_output=True, timeout=30)
    assert result.returncode == 1 and b"ended inside a member" in result.stderr, result.stderr
