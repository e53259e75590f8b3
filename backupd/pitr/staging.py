"""A data directory is built in a staging folder and put in place only once complete, so
that the destination never holds half of one: a server started there must never recover
quietly to the wrong moment (a base backup holds the WAL to be consistent on its own).

The staging folder is beside the destination, on its disk (``.<name>.backupd-building-<time>``),
or inside it when the destination is a mount point. Until ``commit`` the destination is
untouched; a failure or a signal removes the staging folder (and the parent folders it
created) and leaves the destination as it was. ``commit`` moves the old content aside, never
deleted, then the new content in, ``recovery.signal`` last; a failure in the middle moves
everything back."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from backupd import cancel
from backupd.errors import Aborted, RefusedError
from backupd.logging import get_logger

log = get_logger("pitr")

ASIDE_PREFIX = "backupd-replaced-"
BUILDING = "backupd-building-"
LAST = "recovery.signal"  # what makes a server recover: moved in after everything else
OWNER = ".backupd-building-pid"  # in a staging folder: the pid building it, so a killed one is known


def checkpoint() -> None:
    """Between steps: an interrupted command stops here rather than going on."""
    if reason := cancel.requested():
        raise Aborted(reason)


class Staging:
    def __init__(self, to: Path, yes: bool):
        """Checks only (nothing is written): ``to`` is a folder or missing, and empty unless
        ``yes``."""
        self.to, self.yes = to, yes
        # To the microsecond (utc_now has none): two restores started in the same second
        # never share a folder.
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.old = self._content()
        self.inside = False  # staging inside ``to`` (a mount point: nothing can be renamed onto it)
        if to.is_dir():
            self.inside = os.path.ismount(to) or os.stat(to.parent).st_dev != os.stat(to).st_dev
        self._refuse_unless_yes("is not empty")
        self.pattern = f".{BUILDING}*" if self.inside else f".{to.name}.{BUILDING}*"
        self.folder = (to if self.inside else to.parent) / self.pattern.replace("*", self.stamp)

    def _content(self) -> list[str]:
        """What ``to`` holds that a restore replaces (never a folder set aside or a build)."""
        if not self.to.is_dir():
            return []
        kept = ("lost+found", ASIDE_PREFIX, f".{BUILDING}")
        return [e for e in os.listdir(self.to) if not e.startswith(kept)]

    def _refuse_unless_yes(self, state: str) -> None:
        if self.old and not self.yes:
            raise RefusedError(f"{self.to} {state}: --yes moves what it holds aside, next to it or into "
                               f"{self.to}/{ASIDE_PREFIX}<time> (kept, never deleted). Stop the server that uses "
                               "it first")

    @contextmanager
    def building(self) -> Iterator[Path]:
        """The folder to build in; removed, with the parents it needed, unless committed."""
        created = [p for p in reversed(self.folder.parents) if not p.exists()]
        made = False  # only what this process made is removed: never another restore's folder
        try:
            for parent in created:
                parent.mkdir(mode=0o700)
            self._remove_killed_builds()
            self.folder.mkdir(mode=0o700)
            made = True
            (self.folder / OWNER).write_text(str(os.getpid()))
            yield self.folder
        except BaseException:
            if made:
                shutil.rmtree(self.folder, ignore_errors=True)
            for parent in reversed(created):
                try:
                    parent.rmdir()
                except OSError:
                    pass
            raise

    def _remove_killed_builds(self) -> None:
        """Staging folders of earlier restores to the same place that were killed (``kill -9``):
        only those that say they are one, built by a process that is gone."""
        for folder in self.folder.parent.glob(self.pattern):
            try:
                pid = int((folder / OWNER).read_text())
            except (OSError, ValueError):
                continue  # not one of ours, or not readable: left alone
            if not Path(f"/proc/{pid}").exists():
                log.warning("removing what a killed restore left", folder=str(folder))
                shutil.rmtree(folder, ignore_errors=True)

    def commit(self) -> Path | None:
        """Put the built folder in place; returns where the old content went (None: there was
        none). Once begun it finishes or undoes itself, even if a signal comes."""
        with cancel.shielded():
            checkpoint()
            # Filled meanwhile (another restore to the same place finished first): the
            # answer to "is it empty" given at the start no longer holds.
            self.old = self._content()
            self._refuse_unless_yes("was filled while this restore ran (another restore to it?)")
            (self.folder / OWNER).unlink()
            aside = self._commit_inside() if self.inside else self._commit_beside()
        if aside:
            log.warning("moved the folder's old content aside", folder=str(aside))
        return aside

    def _commit_beside(self) -> Path | None:
        aside = None
        if self.to.exists():
            if os.listdir(self.to):
                aside = self.to.with_name(f"{self.to.name}.{ASIDE_PREFIX}{self.stamp}")
                os.rename(self.to, aside)
            else:
                self.to.rmdir()
        try:
            os.rename(self.folder, self.to)
        except OSError:
            if aside:
                os.rename(aside, self.to)
            else:
                self.to.mkdir(mode=0o700, exist_ok=True)
            raise
        return aside

    def _commit_inside(self) -> Path | None:
        aside = self.to / f"{ASIDE_PREFIX}{self.stamp}" if self.old else None
        moved_old: list[str] = []
        moved_new: list[str] = []
        try:
            if aside:
                aside.mkdir(mode=0o700)
                owner = os.stat(self.to)
                if os.geteuid() == 0:  # the server, which owns the folder, can read what was there
                    os.chown(aside, owner.st_uid, owner.st_gid)
                for name in self.old:
                    os.rename(self.to / name, aside / name)
                    moved_old.append(name)
            for name in sorted(os.listdir(self.folder), key=lambda n: n == LAST):
                os.rename(self.folder / name, self.to / name)
                moved_new.append(name)
            built = os.stat(self.folder)
            os.chmod(self.to, 0o700)  # the server refuses a data directory others can read
            if os.geteuid() == 0:
                os.chown(self.to, built.st_uid, built.st_gid)
            self.folder.rmdir()
        except OSError:
            for name in reversed(moved_new):
                os.rename(self.to / name, self.folder / name)
            if aside is not None:  # ``moved_old`` is only ever filled once ``aside`` was made
                for name in moved_old:
                    os.rename(aside / name, self.to / name)
                if aside.exists():
                    aside.rmdir()
            raise
        return aside
