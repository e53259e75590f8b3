"""Chains of base backups: a full one, then incremental ones, each taken against the one
before it (``pg_basebackup --incremental``, PostgreSQL 17 and newer). An incremental base
backup holds only the blocks that changed since its parent: it restores through its whole
chain (``pg_combinebackup``), never alone. So a chain is kept, checked, copied and restored
as a whole: an incremental whose parent is gone or damaged is not usable."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd.errors import UsageError
from backupd.logging import get_logger
from backupd.pgtools import ToolsMissing, installed
from backupd.pitr.integrity import base_damage
from backupd.pitr.staging import checkpoint
from backupd.stream import Pipeline

if TYPE_CHECKING:
    from backupd.pitr.store import Base, Store
    from backupd.settings import Settings

Leftover = Callable[[str], bool]  # whether any file of the base backup with this id is left
log = get_logger("pitr")

WORK = ".backupd-chain"  # inside the staging folder: removed with it on failure
Extract = Callable[["Base", Path, "str | None"], None]


def parent_of(base: Base) -> str | None:
    """The id of the base backup ``base`` was taken against; None for a full one."""
    return base.doc.parent


def by_id(bases: Iterable[Base]) -> dict[str, Base]:
    return {base.id: base for base in bases}


def chain_of(base: Base, known: dict[str, Base]) -> list[Base] | None:
    """``base``'s chain, the full base backup first and ``base`` last; None when a member is
    not in ``known``. A parent is always older than its child (the manifest says so, or is
    invalid), so this ends."""
    chain = [base]
    while (parent := parent_of(chain[-1])) is not None:
        if (member := known.get(parent)) is None:
            return None
        chain.append(member)
    return chain[::-1]


def missing_member(base: Base, known: dict[str, Base]) -> str | None:
    """Why ``base``'s chain is incomplete (the first member that is gone), or None."""
    child = base
    while (parent := parent_of(child)) is not None:
        if parent not in known:
            return f"it is incremental: base backup {parent}, of its chain, is gone"
        child = known[parent]
    return None


def complete(base: Base, bases: list[Base]) -> bool:
    """Whether every member of ``base``'s chain is there with the size its manifest records
    (a stat each: the window and status ask this often)."""
    chain = chain_of(base, by_id(bases))
    return chain is not None and all(member.intact_by_size() for member in chain)


def chain_damage(base: Base, bases: list[Base]) -> str | None:
    """Why ``base`` cannot be restored, or None: every member of its chain is there and its
    file matches its manifest (size and full sha256), the oldest first."""
    known = by_id(bases)
    if (missing := missing_member(base, known)) is not None:
        return missing
    chain = chain_of(base, known) or []
    for member in chain:
        if (damage := base_damage(member)) is not None:
            return damage if member is base else f"base backup {member.id}, of its chain: {damage}"
    return None


def broken_notes(store: Store, usable: list[Base]) -> list[str]:
    """What a restore says about base backups it passed over because their chain is
    incomplete or a member's size is wrong (``Store.usable_bases`` leaves them out)."""
    bases = store.bases()
    chosen = {b.id for b in usable}
    notes = []
    for base in bases:
        if base.id not in chosen and parent_of(base) is not None and not complete(base, bases):
            reason = missing_member(base, by_id(bases)) or "a member of its chain has the wrong size"
            notes.append(f"skipped base backup {base.id}: {reason}")
    return notes


def fetch_chain(base: Base, manifests: list[Base], get: Callable[[Base], None]) -> str | None:
    """A restore from a replication target: every member of ``base``'s chain not fetched yet
    is fetched (``get``), then the chain is checked as ``chain_damage`` does."""
    known = by_id(manifests)
    for member in chain_of(base, known) or []:
        if not member.path.exists():
            get(member)
    return chain_damage(base, manifests)


def with_parents(keep: set[str], bases: list[Base], left: Leftover | None = None) -> set[str]:
    """Retention: ``keep`` with every kept base backup's whole chain. An incremental whose
    chain is incomplete can never be restored: it is not kept once nothing of the missing
    member is left; while a file of it is (a manifest that does not validate, a data file
    without one), it stays, and so may still be repaired by hand."""
    known = by_id(bases)
    kept: set[str] = set()
    for base_id in keep & set(known):
        if (chain := chain_of(known[base_id], known)) is not None:
            kept |= {member.id for member in chain}
        elif has_leftovers(known[base_id], known, left):
            kept.add(base_id)
        else:
            log.warning("an incremental base backup whose chain is incomplete is not kept", base=base_id,
                        reason=missing_member(known[base_id], known))
    return kept


