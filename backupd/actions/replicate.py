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

import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from backupd import cancel, manifests, origin
from backupd.documents import InvalidDocument
from backupd.errors import Aborted, BackupdError, IntegrityError, NotFoundError, UsageError
from backupd.logging import get_logger
from backupd.origin import INSTANCE_PATTERN, Origin, check_fetched, instance_of, system_identifier_of
from backupd.repository import (
    Backup,
    Repository,
    decode_name,
    encode_name,
    iso,
    parse_id,
    utc_now,
)
from backupd.retention import Item, Policy, decide
from backupd.stream import fsync_dir, sha256_of, write_json_atomically
from backupd.targets import Target, TargetError, configured_targets
from backupd.targets.base import (
    LocalFile,
    LocalFileDamaged,
    NotReplaced,
    RemoteFile,
    unreadable_local_file,
    with_retries,
)
from backupd.targets.layout import RemoteBackup, on_target, remote_backups, split_instance

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
    pitr_retention: tuple[int, int] = (14, 1)  # PITR_RETENTION_DAYS, BACKUP_MIN_KEEP


def targets_for(settings, url: str | None = None) -> list[Target]:
    targets = configured_targets(settings)
    if url:
        targets = [t for t in targets if t.url == url or t.url.rstrip("/") == url.rstrip("/")]
        if not targets:
            raise UsageError(f"{url!r} is not one of the configured replication targets")
    if not targets:
        raise UsageError("no replication targets are configured (REPLICATION_TARGETS)")
    return targets


