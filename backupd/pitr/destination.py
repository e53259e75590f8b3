"""Where ``pitr restore --to`` may build a data directory. Refused (exit 2, nothing touched):
``/`` and the system's own folders in any spelling, ``BACKUP_DIR`` and anything inside it
or containing it, backupd's own installation, and the data directory of a server that runs
(or a folder inside it or containing it). Paths are compared as real paths: ``//``,
``/./``, ``/x/..`` and symlinks all resolve first."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from backupd.errors import RefusedError, UsageError

# Folders a data directory never replaces. Equality only: /var/lib/postgresql/data is fine.
SYSTEM_FOLDERS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt",
                  "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
                  "/usr/bin", "/usr/lib", "/usr/local", "/usr/sbin", "/usr/share", "/var/lib", "/var/log",
                  "/var/run", "/var/tmp")


def overlaps(a: Path, b: Path) -> bool:
    """One is the other, or inside it."""
    return a == b or a in b.parents or b in a.parents


def check_destination(to: str | Path, backup_dir: Path,
                      server_data_directory: Callable[[], str | None] = lambda: None) -> Path:
    """The real path a restore may build at, or ``UsageError``/``RefusedError``.
    ``server_data_directory`` asks the configured server where its data is (None: it cannot
    be asked); it is called last, as it may wait for a connection."""
    text = str(to)
    if not text.strip():
        raise UsageError("--to is empty: give the folder the data directory goes to")
    real = Path(os.path.realpath(os.path.abspath(text)))
    shown = f"--to {text}" + (f" (that is {real})" if str(real) != text else "")
    if str(real) in {os.path.realpath(f) for f in SYSTEM_FOLDERS}:
        raise RefusedError(f"{shown}: a system folder, never replaced: give the data directory's own folder, "
                           "such as /var/lib/postgresql/data")
    repository = Path(os.path.realpath(backup_dir))
    if overlaps(real, repository):
        raise RefusedError(f"{shown}: BACKUP_DIR is {repository}, and a restore never lands in it, on it or around "
                           "it: give a folder outside BACKUP_DIR")
    for own in _own_installation():
        if overlaps(real, own):
            raise RefusedError(f"{shown}: backupd itself is installed in {own}: give another folder")
    _refuse_a_folder_that_is_not_one(real, shown)
    for data, pid in _running_servers(real).items():
        if overlaps(real, data):
            raise RefusedError(f"{shown}: a PostgreSQL server (pid {pid}) is running on {data}: stop it first")
    asked = server_data_directory()
    if asked and overlaps(real, Path(os.path.realpath(asked))):
        raise RefusedError(f"{shown}: the server backupd connects to runs on {asked} (its data_directory): "
                           "stop it first")
    return real


def _own_installation() -> list[Path]:
    import backupd

    return [Path(os.path.realpath(sys.prefix)), Path(os.path.realpath(Path(backupd.__file__).parent))]


def _refuse_a_folder_that_is_not_one(real: Path, shown: str) -> None:
    """``real`` is a folder or does not exist yet; the nearest existing folder above it is
    a folder (not a file)."""
    existing = next(p for p in [real, *real.parents] if os.path.lexists(p))
    if not existing.is_dir():
        what = "is" if existing == real else f"lies under {existing}, which is"
        raise UsageError(f"{shown} {what} not a folder: give a folder (it is created when missing)")


def _running_servers(real: Path) -> dict[Path, int]:
    """The data directories of the PostgreSQL servers of this machine that run, with a pid:
    the ``postgres`` processes' working folders (a server works in its data directory), and
    the ``postmaster.pid`` in ``real`` or a folder right inside it whose server runs (when the
    processes' folders are not ours to look at). One in another container is not visible
    from here: the server is asked too (``data_directory``)."""
    pids = _postgres_pids()
    found: dict[Path, int] = {}
    for pid in sorted(pids, reverse=True):  # the lowest pid, the postmaster, is named
        try:
            folder = Path(os.path.realpath(os.readlink(f"/proc/{pid}/cwd")))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        # Only a data directory as seen from here: a server in another container (or mount
        # namespace) shows a folder of its own world, often "/", which is not its data.
        if (folder / "PG_VERSION").is_file():
            found[folder] = pid
    for folder in [real, *_subfolders(real)]:
        recorded = _postmaster_pid(folder / "postmaster.pid")
        if recorded is not None and recorded in pids:
            found.setdefault(folder, recorded)
    return found


def _postgres_pids() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() in ("postgres", "postmaster"):
                    found.add(int(entry))
            except OSError:
                continue
    return found


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _postmaster_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(errors="replace").split()[0])
    except (OSError, ValueError, IndexError):
        return None
