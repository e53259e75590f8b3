"""``backupd replicate``: copies of every backup on each target (3-2-1).

For each target: list what is there, send what is missing or damaged (the data
file first, the manifest last, so a half-sent backup never looks complete),
confirm each copy by checksum and only then record the target in the backup's
``<id>.state.json``. Then apply retention on the target with the whole policy,
``REPLICATION_RETENTION_DAYS`` replacing only the age rule. Targets run side by
side; one that is down fails on its own, after bounded retries, and holds up no
other. Also: fetching a backup back from a target (disaster recovery).
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
from pathlib import Path

from backupd.errors import BackupdError, IntegrityError, NotFoundError, UsageError
from backupd.logging import get_logger
from backupd.repository import GLOBALS, VOLUMES, Backup, Repository, decode_name, encode_name, iso, parse_id, utc_now
from backupd.retention import Item, Policy, decide
from backupd.stream import fsync_dir, sha256_of, write_json_atomically
from backupd.targets import Target, TargetError, configured_targets
from backupd.targets.base import LocalFile, RemoteFile, with_retries

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
    days = settings.replication_retention_days
    policy = Policy.from_settings(settings).with_days(settings.backup_retention_days if days is None else days)
    outcomes = [TargetOutcome(t.url, confirmed=t.confirms) for t in targets]
    threads = [threading.Thread(target=_replicate_guarded, args=(t, o, repo, policy), name=f"replicate {t.url}",
                                daemon=True) for t, o in zip(targets, outcomes)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + (budget or settings.backup_timeout)
    for thread, outcome in zip(threads, outcomes):
        thread.join(max(deadline - time.monotonic(), 0))
        if thread.is_alive():
            outcome.ok, outcome.error = False, "did not finish in time; what was sent is kept, the rest follows next run"
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
            "last_success": iso(outcome.finished or utc_now()) if outcome.ok else previous.get("last_success"),
            "stored": outcome.stored if outcome.ok else previous.get("stored", {}),
            "stored_bytes": outcome.stored_bytes if outcome.ok else previous.get("stored_bytes", 0),
        }
    repo.ensure_folder(repo.root)
    write_json_atomically(repo.root / RUNS_FILE, json.dumps(runs, indent=2, sort_keys=True) + "\n")


def read_runs(repo: Repository) -> dict[str, dict]:
    try:
        return json.loads((repo.root / RUNS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _replicate_guarded(target: Target, outcome: TargetOutcome, repo: Repository, policy: Policy) -> None:
    try:
        _replicate(target, outcome, repo, policy)
    except BackupdError as err:
        outcome.ok, outcome.error = False, str(err)
        log.error("replication failed", target=target.url, error=str(err), sent=len(outcome.sent))
    else:
        log.info("replication finished", target=target.url, sent=len(outcome.sent), deleted=len(outcome.deleted),
                 confirmed=target.confirms)
    outcome.finished = utc_now()


def relative_paths(backup: Backup, root: Path) -> tuple[str, str]:
    """(data file, manifest) relative to the repository root: the same layout on every target."""
    return (backup.path.relative_to(root).as_posix(), backup.manifest_path.relative_to(root).as_posix())


def _replicate(target: Target, outcome: TargetOutcome, repo: Repository, policy: Policy) -> None:
    remote = with_retries(f"list {target.url}", target.list)
    for backup in repo.backups(kind=None):  # newest first: the most valuable copy lands first
        data_rel, manifest_rel = relative_paths(backup, repo.root)
        files = [LocalFile(backup.path, data_rel, backup.manifest["sha256"], backup.size),
                 LocalFile(backup.manifest_path, manifest_rel, sha256_of(backup.manifest_path),
                           backup.manifest_path.stat().st_size)]
        record = backup.state.get("replicas", {}).get(target.url)
        if record and _still_there(target, files, remote, record):
            continue
        sent = {}
        for file in files:  # the data file first, the manifest last
            sent[file.relative] = with_retries(f"send {file.relative}", lambda f=file: target.put(f))
        replicas = {**backup.state.get("replicas", {}),
                    target.url: {"time": iso(utc_now()), "confirmed": target.confirms, "files": sent}}
        repo.update_state(backup, "replicas", replicas)
        outcome.sent.append(backup.id)
        log.info("replicated", id=backup.id, target=target.url, confirmed=target.confirms)
    if target.confirms:
        remote = with_retries(f"list {target.url}", target.list)
        outcome.deleted = _apply_retention(target, remote, repo, policy)
        for remote_backup in _remote_backups_all(remote):
            if remote_backup.manifest not in outcome.deleted:
                name = remote_backup.database
                outcome.stored[name] = outcome.stored.get(name, 0) + 1
                outcome.stored_bytes += remote_backup.size


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


@dataclass(frozen=True)
class RemoteBackup:
    id: str
    database: str
    manifest: str  # relative path of the manifest on the target
    data: list[str]  # relative paths of its other files
    size: int

    @property
    def kind(self) -> str:
        if self.manifest.startswith(f"{VOLUMES}/"):
            return "volume"
        return "globals" if self.manifest.startswith(f"{GLOBALS}/") else "database"


def _remote_backups(remote: dict[str, RemoteFile]) -> dict[str, RemoteBackup]:
    """Database backups and roles dumps on a target, by id (a volume may share a database's id)."""
    return {b.id: b for b in _remote_backups_all(remote) if b.kind != "volume"}


def _remote_backups_all(remote: dict[str, RemoteFile]) -> list[RemoteBackup]:
    """Every backup on a target, from file names alone: ``<folder>/<encoded id>.json``."""
    found = []
    for relative in remote:
        folder, _, name = relative.rpartition("/")
        nested = folder.startswith(f"{VOLUMES}/") and folder.count("/") == 1
        if not folder or ("/" in folder and not nested) or not name.endswith(".json") or name.endswith(".state.json"):
            continue
        stem = name[:-5]
        try:
            backup_id = decode_name(stem)
            database, _ = parse_id(backup_id)
        except (UsageError, ValueError):
            continue
        if folder not in (encode_name(database), GLOBALS, f"{VOLUMES}/{encode_name(database)}"):
            continue  # not laid out by backupd: never fetched, never deleted
        data = [r for r in remote if r.startswith(f"{folder}/{stem}.") and r != relative]
        found.append(RemoteBackup(backup_id, database, relative, data, sum(remote[r].size for r in [relative, *data])))
    return found


def _apply_retention(target: Target, remote: dict[str, RemoteFile], repo: Repository, policy: Policy) -> list[str]:
    """The whole policy on the target; pins and the newest-backup rule hold there too."""
    backups = {b.manifest: b for b in _remote_backups_all(remote)}  # keyed by path: ids can repeat across kinds
    pinned = {b.id for b in repo.backups(kind=None) if b.pinned}
    items = [Item(path, (b.kind, b.database), parse_id(b.id)[1], b.id in pinned) for path, b in backups.items()]
    deleted = []
    for decision in decide(items, utc_now(), policy):
        if decision.keep:
            continue
        doomed = backups[decision.item.id]
        with_retries(f"delete {doomed.manifest}", lambda: target.delete(doomed.manifest))  # unlisted first
        for relative in doomed.data:
            with_retries(f"delete {relative}", lambda r=relative: target.delete(r))
        deleted.append(doomed.manifest)
        log.info("deleted on the target by retention", id=doomed.id, target=target.url)
    return deleted


# Disaster recovery -------------------------------------------------------------------------
def list_remote(settings, url: str) -> list[Backup]:
    """The backups on a target, with their manifests read from there."""
    (target,) = targets_for(settings, url)
    remote = with_retries(f"list {target.url}", target.list)
    backups = []
    with tempfile.TemporaryDirectory(prefix="backupd-list-") as folder:
        for remote_backup in _remote_backups(remote).values():
            local = Path(folder) / "manifest.json"
            target.get(remote_backup.manifest, local)
            manifest = json.loads(local.read_text(encoding="utf-8"))
            backups.append(Backup(manifest=manifest, folder=Path(remote_backup.manifest).parent))
    backups.sort(key=lambda b: (b.time, b.id), reverse=True)
    return backups


def fetch(settings, repo: Repository, backup_id: str, targets: list[Target] | None = None,
          kind: str = "database") -> Backup:
    """Bring a backup (and its roles dump) or a volume archive from the first target that has
    it into the local repository, checked against its manifest; the local repository may be
    empty (a new machine)."""
    for target in targets if targets is not None else [t for t in configured_targets(settings) if t.confirms]:
        try:
            remote = with_retries(f"list {target.url}", target.list)
        except TargetError as err:
            log.warning("target not reachable", target=target.url, error=str(err))
            continue
        found = next((b for b in _remote_backups_all(remote) if b.id == backup_id
                      and (b.kind == kind or kind == "database" and b.kind == "globals")), None)
        if found is None:
            continue
        backup = _fetch_files(target, repo, found)
        log.info("fetched from a target", id=backup_id, target=target.url)
        globals_id = backup.manifest.get("globals_id")
        if globals_id and globals_id != backup_id:
            try:
                repo.find(globals_id)
            except NotFoundError:
                remote_globals = _remote_backups(remote).get(globals_id)
                if remote_globals:
                    _fetch_files(target, repo, remote_globals)
        return backup
    raise NotFoundError(f"no backup with id {backup_id!r} locally or on any replication target")


def newest_remote_id(settings, database: str | None, kind: str = "database") -> str:
    """The newest backup id of ``database`` (or volume) on the targets (``latest`` on a new machine)."""
    noun, option = ("volume", "--volume") if kind == "volume" else ("database", "--database")
    ids = []
    for target in (t for t in configured_targets(settings) if t.confirms):
        try:
            remote = with_retries(f"list {target.url}", target.list)
        except TargetError:
            continue
        ids += [b for b in _remote_backups_all(remote) if b.kind == kind
                and (database is None or b.database == database)]
    if not ids:
        raise NotFoundError(f"no backups of {noun} {database or ''!r} locally or on any replication target")
    if database is None and len({b.database for b in ids}) > 1:
        raise UsageError(f"'latest' needs {option}: the targets hold backups of several")
    return max(ids, key=lambda b: parse_id(b.id)[1]).id


def _fetch_files(target: Target, repo: Repository, found: RemoteBackup) -> Backup:
    remote_folder = found.manifest.rpartition("/")[0]  # e.g. "shop" or "_volumes/uploads"
    folder = repo.ensure_folder(repo.root / remote_folder)
    with repo.lock(folder, "fetch"), tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as staging:
        staged_manifest = Path(staging) / "manifest.json"
        with_retries(f"fetch {found.manifest}", lambda: target.get(found.manifest, staged_manifest))
        manifest = json.loads(staged_manifest.read_text(encoding="utf-8"))
        data_name = manifest["file"]
        if "/" in data_name or data_name.startswith("."):
            raise IntegrityError(f"the manifest of {found.id} on {target.url} names an unsafe file {data_name!r}")
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


def fetch_url(settings, repo: Repository, url: str) -> Backup:
    """``backupd restore URL``: the URL of a backup file (or its manifest) on a target."""
    from backupd.targets import make_target
    from backupd.redact import strip_url_credentials

    shown = strip_url_credentials(url)
    for target in configured_targets(settings):
        if target.confirms and shown.startswith(target.url.rstrip("/") + "/"):
            relative = shown[len(target.url.rstrip("/")) + 1:]
            break
    else:  # not a configured target: the layout is always <root>/<folder>/<file>
        root, folder, name = url.rsplit("/", 2)
        target, relative = make_target(root, settings), f"{folder}/{name}"
    match = _FILE_OF_BACKUP.match(relative.rpartition("/")[2])
    if not match:
        raise UsageError(f"{shown!r} does not name a backup file (<id>.<ext> or <id>.json)")
    return fetch(settings, repo, decode_name(match.group(1)), [target])


# "<encoded id>.<ext>": the id ends with its time, so a dot inside a database name is no trouble.
_FILE_OF_BACKUP = re.compile(r"^(.+-\d{8}T\d{6}Z)(?:\..*)?$")
