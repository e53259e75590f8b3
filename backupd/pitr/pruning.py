"""What retention deletes of one cluster's PITR files: its base backups as
``retention.decide`` judges them (the cluster's recovery window, its pins, what a kept one
needs), then the archived WAL that no kept base backup needs: every segment from the oldest
kept one's start on stays, and every timeline history file. The same plan serves the local
archive and each replication target's copy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.logging import get_logger
from backupd.pitr import chains, wal
from backupd.pitr.store import RECORD_SUFFIX, Base, Store, remove_files
from backupd.retention import Decision, Item, Policy, decide

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("pitr")


@dataclass
class Pruned:
    decisions: list[tuple[Base, Decision]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # deleted, or with ``dry_run`` to be


def decide_bases(bases: list[Base], now: datetime, policy: Policy,
                 pinned: frozenset[str] | set[str] = frozenset(),
                 left: chains.Leftover | None = None) -> list[tuple[Base, Decision]]:
    """Each base backup with its decision, newest first. Only base backups that can be
    restored (whole chains) are judged by the rules, so the start of the recovery window and
    the BACKUP_MIN_KEEP floor always fall on one that restores. An incremental whose chain is
    incomplete is kept only while pinned, or while a file of its missing member is left
    (``left``: a replication target's listing says; else its folder), for repair by hand."""
    known = chains.by_id(bases)
    whole = [base for base in bases if chains.chain_of(base, known) is not None]
    items = (Item(base.id, "base backups", base.stop_time, base.id in pinned, base.doc.parent) for base in whole)
    decided = [(known[decision.item.id], decision) for decision in decide(items, now, policy)]
    for base in (b for b in bases if b.id not in {w.id for w in whole}):
        decided.append((base, Decision(Item(base.id, "base backups", base.stop_time, base.id in pinned),
                                       _broken_chain_reasons(base, known, pinned, left))))
    return sorted(decided, key=lambda pair: pair[0].order, reverse=True)


def _broken_chain_reasons(base: Base, known: dict[str, Base], pinned: frozenset[str] | set[str],
                          left: chains.Leftover | None) -> list[str]:
    missing = chains.missing_member(base, known)
    if base.id in pinned:
        return [f"pinned (it cannot be restored: {missing})"]
    if chains.has_leftovers(base, known, left):
        return [f"a file of the missing member of its chain is left, for repair ({missing})"]
    log.warning("an incremental base backup whose chain is incomplete is not kept", base=base.id, reason=missing)
    return []


def wal_to_delete(names: list[str], kept: list[Base], segment_size: int) -> list[str]:
    """Archived WAL older than the oldest kept base backup's start (history files stay)."""
    if not kept:
        return []
    oldest = min(b.start_segno for b in kept)
    return [name for name in names if not name.endswith(".history")
            and wal.parse_segment(name.removesuffix(".partial"), segment_size)[1] < oldest]


def prune(settings: Settings, store: Store, now: datetime, dry_run: bool = False) -> Pruned:
    """Retention on ``store``'s cluster. A base backup pinned after it was judged is kept."""
    policy = Policy.recovery_window(settings.pitr_retention_days, settings.backup_min_keep,
                                    store.newest_received_time())
    pins = store.pinned()
    result = Pruned(decide_bases(store.bases(), now, policy, pins))
    if not result.decisions:
        return result
    doomed = [base for base, decision in result.decisions if not decision.keep]
    gone = [p for base in doomed for p in (base.manifest_path, base.path, base.server_manifest_path,
                                            store.pin_path(base.id)) if p.exists()]
    archived = store.archived()
    old_names = wal_to_delete(list(archived), [b for b, d in result.decisions if d.keep], store.segment_size)
    old_wal = [archived[name] for name in old_names]
    old_wal += [record for name in old_names if (record := store.wal_dir / (name + RECORD_SUFFIX)).exists()]
    result.files = gone + old_wal
    if dry_run:
        return result
    if {base.id for base in doomed} & (store.pinned() - pins):  # pinned meanwhile: judged again, with them
        return prune(settings, store, now, dry_run)
    remove_files(gone)  # the manifest first: a base without one is never listed
    remove_files(old_wal)
    if gone or old_wal:
        log.info("PITR retention", base_backups_deleted=len(doomed), wal_files_deleted=len(old_names))
    return result
