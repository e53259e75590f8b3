"""``file:///mnt/offsite``: another folder (a second disk, an NFS or SMB mount)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from backupd.stream import AtomicFile, fsync_dir, pump
from backupd.targets.base import (
    CopyRecord,
    LocalFile,
    LocalFileDamaged,
    NotReplaced,
    RemoteFile,
    Target,
    TargetError,
    check_local_file,
    check_size,
    unreadable_local_file,
)


class FileTarget(Target):
    def __init__(self, url: str, root: Path):
        self.url, self.root = url, root

    def _path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise TargetError(f"{relative!r} is outside {self.url}")
        return path

    def list(self) -> dict[str, RemoteFile]:
        if not self.root.is_dir():
            raise TargetError(f"{self.url} is not a folder (is the disk mounted?)")
        found = {}
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                relative = path.relative_to(self.root).as_posix()
                stat = path.stat()
                found[relative] = RemoteFile(relative, stat.st_size, stat.st_mtime)
        return found

    def put(self, file: LocalFile, replace: bool = False) -> CopyRecord:
        """The copy is written beside the destination and renamed into place only when its
        sha256 matches the manifest, so a damaged local file never replaces a good copy;
        without ``replace`` it is linked into place, which never replaces another's file."""
        destination = self._path(file.relative)
        check_size(file)
        if not replace and destination.exists():
            check_local_file(file)  # a damaged local file is reported even when a good copy is there
            return self._already_there(file, destination)
        try:  # a local file that vanished or cannot be read fails its backup, not the target
            source = open(file.path, "rb", buffering=0)
        except OSError as err:
            raise unreadable_local_file(file.relative, err) from None
        try:
            destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # A copy cut short (a killed run) left its partial file: this copy replaces it.
            destination.with_name(f".{destination.name}.partial").unlink(missing_ok=True)
            with source, AtomicFile(destination) as out:
                size, sha = pump(source, out)
                if sha != file.sha256:
                    raise LocalFileDamaged(file.relative)
                out.commit(replace=replace)
        except FileExistsError:  # written by someone else since the check above
            return self._already_there(file, destination)
        except OSError as err:
            raise TargetError(f"copying {file.relative} to {self.url} failed: {err.strerror or err}") from None
        # Confirm by reading the copy back, as the target's disk has it.
        if self._sha256(destination) != file.sha256:
            raise TargetError(f"the copy of {file.relative} at {self.url} does not match its checksum")
        return {"mtime": destination.stat().st_mtime}

    def _already_there(self, file: LocalFile, destination: Path) -> CopyRecord:
        """The file of that name on the target: the copy when identical, else not ours."""
        if self._sha256(destination) != file.sha256:
            raise NotReplaced(file.relative, self.url)
        return {"mtime": destination.stat().st_mtime}

    def _sha256(self, path: Path) -> str:
        try:
            # Drop the copy from the page cache first, so the re-read comes from the disk.
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            with open(path, "rb", buffering=0) as copy:
                return pump(copy, None)[1]
        except OSError as err:
            raise TargetError(f"reading back {path} failed: {err.strerror or err}") from None

    def get(self, relative: str, destination: Path) -> None:
        try:
            shutil.copyfile(self._path(relative), destination)
        except OSError as err:
            raise TargetError(f"fetching {relative} from {self.url} failed: {err.strerror or err}") from None

    def delete(self, relative: str) -> None:
        path = self._path(relative)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
