"""What a point-in-time restore will do, decided before anything moves: the base backup it
starts from and why, the WAL it copies and replays, the room it needs. The restore follows
the ``Plan`` (restore.build_data_directory makes one and copies what it says), and
``pitr restore --dry-run`` prints the same Plan: the two cannot disagree.

Making a Plan writes nothing: it reads the archive (and each candidate base backup in full,
for its sha256), and refuses (UsageError, exit 2) where the restore would."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from backupd.documents import Document, InvalidDocument, read
from backupd.errors import IntegrityError, RefusedError, UsageError
from backupd.pitr import chains, estimate
from backupd.pitr.reach import segments_to_copy
from backupd.pitr.restore import choose_base
from backupd.pitr.store import Base, Store
from backupd.progress import human_bytes
from backupd.repository import iso

if TYPE_CHECKING:
    from backupd.settings import Settings

Segments = dict[int, tuple[str, Path, bool]]  # as Store.segments gives them


@dataclass
class Plan:
    """One restore's plan, for one cluster and one moment."""

    cluster: str
    target: datetime | None  # None: every WAL record there is (latest)
    base: Base
    notes: list[str]  # which base backup and why, which were skipped and why, what was left out
    segments: Segments  # the WAL segments recovery reads, to be copied into the data directory
    wal_fetch_bytes: int  # what the copied segments take where they are stored
    wal_replay_bytes: int  # WAL positions from the base backup's start to the last segment's end
    room_needed: int  # bytes: the data directory extracted, plus the WAL copied into it
    room_exact: bool  # False: the base backup's size unpacked is not recorded, its stored size is used
    estimate_seconds: float | None = None  # from the last drill's rates; None before a drill measured them
    skipped: list[str] = field(default_factory=list)

    @property
    def encrypted(self) -> bool:
        return self.base.path.name.endswith(".age")

    @property
    def archived_segments(self) -> int:
        """Segments read back from the archive (the rest are plain in the receiver's folder)."""
        return sum(1 for _, _, stored in self.segments.values() if stored)


def make_plan(settings: Settings, store: Store, target: datetime | None, strict: bool = False) -> Plan:
    """``store``'s cluster to ``target``. ``strict`` (the drill): the newest usable base
    backup or a failure, never an older one; a damaged WAL file fails too."""
    base, notes = choose_base(store, target, strict)
    skipped = _newer_than_the_target(store, target) + _not_usable(store)
    if damaged := store.damaged_wal():  # left out of the window already; say so, and fail a drill
        listed = ", ".join(damaged)
        if strict:
            raise IntegrityError(f"archived WAL files are damaged (their size is not their record's): {listed}")
        notes.append(f"left out damaged WAL files (their size is not their record's): {listed}; the recovery "
                     "window ends before the first of them (backupd pitr status)")
    if base.path.name.endswith(".age") and not settings.identity:  # as Plan.encrypted
        raise UsageError(f"base backup {base.id} is encrypted: restoring it needs BACKUP_ENCRYPTION_IDENTITY")
    segments = segments_to_copy(store, base, target)
    unpacked = _chain_room(store, base)
    replay = estimate.wal_bytes(store, base, segments)
    wal_room = len(segments) * base.doc.wal_segment_size
    plan = Plan(store.system_identifier, target, base, notes, segments, _stored_bytes(segments), replay,
                (unpacked or base.doc.size) + wal_room, unpacked is not None, skipped=skipped)
    plan.estimate_seconds = estimate.seconds(store.last_drill(), base.doc.size, replay)
    return plan


def free_room(to: Path) -> tuple[Path, int]:
    """The nearest existing folder of ``to`` (where it is built, on that disk), and the
    bytes free there."""
    existing = next(p for p in [to, *to.parents] if p.exists())
    return existing, shutil.disk_usage(existing).free


def check_room(plan: Plan, to: Path) -> None:
    """RefusedError when the plan needs more room than is free where ``to`` is built."""
    existing, free = free_room(to)
    if plan.room_needed > free:
        raise RefusedError(f"not enough room for the restore on {existing}'s disk: it needs "
                           f"{human_bytes(plan.room_needed)}{'' if plan.room_exact else ' or more'} "
                           f"({plan.room_needed} bytes), {human_bytes(free)} ({free} bytes) are free")


def _newer_than_the_target(store: Store, target: datetime | None) -> list[str]:
    if target is None:
        return []
    return [f"skipped base backup {b.id}: it is consistent only from {iso(b.consistent_at)}, after the target"
            for b in store.usable_bases() if b.consistent_at > target]


def _not_usable(store: Store) -> list[str]:
    """Base backups left out for their file or their WAL; one whose chain is incomplete is
    already in the notes (``chains.broken_notes``, as the restore says it)."""
    usable, bases = {b.id for b in store.usable_bases()}, store.bases()
    return [f"skipped base backup {b.id}: " + ("its file is not the size its manifest records" if not
                                               b.intact_by_size() else
                                               "the WAL after it is incomplete (a gap or a missing segment) "
                                               "or it lies on an abandoned timeline")
            for b in bases if b.id not in usable and (chains.parent_of(b) is None or chains.complete(b, bases))]


def _stored_bytes(segments: Segments) -> int:
    total = 0
    for _, path, _ in segments.values():
        try:
            total += os.stat(path).st_size
        except OSError:  # gone meanwhile: the receiver completed it, and the restore copies the complete one
            continue
    return total


class _ManifestFile(Document):
    Size: Annotated[int, Field(ge=0)]


class _ServerManifest(Document):
    """The server's ``backup_manifest``, as far as the room is concerned."""

    Files: list[_ManifestFile]


def _chain_room(store: Store, base: Base) -> int | None:
    """The room the base backup takes while it is extracted: its files; for an incremental
    one, every member of its chain extracted side by side, plus their combination (at most
    the sum of the full one and the changes, counted as that sum again)."""
    chain = chains.chain_of(base, chains.by_id(store.bases())) or [base]
    sizes = [_unpacked_size(member) for member in chain]
    if any(size is None for size in sizes):
        return None
    members = sum(size for size in sizes if size is not None)
    return members if len(chain) == 1 else 2 * members


def _unpacked_size(base: Base) -> int | None:
    """The base backup's files' size once extracted, from the server's own manifest; None
    when it has none or it cannot be read."""
    if base.doc.server_manifest is None:
        return None
    try:
        manifest = read(_ServerManifest, base.folder / base.doc.server_manifest)
    except (OSError, InvalidDocument):
        return None
    return sum(f.Size for f in manifest.Files)