def has_leftovers(base: Base, known: dict[str, Base], left: Leftover | None = None) -> bool:
    """Whether a file of the first missing member of ``base``'s chain is still there: in
    its folder, or as ``left(id)`` says (a replication target's listing)."""
    while (parent := parent_of(base)) is not None and parent in known:
        base = known[parent]
    if parent is None:
        return False
    return left(parent) if left is not None else any(base.folder.glob(f"{parent}.*"))


def summary(bases: list[Base]) -> list[dict[str, Any]]:
    """The chains, for ``pitr status`` and the status page: each full base backup with the
    incrementals taken on it, in order (a chain with a member gone, as incomplete)."""
    known = by_id(bases)
    chains: dict[str, dict[str, Any]] = {}
    for base in sorted(bases, key=lambda b: b.order):
        chain = chain_of(base, known)
        root = chain[0].id if chain else _oldest_known(base, known)
        entry = chains.setdefault(root, {"full": root if chain else None, "incrementals": [], "complete": True})
        if base.id != root or chain is None:
            entry["incrementals"].append(base.id)
        if chain is None or not all(member.intact_by_size() for member in chain):
            entry["complete"] = False
    return list(chains.values())


def _oldest_known(base: Base, known: dict[str, Base]) -> str:
    """The oldest member of ``base``'s incomplete chain that is still there."""
    while (parent := parent_of(base)) is not None and parent in known:
        base = known[parent]
    return base.id


def extract(settings: Settings, store: Store, base: Base, folder: Path, extract_one: Extract) -> None:
    """``base`` as a data directory in ``folder``: extracted, or, for an incremental one,
    each member of its chain extracted to a folder of its own in the staging area and
    combined into ``folder`` by that major's ``pg_combinebackup``."""
    chain = chain_of(base, by_id(store.bases()))
    if chain is None:
        raise UsageError(f"base backup {base.id} cannot be restored: {missing_member(base, by_id(store.bases()))}")
    for member in chain:
        if member.path.name.endswith(".age") and not settings.identity:
            raise UsageError(f"base backup {member.id} is encrypted: restoring it needs BACKUP_ENCRYPTION_IDENTITY")
    if len(chain) == 1:
        extract_one(base, folder, settings.identity)
        return
    tool = _combine_tool(settings, int(base.doc.server_major))
    work = folder / WORK
    members = []
    for index, member in enumerate(chain):
        checkpoint()
        members.append(into := work / f"{index:04d}-{member.id}")
        into.mkdir(mode=0o700, parents=True)
        log.info("extracting a member of the chain", base=member.id, incremental=parent_of(member) is not None)
        extract_one(member, into, settings.identity)
        if not (into / "backup_manifest").exists() and member.server_manifest_path.exists():
            shutil.copyfile(member.server_manifest_path, into / "backup_manifest")
    checkpoint()
    log.info("combining the chain", base=base.id, members=len(chain))
    combined = work / "combined"
    argv = [tool, "--output", str(combined), *map(str, members)]
    Pipeline([("pg_combinebackup", argv)], stdout=subprocess.DEVNULL).finish()
    _own_like(combined, members[-1])
    for entry in os.listdir(combined):
        os.rename(combined / entry, folder / entry)
    shutil.rmtree(work)


def _combine_tool(settings: Settings, major: int) -> str:
    for tools in installed(settings.pg_bindir):
        if tools.major == major and (tools.bindir / "pg_combinebackup").exists():
            return tools.path("pg_combinebackup")
    raise ToolsMissing(f"restoring an incremental base backup of PostgreSQL {major} needs pg_combinebackup of "
                       f"major {major} under PG_BINDIR={settings.pg_bindir}")


def _own_like(combined: Path, extracted: Path) -> None:
    """What pg_combinebackup wrote belongs to whoever owns the extracted data (the server's
    user, by the tar's numeric owners), as an extracted full base backup would."""
    if os.geteuid() != 0:
        return
    owner = (extracted / "PG_VERSION").stat()
    for root, folders, files in os.walk(combined):
        for name in [*folders, *files]:
            os.lchown(os.path.join(root, name), owner.st_uid, owner.st_gid)
    os.chown(combined, owner.st_uid, owner.st_gid)


def describe(chain: dict[str, Any]) -> str | None:
    """One line of ``pitr status`` (and the status page) for a ``summary`` entry that has
    incrementals; None for a full base backup alone."""
    if not chain["incrementals"]:
        return None
    full = chain["full"] or "gone"
    state = "" if chain["complete"] else " (incomplete: not usable)"
    count = len(chain["incrementals"])
    return f"chain: full {full}, then {count} incremental: {', '.join(chain['incrementals'])}{state}"
