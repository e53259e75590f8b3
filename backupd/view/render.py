"""/status (JSON) and the status page's data, both from one ``View``: nothing here reads
BACKUP_DIR. (The page's HTML is statuspage.py's; /metrics is metrics.py's.)"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backupd import __version__
from backupd.health import newest_verifications
from backupd.manifests import as_dict
from backupd.redact import strip_url_credentials
from backupd.repository import iso
from backupd.targets import target_urls
from backupd.view import View

if TYPE_CHECKING:
    from backupd.settings import Settings

UNREADABLE_HEALTH = {"status": "unhealthy", "reasons": ["the health could not be judged (see the log)"],
                     "warnings": []}


def _health(view: View) -> dict[str, Any]:
    return view.health.to_json() if view.health is not None else UNREADABLE_HEALTH


def _to_second(when: datetime | None) -> datetime | None:
    """A stored time as the page shows it, to the second."""
    return when.replace(microsecond=0) if when else None


def status_json(view: View, tools: dict[str, Any]) -> dict[str, Any]:
    """/status. ``tools``: the client tools each server gets, as last looked up."""
    databases: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return databases.setdefault(name, {"backups": 0, "newest_backup": None, "last_error": None})

    for backup in (b for b in view.backups if b.kind == "database"):
        found = entry(backup.database)
        found["backups"] += 1
        if found["newest_backup"] is None:
            found["newest_backup"] = {"id": backup.id, "time": iso(backup.time), "size_bytes": backup.size,
                                      "duration_seconds": backup.doc.recorded_duration,
                                      "label": backup.doc.label}
    for name, (verification, backup_id) in newest_verifications(view.backups).items():
        entry(name)["newest_verification"] = {**as_dict(verification), "id": backup_id}
    for failure in view.failures or []:
        entry(failure.job.name or "all")["last_error"] = {"time": iso(failure.time), "error": failure.error}
    jobs = {job.name: {"schedule": job.schedule, "next_run": iso(job.next_run), "running": job.running,
                       "last_run": job.last} for job in view.live.jobs}
    targets = {url: as_dict(run) for url, run in (view.runs or {}).items()}
    return {"started": iso(view.live.started_at), "instance": view.instance, "health": _health(view),
            "databases": databases, "jobs": jobs, "targets": targets, "postgresql": tools,
            "leftovers": [leftover.summary() for leftover in view.live.leftovers], "pitr": view.pitr}


def page_model(settings: Settings, view: View) -> dict[str, Any]:
    """What statuspage.render shows."""
    health = _health(view)
    databases = _page_databases(view)
    volumes: dict[str, dict[str, Any]] = {}
    for archive in (b for b in view.backups if b.kind == "volume"):
        volumes.setdefault(archive.database, {"name": archive.database, "time": archive.time, "size": archive.size})
    _page_failures(view, databases, volumes)
    urls = [strip_url_credentials(url) for url in target_urls(settings)]  # as replication records them
    for found in databases.values():
        found["anchor"] = hashlib.sha256(found["name"].encode()).hexdigest()[:16]
        found["targets"] = urls
    runs = view.runs or {}
    targets = [{"url": url, **(as_dict(runs[url]) if url in runs else {"ok": None}),
                "time": _to_second(runs[url].time) if url in runs else None} for url in urls]
    jobs = {job.name: {"schedule": job.schedule, "next_run": job.next_run, "running": job.running}
            for job in view.live.jobs}
    title = "needs attention" if health.get("status") != "ok" else "warnings" if health.get("warnings") else "ok"
    return {"now": view.now, "health": health, "databases": sorted(databases.values(), key=lambda d: d["name"]),
            "volumes": sorted(volumes.values(), key=lambda v: v["name"]), "targets": targets, "jobs": jobs,
            "pitr": view.pitr, "title": title, "version": __version__, "instance": view.instance}


def _page_databases(view: View) -> dict[str, dict[str, Any]]:
    databases: dict[str, dict[str, Any]] = {}
    for backup in (b for b in view.backups if b.kind == "database"):
        found = databases.setdefault(backup.database, {"name": backup.database, "history": [], "count": 0})
        found["count"] += 1
        found["history"].append({"time": backup.time, "size": backup.size,
                                 "duration": backup.doc.recorded_duration})
        found.setdefault("newest", {"id": backup.id, "time": backup.time, "size": backup.size,
                                    "duration": backup.doc.recorded_duration,
                                    "replicas": sorted(backup.state_doc.replicas),
                                    "damaged": backup.damaged})
    for name, (verification, backup_id) in newest_verifications(view.backups).items():
        if name in databases:
            databases[name]["verification"] = {**as_dict(verification), "id": backup_id,
                                               "time": _to_second(verification.time)}
    return databases


def _page_failures(view: View, databases: dict[str, dict[str, Any]], volumes: dict[str, dict[str, Any]]) -> None:
    """Each failure record on its volume's row or its database's section."""
    for failure in view.failures or []:
        name, when = failure.job.name, _to_second(failure.time) or view.now
        if failure.job.kind == "volume" and name:
            volume = volumes.setdefault(name, {"name": name, "time": None, "size": None})
            volume["failure"] = {"time": when, "error": failure.error}
        if failure.job.kind != "database":
            continue
        found = databases.setdefault(name or "all", {"name": name or "all", "history": [], "count": 0})
        found["failure"] = {"time": when, "error": failure.error}
        found["whole_run"] = name is None  # the server could not be reached
