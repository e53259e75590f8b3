"""PITR files on the replication targets, in the same layout as in BACKUP_DIR: each base
backup (its data first, the manifest last), every archived WAL file, the timeline
histories, the gaps and what the cluster is. Each copy is confirmed by checksum like a
dump's; a WAL file's checksum is computed once and remembered. On the target, retention
keeps the same recovery window, judged from the target's own manifests. A restore on a
machine that lost BACKUP_DIR fetches what it needs from the first target that has it."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.documents import InvalidDocument, decode, parse
from backupd.logging import get_logger
from backupd.pitr.chains import fetch_chain
from backupd.pitr.pruning import decide_bases, wal_to_delete
from backupd.pitr.records import Invalid, ReplicatedFile, ReplicatedTargets, warn_invalid
from backupd.pitr.store import RECORD_SUFFIX, Base, Store
from backupd.pitr.walfiles import ARCHIVED as _ARCHIVED
from backupd.repository import PITR, utc_now
from backupd.retention import Policy
from backupd.stream import sha256_of, write_json_atomically
from backupd.targets import configured_targets
from backupd.targets.base import LocalFile, RemoteFile, Target, TargetError, with_retries

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("pitr")

STATE = ".replicated.json"  # per target: relative path -> {"sha256", "size", "mtime", "record"}
_METADATA = ("cluster.json", "gaps.json")


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def local_files(store: Store, root: Path, known: dict[str, ReplicatedFile]) -> list[LocalFile]:
    """What goes to a target, the metadata first and each base backup's manifest last."""
    def described(path: Path, sha256: str | None = None) -> LocalFile:
        relative = _relative(path, root)
        stat = path.stat()
        cached = known.get(relative)
        if sha256 is None:
            if cached is not None and cached.size == stat.st_size and cached.mtime == stat.st_mtime:
                sha256 = cached.sha256
            else:
                sha256 = sha256_of(path)
        return LocalFile(path, relative, sha256, stat.st_size)

    files = [described(store.root / name) for name in _METADATA if (store.root / name).exists()]
    if store.timelines_dir.exists():
        files += [described(p) for p in sorted(store.timelines_dir.iterdir()) if not p.name.startswith(".")]
    for name, path in sorted(store.archived().items()):  # each WAL file, then its record
        files.append(described(path))
        if (record := store.wal_dir / (name + RECORD_SUFFIX)).exists():
            files.append(described(record))
    for base in reversed(store.bases()):  # oldest first
        files.append(described(base.path, base.sha256))
        if base.server_manifest_path.exists():
            files.append(described(base.server_manifest_path))
        files.append(described(base.manifest_path))
    return files


def replicate_store(target: Target, remote: dict[str, RemoteFile], store: Store, root: Path,
                    retention: tuple[int, int]) -> tuple[list[str], list[str]]:
    """Send what the target lacks or holds changed; then retention there (``retention``:
    PITR_RETENTION_DAYS, BACKUP_MIN_KEEP). Returns (sent, deleted)."""
    state_path = store.root / STATE
    state = _load_state(state_path)
    known = dict(state.get(target.url, {}))
    sent = []
    for file in local_files(store, root, known):
        record = known.get(file.relative)
        copy = remote.get(file.relative)
        if (record is not None and record.sha256 == file.sha256 and copy is not None
                and target.is_intact(file, copy, record.record)):
            continue
        # Under this cluster's own folder; metadata and gaps change, and their copy follows.
        confirmation = with_retries(f"send {file.relative}", partial(target.put, file, replace=True))
        known[file.relative] = ReplicatedFile(sha256=file.sha256, size=file.size, mtime=file.path.stat().st_mtime,
                                              record=confirmation)
        sent.append(file.relative)
    present = {f.relative for f in local_files(store, root, known)}
    state[target.url] = {relative: value for relative, value in known.items() if relative in present}
    stored = {url: {relative: sent.model_dump(mode="json") for relative, sent in files.items()}
              for url, files in state.items()}
    write_json_atomically(state_path, json.dumps(stored, indent=1, sort_keys=True))
    deleted = _retention(target, remote, store, root, retention)
    if sent or deleted:
        log.info("PITR files replicated", target=target.url, sent=len(sent), deleted=len(deleted))
    return sent, deleted


def _load_state(path: Path) -> dict[str, dict[str, ReplicatedFile]]:
    """What was sent to each target; when it is invalid, nothing is known to be there, and
    every file is checked against the target again (costly once, never wrong)."""
    try:
        return parse(ReplicatedTargets, {"targets": decode(path.read_bytes())}).targets
    except OSError:
        return {}
    except InvalidDocument as err:
        warn_invalid(Invalid(path.name, str(err)))
        return {}


def _remote_bases(target: Target, remote: dict[str, RemoteFile], prefix: str) -> list[tuple[Base, str]]:
    """The base backups on the target, by their own manifests there: (base, manifest path)."""
    found = []
    with tempfile.TemporaryDirectory(prefix="backupd-pitr-") as folder:
        for relative in remote:
            name = relative.removeprefix(f"{prefix}/base/")
            if relative.startswith(f"{prefix}/base/base-") and "/" not in name and name.endswith(".json"):
                local = Path(folder) / name  # its own name: Base.load checks the id against it
                with_retries(f"fetch {relative}", partial(target.get, relative, local))
                try:
                    found.append((Base.load(local), relative))
                except (OSError, InvalidDocument) as err:  # never followed, never deleted there
                    log.warning("an invalid base backup manifest on a target is ignored", target=target.url,
                                file=relative, error=str(err))
    return sorted(found, key=lambda f: f[0].order, reverse=True)


