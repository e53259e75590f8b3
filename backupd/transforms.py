"""What every stored artifact goes through after its producer (pg_dump, pg_dumpall,
tar): compression, then optional age encryption. One place for the stages, the
file suffix and what the manifest says of them; and the last step of writing one,
the manifest, which is written only once the file is in place."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd import cancel, encryption
from backupd.errors import Aborted
from backupd.pgtools import Tools
from backupd.repository import Repository, pending_path
from backupd.stream import COMPRESSIONS, Compression

if TYPE_CHECKING:
    from backupd.settings import Settings

# pg_dump compresses its own custom-format archive with zstd from major 16 on. At the fast
# levels it is as fast as the external stage or faster, smaller, and the stored file stays
# a seekable archive: pg_restore -j and the table-of-contents check read it in place, with
# no staging. At level 9 the external zstd's threads are 27% faster (bench/dump_compression.py).
# Its default level is 2: on both kinds of bench data as fast as its level 1 and, unlike
# level 1, smaller than the seeds' gzip -9 (bench/compression_level.py, bench/README.md).
INSIDE_ZSTD_DEFAULT_LEVEL = 2
INSIDE_MAX_LEVEL = 3


class Transform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.compression: Compression = COMPRESSIONS[settings.backup_compression]
        self.recipients: tuple[str, ...] = tuple(settings.backup_encryption_recipients)
        self.inside = False  # pg_dump compresses the archive itself (for_dump)
        self.pg_dump_major = 0

    @property
    def level(self) -> int:
        level = self.settings.backup_compression_level
        if level is not None:
            return level
        if self.inside and self.compression.name == "zstd":
            return INSIDE_ZSTD_DEFAULT_LEVEL
        return self.compression.default_level

    def for_dump(self, fmt: str, tools: Tools) -> Transform:
        """The transform of one database dump: compression inside pg_dump where that pays,
        else this one.

        - custom format: zstd, pg_dump 16 or newer, a fast level (as fast, and seekable);
        - directory format: whenever pg_dump can write the compression asked for (gzip on
          every major, zstd from 16 on). Its ``-j`` workers then compress in parallel, each
          beside its own COPY, and the tar that packs their files is not compressed again."""
        name, major = self.compression.name, tools.major
        if fmt == "custom":
            inside = name == "zstd" and major >= 16 and self.level <= INSIDE_MAX_LEVEL
        elif fmt == "directory":
            inside = name == "gzip" or (name == "zstd" and major >= 16)
        else:
            inside = False
        if not inside:
            return self
        transform = copy.copy(self)
        transform.inside, transform.pg_dump_major = True, major
        return transform

    def pg_dump_compress(self) -> str:
        """pg_dump's --compress value: its own compression, or none (the stage after it compresses)."""
        if not self.inside:
            return "0"
        # Before 16, --compress takes only a gzip level.
        return f"{self.compression.name}:{self.level}" if self.pg_dump_major >= 16 else str(self.level)

    @property
    def stream_compression(self) -> Compression:
        """How the stream leaving the compressor is compressed as a whole (none inside)."""
        return COMPRESSIONS["none"] if self.inside else self.compression

    @property
    def encrypting(self) -> bool:
        return bool(self.recipients)

    def compressor(self) -> list[tuple[str, list[str]]]:
        if self.inside:
            return []
        argv = self.compression.compress_argv(self.level, self.settings.backup_compression_threads)
        return [(argv[0], argv)] if argv else []

    def encryptor(self) -> list[tuple[str, list[str]]]:
        return [encryption.encrypt_stage(self.recipients)] if self.encrypting else []

    def stages(self) -> list[tuple[str, list[str]]]:
        return [*self.compressor(), *self.encryptor()]

    def suffix(self, format_suffix: str) -> str:
        return format_suffix + self.stream_compression.suffix + (encryption.SUFFIX if self.encrypting else "")

    def manifest_fields(self) -> dict[str, Any]:
        """Compression and encryption as the manifest records them: public recipients, never a secret."""
        return {"compression": self.compression.name, "compression_level": self.level,
                "compressed_by": "pg_dump" if self.inside else "stream",
                "encryption": {"tool": "age", "recipients": list(self.recipients)} if self.encrypting else None}


def commit_manifest(repo: Repository, folder: Path, final: Path, manifest: dict[str, Any]) -> None:
    """Move the pending file to ``final`` and write its manifest right after; without a
    manifest the file is removed, so it never lingers as an orphan."""
    pending = pending_path(final)
    try:
        if reason := cancel.requested():  # the dump may have ended just as the signal came
            raise Aborted(reason)
        os.rename(pending, final)
        try:
            repo.write_manifest(folder, manifest)
        except BaseException:
            final.unlink(missing_ok=True)
            raise
    finally:
        pending.unlink(missing_ok=True)
