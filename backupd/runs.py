"""The run history of replication: each target's newest run, kept beside the backups in
``BACKUP_DIR/.replication.json``, so metrics, ``/status`` and the status page show runs
of the CLI and of earlier processes too. Part of the repository's layout: written by the
replication verb, read by every view, and known to no verb's module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from backupd import manifests
from backupd.documents import InvalidDocument
from backupd.logging import get_logger
from backupd.repository import Repository, iso, utc_now
from backupd.stream import write_json_atomically

log = get_logger("backupd.runs")

RUNS_FILE = ".replication.json"


class TargetRun(Protocol):
    """What one replication run to one target reports (``actions.replicate.TargetOutcome``)."""

    @property
    def url(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def error(self) -> str | None: ...
    @property
    def sent(self) -> list[str]: ...
    @property
    def deleted(self) -> list[str]: ...
    @property
    def confirmed(self) -> bool: ...
    @property
    def refused(self) -> list[tuple[str, str]]: ...
    @property
    def stored(self) -> dict[str, int]: ...
    @property
    def stored_bytes(self) -> int: ...
    @property
    def finished(self) -> datetime | None: ...
    @property
    def counted(self) -> bool: ...


def record_runs(repo: Repository, outcomes: Iterable[TargetRun]) -> None:
    """Remember each target's newest run; what a run did not count (a target that could
    not be listed) keeps the previous run's numbers."""
    previous = read_runs(repo)
    runs = {url: manifests.as_dict(run) for url, run in previous.items()}
    for outcome in outcomes:
        before = previous.get(outcome.url)
        finished = iso(outcome.finished or utc_now())
        last_success = before.last_success if before else None
        runs[outcome.url] = {
            "time": finished, "ok": outcome.ok, "error": outcome.error,
            "sent": len(outcome.sent), "deleted": len(outcome.deleted), "confirmed": outcome.confirmed,
            "refused": [{"id": backup_id, "reason": why} for backup_id, why in outcome.refused],
            "last_success": finished if outcome.ok else last_success and manifests.iso_text(last_success),
            "stored": outcome.stored if outcome.counted else before.stored if before else {},
            "stored_bytes": outcome.stored_bytes if outcome.counted else before.stored_bytes if before else 0,
        }
    repo.ensure_folder(repo.root)
    write_json_atomically(repo.root / RUNS_FILE, json.dumps(runs, indent=2, sort_keys=True) + "\n")


def read_runs(repo: Repository) -> dict[str, manifests.TargetRun]:
    """Target URL -> its newest run; empty when there is none or it cannot be used."""
    try:
        return manifests.read_runs(repo.root / RUNS_FILE)
    except OSError:
        return {}
    except InvalidDocument as err:  # listed as invalid by the inventory; never a crash of a view
        log.warning("ignoring an invalid run history", file=str(repo.root / RUNS_FILE), error=str(err))
        return {}