def _retention(target: Target, remote: dict[str, RemoteFile], store: Store, root: Path,
               retention: tuple[int, int]) -> list[str]:
    settings_days, min_keep = retention
    prefix = _relative(store.root, root)
    bases = _remote_bases(target, remote, prefix)
    if not bases:
        return []
    def left(base_id: str) -> bool:  # what the target still holds of a base its listing skipped
        return any(r.startswith(f"{prefix}/base/{base_id}.") for r in remote)

    decided = decide_bases([b for b, _ in bases], utc_now(), Policy.recovery_window(settings_days, min_keep),
                           store.pinned(), left)
    keep = {base.id for base, decision in decided if decision.keep}
    deleted = []
    for base, manifest in bases:
        if base.id in keep:
            continue
        doomed = [manifest] + [r for r in remote if r.startswith(f"{prefix}/base/{base.id}.") and r != manifest]
        for relative in doomed:  # the manifest first: a base without one is never listed
            with_retries(f"delete {relative}", partial(target.delete, relative))
        deleted += doomed
    wal_names: dict[str, str] = {}
    for relative in remote:
        name = relative.removeprefix(f"{prefix}/wal/")
        if relative.startswith(f"{prefix}/wal/") and (match := _ARCHIVED.fullmatch(name)):
            wal_names[match.group("name")] = relative
    for name in wal_to_delete(list(wal_names), [b for b, _ in bases if b.id in keep], store.segment_size):
        for relative in (wal_names[name], f"{prefix}/wal/{name}{RECORD_SUFFIX}"):
            if relative in remote:
                with_retries(f"delete {relative}", partial(target.delete, relative))
                deleted.append(relative)
    return deleted


def fetch_store(settings: Settings, into: Path, target_time: datetime | None, cluster: str | None) -> Store:
    """Bring the PITR files of ``cluster`` (a system identifier; None: the only cluster a
    target holds) from the first target that has them into ``into`` (laid out like
    BACKUP_DIR): the metadata, the WAL, every base backup's manifest, and the data of the
    one base backup a restore to ``target_time`` starts from."""
    from backupd.errors import NotFoundError, RefusedError

    for target in (t for t in configured_targets(settings) if t.confirms):
        try:
            remote = with_retries(f"list {target.url}", target.list)
        except TargetError as err:
            log.warning("target not reachable", target=target.url, error=str(err))
            continue
        clusters = sorted({r.split("/")[1] for r in remote if r.startswith(f"{PITR}/") and r.count("/") >= 3})
        if cluster is not None:
            clusters = [c for c in clusters if c == cluster]
        elif len(clusters) > 1:
            raise RefusedError(f"{target.url} holds several clusters ({', '.join(clusters)}) and the server cannot "
                               "be asked which one it is: name one with --cluster ID")
        for system_identifier in clusters:
            store = Store(into, system_identifier)
            store.ensure()
            prefix = f"{PITR}/{system_identifier}"
            wanted = [r for r in remote if r.startswith(prefix + "/") and not r.startswith(f"{prefix}/base/")]
            wanted += [r for r in remote if r.startswith(f"{prefix}/base/") and r.endswith(".json")]
            for relative in wanted:
                destination = into / relative
                destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with_retries(f"fetch {relative}", partial(target.get, relative, destination))
            candidates = [b for b in _manifests(store) if target_time is None or b.consistent_at <= target_time]
            if (base := _fetch_intact_base(target, prefix, candidates)) is None:
                continue
            log.info("fetched PITR files from a target", target=target.url, base=base.id)
            return store
    raise NotFoundError("no point-in-time recovery files" + (f" of cluster {cluster}" if cluster else "")
                        + " locally or on any replication target")


def _fetch_intact_base(target: Target, prefix: str, candidates: list[Base]) -> Base | None:
    """The data of the newest of ``candidates`` whose copy on ``target`` matches its
    manifest. A damaged copy is removed from the fetch folder and the next older one is
    fetched: its WAL reaches the same moments (pitr restore says which it took)."""
    def get(member: Base) -> None:
        with_retries(f"fetch {member.doc.file}", partial(target.get, f"{prefix}/base/{member.doc.file}", member.path))

    for base in candidates:
        if (damage := fetch_chain(base, candidates, get)) is None:  # an incremental: with its chain
            return base
        log.error("a base backup's copy on a target is damaged; trying an older one", target=target.url,
                  base=base.id, reason=damage)
        base.path.unlink(missing_ok=True)
    return None


def _manifests(store: Store) -> list[Base]:
    """The fetched manifests, newest first (without their files yet: not Store.bases)."""
    found = []
    for path in store.base_dir.glob("base-*.json"):
        try:
            found.append(Base.load(path))
        except (OSError, InvalidDocument) as err:
            log.warning("an invalid base backup manifest on a target is ignored", file=path.name, error=str(err))
    return sorted(found, key=lambda b: b.order, reverse=True)


def fetch_folder(backup_dir: Path) -> tempfile.TemporaryDirectory[str]:
    """Where fetched files wait for a restore: inside BACKUP_DIR (its disk), as backupd's own
    temporary folder (removed after, or by the next clean-up)."""
    os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".fetch-", dir=backup_dir)

