"""``backupd replicate``: copies of every backup on each target (3-2-1).

For each target: list what is there, send what is missing or damaged (the data
file first, the manifest last, so a half-sent backup never looks complete),
confirm each copy by checksum and only then record the target in the backup's
``<id>.state.json``. Then apply retention on the target with the whole policy,
``REPLICATION_RETENTION_DAYS`` replacing only the age rule. Targets run side by
side; one that is down fails on its own, after bounded retries, and holds up no
other. Also: fetching a backup back from a target (disaster recovery).

A local backup that no longer matches its manifest (a flipped byte, a truncated or
vanished file) fails alone: it is never sent, so it never replaces a good copy; every
other backup is sent; retention still runs on the target and keeps that backup's copy
there (now perhaps the only good one); the damage is remembered on the backup
(``Repository.mark_damaged``), so ``list`` and ``/healthz`` show it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd import cancel, origin
from backupd.errors import Aborted, BackupdError
from backupd.logging import get_logger
from backupd.manifests import Replica, as_dict
from backupd.origin import Origin, instance_of, system_identifier_of
from backupd.repository import Backup, Repository, iso, parse_id, utc_now
from backupd.retention import Item, Policy, decide
from backupd.runs import record_runs
from backupd.stream import sha256_of
from backupd.targets import Target
from backupd.targets.base import (
    LocalFile,
    LocalFileDamaged,
    NotReplaced,
    RemoteFile,
    unreadable_local_file,
    with_retries,
)
from backupd.targets.fetch import read_remote_manifest, targets_for
from backupd.targets.layout import RemoteBackup, on_target, remote_backups

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.replicate")


@dataclass
class TargetOutcome:
    url: str
    ok: bool = True
    sent: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    error: str | None = None
    confirmed: bool = True
    stored: dict[str, int] = field(default_factory=dict)  # database -> backups on the target
    stored_bytes: int = 0
    finished: datetime | None = None
    # (id, why): backups not sent because their local file is damaged, missing or unreadable.
    # Any of them makes the run a failure (ok False), though every other backup was sent.
    refused: list[tuple[str, str]] = field(default_factory=list)
    # (id, why): not sent because a different file of that name is on the target (not ours)
    clashes: list[tuple[str, str]] = field(default_factory=list)
    counted: bool = False  # ``stored`` comes from the target's listing in this run


# More to send to each target after the backups, and its retention there (point-in-time
# recovery's files): given the target and its listing, returns (sent, deleted). Passed in
# by the caller, so replication knows no other feature.
AlsoSent = Callable[[Target, dict[str, RemoteFile]], tuple[list[str], list[str]]]


def run_replicate(settings: Settings, url: str | None = None, budget: float | None = None,
                  also: Sequence[AlsoSent] = ()) -> list[TargetOutcome]:
    """Replicate to every target (or the one named) in parallel; each ends within ``budget``
    seconds. ``also``: what else each target gets, after the backups and their retention."""
    repo = Repository(settings.backup_dir)
    targets = targets_for(settings, url)
    mine = origin.this_origin(settings)
    days = settings.replication_retention_days
    policy = Policy.from_settings(settings).with_days(settings.backup_retention_days if days is None else days)
    outcomes = [TargetOutcome(t.url, confirmed=t.confirms) for t in targets]
    threads = [threading.Thread(target=_replicate_guarded, args=(t, o, repo, policy, mine, also),
                                name=f"replicate {t.url}",
                                daemon=True) for t, o in zip(targets, outcomes, strict=True)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + (budget or settings.backup_timeout)
    for thread, outcome in zip(threads, outcomes, strict=True):
        while thread.is_alive() and time.monotonic() < deadline and not cancel.requested():
            thread.join(min(1.0, max(deadline - time.monotonic(), 0)))
        if cancel.requested():  # interrupted: what is being copied stops at its next block
            thread.join(5)
        if thread.is_alive():
            why = cancel.requested() or "did not finish in time"
            outcome.ok, outcome.error = False, f"{why}; what was sent is kept, the rest follows next run"
            log.error("replication failed", target=outcome.url, error=outcome.error)
    record_runs(repo, outcomes)
    return outcomes


def _replicate_guarded(target: Target, outcome: TargetOutcome, repo: Repository, policy: Policy,
                       mine: Origin, also: Sequence[AlsoSent] = ()) -> None:
    try:
        _replicate(target, outcome, repo, policy, mine, also)
    except (BackupdError, OSError) as err:  # OSError: the local repository, read mid-run
        error = str(err) if isinstance(err, BackupdError) else f"reading the repository failed: {err.strerror or err}"
        outcome.ok, outcome.error = False, error
        log.error("replication failed", target=target.url, error=error, sent=len(outcome.sent))
    if outcome.refused:  # everything else was sent and retention ran: still a failed run
        count = len(outcome.refused)
        not_sent = f"{count} backup{'s' if count > 1 else ''} not sent, the local file damaged: " + ", ".join(
            backup_id for backup_id, _ in outcome.refused)
        outcome.ok = False
        outcome.error = "; ".join(filter(None, [outcome.error, not_sent]))
    if outcome.clashes:
        outcome.ok = False
        outcome.error = "; ".join(filter(None, [outcome.error, *(why for _, why in outcome.clashes)]))
    if outcome.ok:
        log.info("replication finished", target=target.url, sent=len(outcome.sent), deleted=len(outcome.deleted),
                 confirmed=target.confirms)
    outcome.finished = utc_now()


def relative_paths(backup: Backup, root: Path, instance: str) -> tuple[str, str]:
    """(data file, manifest) on a target: the repository's layout, under the instance's folder."""
    return (on_target(instance, backup.path.relative_to(root).as_posix()),
            on_target(instance, backup.manifest_path.relative_to(root).as_posix()))


def _written_here(backup: Backup, me: str) -> bool:
    """A local backup of another instance (a BACKUP_DIR moved, BACKUP_INSTANCE changed) is
    not sent: under this instance's name it would be refused on every fetch."""
    written_by = instance_of(backup.doc, me)
    if written_by != me:
        log.warning("not replicated: the backup was made by another instance", id=backup.id, instance=written_by,
                    this_instance=me)
    return written_by == me


