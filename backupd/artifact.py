"""What every stored artifact goes through after its producer (pg_dump, pg_dumpall,
tar): compression, then optional age encryption. One place for the stages, the
file suffix and what the manifest says of them; and the last step of writing one,
the manifest, which is written only once the file is in place."""

from __future__ import annotations

import os
from pathlib import Path

from backupd import cancel, encryption
from backupd.errors import Aborted
from backupd.repository import Repository, pending_path
from backupd.stream import COMPRESSIONS, Compression


class Transform:
    def __init__(self, settings):
        self.settings = settings
        self.compression: Compression = COMPRESSIONS[settings.backup_compression]
        self.recipients: tuple[str, ...] = tuple(settings.backup_encryption_recipients)

    @property
    def encrypting(self) -> bool:
        return bool(self.recipients)

    def compressor(self) -> list[tuple]:
        argv = self.compression.compress_argv(self.settings.backup_compression_level,
                                              self.settings.backup_compression_threads)
        return [(argv[0], argv)] if argv else []

    def encryptor(self) -> list[tuple]:
        return [encryption.encrypt_stage(self.recipients)] if self.encrypting else []

    def stages(self) -> list[tuple]:
        return [*self.compressor(), *self.encryptor()]

    def suffix(self, format_suffix: str) -> str:
        return format_suffix + self.compression.suffix + (encryption.SUFFIX if self.encrypting else "")

    def manifest_fields(self) -> dict:
        """Compression and encryption as the manifest records them: public recipients, never a secret."""
        return {"compression": self.compression.name,
                "compression_level": self.settings.backup_compression_level or self.compression.default_level,
                "encryption": {"tool": "age", "recipients": list(self.recipients)} if self.encrypting else None}


def commit_manifest(repo: Repository, folder: Path, final: Path, manifest: dict) -> None:
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
