"""What every replication target offers: list, put (confirmed), get and delete of files
named by their path relative to the repository root (the same layout everywhere)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from backupd import cancel
from backupd.errors import Aborted, BackupdError
from backupd.logging import get_logger

log = get_logger("backupd.targets")

T = TypeVar("T")

# What ``put`` returns to recognise a copy later ({"mtime": ...} or {"etag": ...}), kept as
# JSON in the backup's state and given back to ``is_intact``.
CopyRecord: TypeAlias = dict[str, Any]


class TargetError(BackupdError):
    """A target could not be reached, refused us, or holds a copy that does not match."""

    permanent = False  # True: retrying cannot help (refused credentials, a damaged local file)


class LocalFileDamaged(TargetError):
    """The local file no longer matches its manifest (or vanished, or cannot be read): it is
    never sent anywhere. It fails that one backup, never the rest of the run."""

    permanent = True

    def __init__(self, relative: str, reason: str = "no longer matches its manifest", mismatch: bool = True):
        self.relative, self.reason = relative, reason
        self.mismatch = mismatch  # False: missing or unreadable, which says nothing of its content
        super().__init__(f"{relative} {reason}; it is not sent")


class NotReplaced(TargetError):
    """A different file of that name is on the target already: someone else's, kept."""

    permanent = True

    def __init__(self, relative: str, url: str):
        super().__init__(f"a different {relative} is already at {url}; it is not replaced (is another sidecar "
                         f"using the same BACKUP_INSTANCE?)")


def unreadable_local_file(relative: str, err: OSError) -> LocalFileDamaged:
    if isinstance(err, FileNotFoundError):
        return LocalFileDamaged(relative, "is missing", mismatch=False)
    return LocalFileDamaged(relative, f"cannot be read: {err.strerror or err}", mismatch=False)


def check_size(file: LocalFile) -> None:
    """A stat, free: a file of another size cannot be what its manifest describes."""
    try:
        size = file.path.stat().st_size
    except OSError as err:
        raise unreadable_local_file(file.relative, err) from None
    if size != file.size:
        raise LocalFileDamaged(file.relative, f"has {size} bytes, its manifest says {file.size}")


def check_local_file(file: LocalFile) -> None:
    """Before a file leaves: it must be exactly what its manifest says (size, then sha256)."""
    from backupd.stream import sha256_of

    check_size(file)
    try:
        sha = sha256_of(file.path)
    except OSError as err:
        raise unreadable_local_file(file.relative, err) from None
    if sha != file.sha256:
        raise LocalFileDamaged(file.relative)


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative, with "/" separators
    size: int
    mtime: float | None = None
    etag: str | None = None


@dataclass(frozen=True)
class LocalFile:
    """A file to send, with what the copy must match."""

    path: Path
    relative: str
    sha256: str
    size: int


class Target:
    """Base class; ``url`` is shown to people and labels metrics (credentials removed)."""

    url: str
    confirms = True  # False: copies cannot be checked (a custom command)

    def list(self) -> dict[str, RemoteFile]:
        raise NotImplementedError

    def put(self, file: LocalFile, replace: bool = False) -> CopyRecord:
        """Send and confirm the copy by checksum; TargetError when it does not match.
        Returns what to remember to recognise the copy later (e.g. its ETag).

        Several sidecars may share a target, so a copy never replaces a different file of
        the same name unless ``replace`` (the caller knows that file is its own earlier
        copy, now changed or damaged): ``NotReplaced`` instead. An identical file already
        there is the copy."""
        raise NotImplementedError

    def is_intact(self, file: LocalFile, remote: RemoteFile, record: CopyRecord) -> bool:
        """Is a copy confirmed earlier unchanged? ``record`` is what ``put`` returned then.
        A copy modified after it was confirmed counts as damaged and is sent again."""
        if remote.size != file.size:
            return False
        confirmed = record.get("mtime")
        return remote.mtime is None or confirmed is None or remote.mtime <= confirmed + 1.0

    def get(self, relative: str, destination: Path) -> None:
        raise NotImplementedError

    def delete(self, relative: str) -> None:
        raise NotImplementedError


def with_retries(what: str, action: Callable[[], T], attempts: int = 3, first_delay: float = 1.0) -> T:
    """Retry a target operation with bounded backoff (1 s, 2 s, ...); the last error is raised."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TargetError as err:
            if attempt == attempts or err.permanent:
                raise
            log.warning("target operation failed; retrying", operation=what, attempt=attempt, error=str(err))
            time.sleep(delay)
            delay *= 2
            if reason := cancel.requested():
                raise Aborted(reason) from None
    raise AssertionError("unreachable")