def _replicate(target: Target, outcome: TargetOutcome, repo: Repository, policy: Policy, mine: Origin,
               also: Sequence[AlsoSent]) -> None:
    remote = with_retries(f"list {target.url}", target.list)
    refused: set[tuple[str, str]] = set()  # (kind, id): ids can repeat across kinds
    for backup in repo.backups(kind=None):  # newest first: the most valuable copy lands first
        if reason := cancel.requested():
            raise Aborted(reason)
        if not _written_here(backup, mine.instance):
            continue
        try:
            _send(target, outcome, repo, backup, remote, mine.instance)
        except NotReplaced as err:  # someone else's file has that name: kept, and this one not sent
            refused.add((backup.kind, backup.id))
            outcome.clashes.append((backup.id, str(err)))
            log.error("not replicated", id=backup.id, target=target.url, error=str(err))
        except LocalFileDamaged as err:
            # One bad file never stops the others, nor retention on the target.
            if not backup.manifest_path.exists():
                log.info("deleted locally while replicating; not sent", id=backup.id, target=target.url)
                continue
            refused.add((backup.kind, backup.id))
            _refuse(repo, outcome, target, backup, err.reason, err.mismatch)
    if target.confirms:
        remote = with_retries(f"list {target.url}", target.list)
        outcome.deleted = _apply_retention(target, remote, repo, policy, mine, keep=refused)
        for send_more in also:
            sent, deleted = send_more(target, remote)
            outcome.sent += sent
            outcome.deleted += deleted
        for remote_backup in remote_backups(remote):  # this instance's, as retention sees them
            if remote_backup.in_space(mine.instance, mine.instance) and remote_backup.manifest not in outcome.deleted:
                name = remote_backup.database
                outcome.stored[name] = outcome.stored.get(name, 0) + 1
                outcome.stored_bytes += remote_backup.size
        outcome.counted = True


def _refuse(repo: Repository, outcome: TargetOutcome, target: Target, backup: Backup, why: str,
            mismatch: bool) -> None:
    """A failure of this one backup: in the outcome (exit code, metrics), the log, and, when its
    content does not match (not when it merely cannot be read), the backup's state, so ``list``
    and ``/healthz`` call it damaged (a newest one: unhealthy)."""
    outcome.refused.append((backup.id, why))
    log.error("not replicated: the local file is damaged or unreadable", id=backup.id, database=backup.database,
              target=target.url, error=why)
    if not mismatch:
        return
    try:
        repo.mark_damaged(backup, why)
    except (BackupdError, OSError) as err:
        log.warning("could not record the damage in the backup's state", id=backup.id, error=str(err))


def _local_files(backup: Backup, root: Path, instance: str) -> list[LocalFile]:
    """The data file and the manifest, each with what its copy must match."""
    data_rel, manifest_rel = relative_paths(backup, root, instance)
    if backup.damaged:  # known already (its size, or a checksum mismatch found before): not read again
        raise LocalFileDamaged(data_rel, f"is damaged: {backup.damaged}")
    try:
        manifest_sha, manifest_size = sha256_of(backup.manifest_path), backup.manifest_path.stat().st_size
    except OSError as err:
        raise unreadable_local_file(manifest_rel, err) from None
    return [LocalFile(backup.path, data_rel, backup.sha256 or "", backup.size),
            LocalFile(backup.manifest_path, manifest_rel, manifest_sha, manifest_size)]