def run_replicate(settings, url: str | None = None, budget: float | None = None) -> list[TargetOutcome]:
    """Replicate to every target (or the one named) in parallel; each ends within ``budget`` seconds."""
    repo = Repository(settings.backup_dir)
    targets = targets_for(settings, url)
    mine = origin.this_origin(settings)
    days = settings.replication_retention_days
    policy = Policy.from_settings(settings).with_days(settings.backup_retention_days if days is None else days)
    outcomes = [TargetOutcome(t.url, confirmed=t.confirms,
                              pitr_retention=(settings.pitr_retention_days, settings.backup_min_keep))
                for t in targets]
    threads = [threading.Thread(target=_replicate_guarded, args=(t, o, repo, policy, mine), name=f"replicate {t.url}",
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


RUNS_FILE = ".replication.json"


def record_runs(repo: Repository, outcomes: list[TargetOutcome]) -> None:
    """Remember each target's newest run beside the backups, so metrics and /status show
    runs of the CLI and of earlier processes too."""
    runs = read_runs(repo)
    for outcome in outcomes:
        previous = runs.get(outcome.url, {})
        runs[outcome.url] = {
            "time": iso(outcome.finished or utc_now()), "ok": outcome.ok, "error": outcome.error,
            "sent": len(outcome.sent), "deleted": len(outcome.deleted), "confirmed": outcome.confirmed,
            "refused": [{"id": backup_id, "reason": why} for backup_id, why in outcome.refused],
            "last_success": iso(outcome.finished or utc_now()) if outcome.ok else previous.get("last_success"),
            "stored": outcome.stored if outcome.counted else previous.get("stored", {}),
            "stored_bytes": outcome.stored_bytes if outcome.counted else previous.get("stored_bytes", 0),
        }
    repo.ensure_folder(repo.root)
    write_json_atomically(repo.root / RUNS_FILE, json.dumps(runs, indent=2, sort_keys=True) + "\n")


def read_runs(repo: Repository) -> dict[str, dict]:
    try:
        return manifests.read_runs(repo.root / RUNS_FILE)
    except OSError:
        return {}
    except InvalidDocument as err:  # listed as invalid by the inventory; never a crash of a view
        log.warning("ignoring an invalid run history", file=str(repo.root / RUNS_FILE), error=str(err))
        return {}


def _replicate_guarded(target: Target, outcome: TargetOutcome, repo: Repository, policy: Policy,
                       mine: Origin) -> None:
    try:
        _replicate(target, outcome, repo, policy, mine)
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
    try:
        written_by = instance_of(backup.manifest, me)
    except IntegrityError:
        written_by = "(an origin that is not valid)"
    if written_by != me:
        log.warning("not replicated: the backup was made by another instance", id=backup.id, instance=written_by,
                    this_instance=me)
    return written_by == me


def _replicate(target: Target, outcome: TargetOutcome, repo: Repository, policy: Policy, mine: Origin) -> None:
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
        _replicate_pitr(target, outcome, repo, remote)
        for remote_backup in remote_backups(remote):  # this instance's, as retention sees them
            if remote_backup.in_space(mine.instance, mine.instance) and remote_backup.manifest not in outcome.deleted:
                name = remote_backup.database
                outcome.stored[name] = outcome.stored.get(name, 0) + 1
                outcome.stored_bytes += remote_backup.size
        outcome.counted = True


def _replicate_pitr(target: Target, outcome: TargetOutcome, repo: Repository, remote: dict[str, RemoteFile]) -> None:
    """Base backups and archived WAL (point-in-time recovery), when there are any."""
    from backupd.pitr.replicate import replicate_store
    from backupd.pitr.store import Store

    for store in Store.all(repo.root):
        sent, deleted = replicate_store(target, remote, store, repo.root, outcome.pitr_retention)
        outcome.sent += sent
        outcome.deleted += deleted


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
    return [LocalFile(backup.path, data_rel, backup.manifest["sha256"], backup.size),
            LocalFile(backup.manifest_path, manifest_rel, manifest_sha, manifest_size)]


def _send(target: Target, outcome: TargetOutcome, repo: Repository, backup: Backup,
          remote: dict[str, RemoteFile], instance: str) -> None:
    """Send one backup's file, then its manifest, each confirmed by checksum. Each target's
    ``put`` checks the local file against the manifest before a copy can replace anything,
    and raises LocalFileDamaged: a damaged file never replaces a good copy on the target."""
    files = _local_files(backup, repo.root, instance)
    record = backup.state.get("replicas", {}).get(target.url)
    if record and _still_there(target, files, remote, record):
        return
    # Only a copy this instance confirmed at that very name before may be replaced (it
    # changed or was damaged there); any other file of that name is someone else's.
    ours = record.get("files", {}) if isinstance(record, dict) and isinstance(record.get("files"), dict) else {}
    sent = {}
    for file in files:  # the data file first, the manifest last
        sent[file.relative] = with_retries(f"send {file.relative}",
                                           partial(target.put, file, replace=file.relative in ours))
    record = {"time": iso(utc_now()), "confirmed": target.confirms, "files": sent}

    def with_this_copy(replicas: Any) -> dict:
        return {**(replicas if isinstance(replicas, dict) else {}), target.url: record}

    try:
        repo.change_state(backup, "replicas", with_this_copy)
    except OSError as err:  # a full local disk: the copy is confirmed all the same, the others go on
        log.warning("the copy is confirmed but could not be recorded locally; it is checked again next run",
                    id=backup.id, target=target.url, error=err.strerror or str(err))
    outcome.sent.append(backup.id)
    log.info("replicated", id=backup.id, target=target.url, confirmed=target.confirms)


def _still_there(target: Target, files: list[LocalFile], remote: dict[str, RemoteFile], record: dict) -> bool:
    if not target.confirms:
        return True  # nothing to check: sent once is all backupd can know
    for file in files:
        copy = remote.get(file.relative)
        if copy is None or not target.is_intact(file, copy, record.get("files", {}).get(file.relative, {})):
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
        record = backup.state.get("replicas", {}).get(url)
        files = record.get("files") if isinstance(record, dict) else None
        paths.update(files if isinstance(files, dict) else ())
    return paths


def _written_by(target: Target, copy: RemoteBackup, mine: Origin) -> bool:
    """Did this instance write a copy it has no record of (gone locally, or a new machine)?
    Its manifest must name this instance and this server; a manifest from before origins
    were recorded is this instance's. One of this name from another server (two hosts with
    the same compose project and service) or one that cannot be read is kept."""
    manifest = _read_manifest(target, copy.manifest)
    try:
        instance = instance_of(manifest, mine.instance) if manifest is not None else None
    except IntegrityError:
        instance = None
    server = system_identifier_of(manifest) if manifest is not None else None
    ours = instance == mine.instance and (server is None or server == mine.system_identifier)
    if not ours:
        log.warning("kept on the target: not written by this instance and server", id=copy.id, target=target.url,
                    manifest=copy.manifest, instance=instance, system_identifier=server,
                    this_system_identifier=mine.system_identifier)
    return ours


def _read_manifest(target: Target, relative: str) -> dict | None:
    """A manifest on the target, parsed; None when it cannot be fetched or is not an object."""
    with tempfile.TemporaryDirectory(prefix="backupd-manifest-") as folder:
        local = Path(folder) / "manifest.json"
        try:
            with_retries(f"fetch {relative}", partial(target.get, relative, local))
            manifest = json.loads(local.read_text(encoding="utf-8"))
        except (TargetError, OSError, ValueError) as err:
            log.warning("a manifest on the target cannot be read", manifest=relative, target=target.url,
                        error=str(err))
            return None
    return manifest if isinstance(manifest, dict) else None


# Disaster recovery -------------------------------------------------------------------------
FOREIGN = ".instances"  # BACKUP_DIR/.instances/<instance>/: another instance's backups, fetched to restore


def foreign_repository(settings, instance: str) -> Repository:
    """Where another instance's backups are fetched: never among this instance's own (an id
    of the same second would collide, and retention or replication would take them for
    this instance's). The folder is hidden, so the repository never lists it."""
    holder = Path(settings.backup_dir) / FOREIGN
    Repository(Path(settings.backup_dir)).ensure_folder(holder)
    return Repository(holder / instance)


def forget_foreign(settings) -> None:
    """Remove what was fetched of other instances (after the restore that needed it)."""
    shutil.rmtree(Path(settings.backup_dir) / FOREIGN, ignore_errors=True)


def repository_holding(repo: Repository, backup: Backup) -> Repository:
    """The repository a backup was found or fetched into (its roles dump is there too)."""
    holder = repo.root / FOREIGN
    if backup.folder.is_relative_to(holder) and backup.folder != holder:
        return Repository(holder / backup.folder.relative_to(holder).parts[0])
    return repo


def list_remote(settings, url: str, instance: str | None = None) -> list[tuple[Backup, str]]:
    """The backups on a target (every instance's, or ``instance``'s), with their manifests
    read from there, each with the instance that made it."""
    (target,) = targets_for(settings, url)
    me = origin.this_instance_or_none(settings) or "-"
    remote = with_retries(f"list {target.url}", target.list)
    backups = []
    for remote_backup in remote_backups(remote):
        owner = remote_backup.instance or me
        if remote_backup.kind == "volume" or (instance is not None and owner != instance):
            continue
        manifest = _read_manifest(target, remote_backup.manifest)
        try:
            written_by = instance_of(manifest, owner) if manifest is not None else None
            backup = Backup(manifest=manifest, folder=Path(remote_backup.manifest).parent) if manifest else None
            if backup is not None and (backup.id != remote_backup.id or written_by is None):
                backup = None
        except (IntegrityError, KeyError, TypeError, ValueError, UsageError):
            backup = None
        if backup is None or written_by is None:
            log.warning("not listed: its manifest on the target is not valid", manifest=remote_backup.manifest,
                        target=target.url)
            continue
        backups.append((backup, written_by))
    backups.sort(key=lambda found: (found[0].time, found[0].id, found[1]), reverse=True)
    return backups


def _pick(copies: list[RemoteBackup], instance: str, me: str) -> RemoteBackup | None:
    """``instance``'s copy, the one under its folder before an older top-level one."""
    return next((b for b in sorted(copies, key=lambda b: b.instance is None) if b.in_space(instance, me)), None)


def fetch(settings, repo: Repository, backup_id: str, targets: list[Target] | None = None,
          kind: str = "database", instance: str | None = None) -> Backup:
    """Bring a backup (and its roles dump) or a volume archive of this instance, or of
    ``instance``, from the first target that has it into the local repository, checked
    against its manifest; the local repository may be empty (a new machine). Another
    instance's backup goes to a repository of its own (``foreign_repository``)."""
    me = origin.this_instance(settings)
    asked = instance or me
    into = repo if asked == me else foreign_repository(settings, asked)
    elsewhere: set[str] = set()
    for target in targets if targets is not None else [t for t in configured_targets(settings) if t.confirms]:
        try:
            remote = with_retries(f"list {target.url}", target.list)
        except TargetError as err:
            log.warning("target not reachable", target=target.url, error=str(err))
            continue
        every = remote_backups(remote)
        copies = [b for b in every
                  if b.id == backup_id and (b.kind == kind or kind == "database" and b.kind == "globals")]
        found = _pick(copies, asked, me)
        if found is None:
            elsewhere.update(b.instance for b in copies if b.instance and b.instance != asked)
            continue
        backup = _fetch_files(target, into, found, asked)
        log.info("fetched from a target", id=backup_id, target=target.url, instance=asked)
        globals_id = backup.manifest.get("globals_id")
        if globals_id and globals_id != backup_id:
            try:
                into.find(globals_id, kind="globals")
            except NotFoundError:
                remote_globals = _pick([b for b in every if b.id == globals_id and b.kind == "globals"], asked, me)
                if remote_globals:
                    _fetch_files(target, into, remote_globals, asked)
        return backup
    hint = (f"; instance {', '.join(sorted(elsewhere))} has a backup of that id: name it with --instance"
            if elsewhere else "")
    raise NotFoundError(f"no backup with id {backup_id!r} of instance {asked!r} locally or on any replication "
                        f"target{hint}")


def newest_remote_id(settings, database: str | None, kind: str = "database", instance: str | None = None) -> str:
    """The newest backup id of ``database`` (or volume) of this instance (or ``instance``) on
    the targets (``latest`` on a new machine)."""
    noun, option = ("volume", "--volume") if kind == "volume" else ("database", "--database")
    me = origin.this_instance(settings)
    asked = instance or me
    ids = []
    for target in (t for t in configured_targets(settings) if t.confirms):
        try:
            remote = with_retries(f"list {target.url}", target.list)
        except TargetError:
            continue
        ids += [b for b in remote_backups(remote) if b.kind == kind and b.in_space(asked, me)
                and (database is None or b.database == database)]
    if not ids:
        raise NotFoundError(f"no backups of {noun} {database or ''!r} of instance {asked!r} locally or on any "
                            f"replication target")
    if database is None and len({b.database for b in ids}) > 1:
        raise UsageError(f"'latest' needs {option}: the targets hold backups of several")
    return max(ids, key=lambda b: parse_id(b.id)[1]).id


def _fetch_files(target: Target, repo: Repository, found: RemoteBackup, instance: str) -> Backup:
    remote_folder = found.manifest.rpartition("/")[0]  # e.g. "site-a/shop", "shop" or "site-a/_volumes/uploads"
    folder = repo.ensure_folder(repo.root / split_instance(found.manifest)[1].rpartition("/")[0])
    with repo.lock(folder, "fetch"), tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as staging:
        staged_manifest = Path(staging) / "manifest.json"
        with_retries(f"fetch {found.manifest}", lambda: target.get(found.manifest, staged_manifest))
        try:
            manifest = json.loads(staged_manifest.read_text(encoding="utf-8"))
        except ValueError:
            manifest = None
        if isinstance(manifest, dict):  # refused (exit 2) before anything of it is kept
            check_fetched(manifest, instance, f"{target.url}/{found.manifest}")
        if not isinstance(manifest, dict) or not _describes(manifest, found.id, folder):
            raise IntegrityError(f"the manifest of {found.id} on {target.url} is not backupd's manifest of "
                                 f"that backup (its id, file name, size or checksum); nothing was fetched")
        data_name = manifest["file"]
        staged_data = Path(staging) / data_name
        with_retries(f"fetch {data_name}", lambda: target.get(f"{remote_folder}/{data_name}", staged_data))
        if sha256_of(staged_data) != manifest["sha256"]:
            raise IntegrityError(f"the copy of {found.id} on {target.url} does not match its manifest")
        staged_data.chmod(0o600)
        staged_manifest.chmod(0o600)
        shutil.move(staged_data, folder / data_name)
        shutil.move(staged_manifest, folder / f"{encode_name(manifest['id'])}.json")
        fsync_dir(folder)
    return repo.find(manifest["id"], kind="volume" if found.kind == "volume" else "database")


def _describes(manifest: dict, backup_id: str, folder: Path) -> bool:
    """A fetched manifest is believed only about the backup it was fetched as, and only about
    a file of backupd's own name: it can never name, and so overwrite, anything else."""
    try:
        return manifest.get("id") == backup_id and Repository.accounts_for(
            Backup(manifest=manifest, folder=folder), f"{encode_name(backup_id)}.json")
    except (KeyError, TypeError, ValueError, UsageError):
        return False


def fetch_url(settings, repo: Repository, url: str) -> Backup:
    """``backupd restore URL``: the URL of a backup file (or its manifest) on a target. The
    path names the instance (its folder; the top level is this instance's): naming the
    file is naming the instance."""
    from backupd.redact import strip_url_credentials

    shown = strip_url_credentials(url)
    for target in configured_targets(settings):
        if target.confirms and shown.startswith(target.url.rstrip("/") + "/"):
            relative = shown[len(target.url.rstrip("/")) + 1:]
            break
    else:
        target, relative = _unconfigured_target(settings, url)
    match = _FILE_OF_BACKUP.match(relative.rpartition("/")[2])
    if not match:
        raise UsageError(f"{shown!r} does not name a backup file (<id>.<ext> or <id>.json)")
    return fetch(settings, repo, decode_name(match.group(1)), [target], instance=split_instance(relative)[0])


def _unconfigured_target(settings, url: str) -> tuple[Target, str]:
    """Not a configured target: the layout is ``<root>/<instance>/<folder>/<file>``, or
    ``<root>/<folder>/<file>`` from before instances; the first that the target has."""
    from backupd.targets import make_target

    parts = url.rsplit("/", 3)
    if len(parts) == 4 and INSTANCE_PATTERN.fullmatch(parts[1]) and "://" in parts[0][:-1]:
        target, relative = make_target(parts[0], settings), "/".join(parts[1:])
        try:
            if relative in with_retries(f"list {target.url}", target.list):
                return target, relative
        except TargetError:
            pass  # perhaps not a root at all: the older layout below
    root, folder, name = url.rsplit("/", 2)
    return make_target(root, settings), f"{folder}/{name}"


# "<encoded id>.<ext>": the id ends with its time, so a dot inside a database name is no trouble.
_FILE_OF_BACKUP = re.compile(r"^(.+-\d{8}T\d{6}Z|globals@\d{8}T\d{6}Z)(?:\..*)?$")