def _send(target: Target, outcome: TargetOutcome, repo: Repository, backup: Backup,
          remote: dict[str, RemoteFile], instance: str) -> None:
    """Send one backup's file, then its manifest, each confirmed by checksum. Each target's
    ``put`` checks the local file against the manifest before a copy can replace anything,
    and raises LocalFileDamaged: a damaged file never replaces a good copy on the target."""
    files = _local_files(backup, repo.root, instance)
    record = backup.state_doc.replicas.get(target.url)
    if record and _still_there(target, files, remote, record):
        return
    # Only a copy this instance confirmed at that very name before may be replaced (it
    # changed or was damaged there); any other file of that name is someone else's.
    ours = record.files if record else {}
    sent = {}
    for file in files:  # the data file first, the manifest last
        sent[file.relative] = with_retries(f"send {file.relative}",
                                           partial(target.put, file, replace=file.relative in ours))
    this_copy = {"time": iso(utc_now()), "confirmed": target.confirms, "files": sent}

    def with_this_copy(replicas: Any) -> dict[str, Any]:
        return {**(replicas if isinstance(replicas, dict) else {}), target.url: this_copy}

    try:
        repo.change_state(backup, "replicas", with_this_copy)
    except OSError as err:  # a full local disk: the copy is confirmed all the same, the others go on
        log.warning("the copy is confirmed but could not be recorded locally; it is checked again next run",
                    id=backup.id, target=target.url, error=err.strerror or str(err))
    outcome.sent.append(backup.id)
    log.info("replicated", id=backup.id, target=target.url, confirmed=target.confirms)


def _still_there(target: Target, files: list[LocalFile], remote: dict[str, RemoteFile], record: Replica) -> bool:
    if not target.confirms:
        return True  # nothing to check: sent once is all backupd can know
    for file in files:
        copy = remote.get(file.relative)
        sent = record.files.get(file.relative)
        if copy is None or not target.is_intact(file, copy, as_dict(sent) if sent else {}):
            log.warning("the copy on the target is missing or changed; sending it again", file=file.relative,
                        target=target.url)
            return False
    return True


def _apply_retention(target: Target, remote: dict[str, RemoteFile], repo: Repository, policy: Policy,
                     mine: Origin, keep: set[tuple[str, str]] | None = None) -> list[str]:
    """The whole policy on this instance's copies on the target; pins and the newest-backup
    rule hold there too. What another instance wrote is never deleted, nor even counted.
    The copies named in ``keep`` ((kind, id): backups whose local file is damaged) are kept
    like pinned ones: a copy there may be the only good one left."""
    keep = keep or set()
    local, problems = repo.inventory(kind=None)
    if any(p.kind == "unreadable" for p in problems):  # pins there are out of sight: delete nothing
        log.warning("retention on the target skipped: part of the local repository cannot be read",
                    target=target.url)
        return []
    pinned = {b.id for b in local if b.pinned}
    confirmed = _confirmed_copies(local, target.url)
    groups: dict[str, list[RemoteBackup]] = {}  # one item per backup: an older top-level copy joins its newer one
    for b in remote_backups(remote):
        if b.in_space(mine.instance, mine.instance) and (b.manifest in confirmed or _written_by(target, b, mine)):
            groups.setdefault(f"{b.kind}/{b.id}", []).append(b)
    for b, *_ in groups.values():
        if (b.kind, b.id) in keep:
            log.warning("kept on the target because the local backup is damaged", id=b.id, target=target.url)
    items = [Item(key, (b.kind, b.database), parse_id(b.id)[1], b.id in pinned or (b.kind, b.id) in keep)
             for key, (b, *_) in groups.items()]
    deleted = []
    for decision in decide(items, utc_now(), policy):
        if decision.keep:
            continue
        for doomed in groups[decision.item.id]:
            with_retries(f"delete {doomed.manifest}", partial(target.delete, doomed.manifest))  # unlisted first
            for relative in doomed.data:
                with_retries(f"delete {relative}", partial(target.delete, relative))
            deleted.append(doomed.manifest)
            log.info("deleted on the target by retention", id=doomed.id, target=target.url)
    return deleted


def _confirmed_copies(local: list[Backup], url: str) -> set[str]:
    """Paths this instance sent to the target and confirmed there: its own for sure, since
    an upload never replaces another's file."""
    paths: set[str] = set()
    for backup in local:
        record = backup.state_doc.replicas.get(url)
        paths.update(record.files if record else ())
    return paths


def _written_by(target: Target, copy: RemoteBackup, mine: Origin) -> bool:
    """Did this instance write a copy it has no record of (gone locally, or a new machine)?
    Its manifest must name this instance and this server; a manifest from before origins
    were recorded is this instance's. One of this name from another server (two hosts with
    the same compose project and service) or one that cannot be read is kept."""
    manifest = read_remote_manifest(target, copy.manifest)
    instance = instance_of(manifest, mine.instance) if manifest is not None else None
    server = system_identifier_of(manifest) if manifest is not None else None
    ours = instance == mine.instance and (server is None or server == mine.system_identifier)
    if not ours:
        log.warning("kept on the target: not written by this instance and server", id=copy.id, target=target.url,
                    manifest=copy.manifest, instance=instance, system_identifier=server,
                    this_system_identifier=mine.system_identifier)
    return ours


