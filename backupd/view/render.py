"""/status (JSON) and the status page's data, both from one ``View``: nothing here reads
BACKUP_DIR. (The page's HTML is statuspage.py's; /metrics is metrics.py's.)"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backupd import __version__
from backupd.health import newest_verifications
from backupd.redact import strip_url_credentials
from backupd.repository import iso, parse_iso
from backupd.targets import target_urls
from backupd.view import View

if TYPE_CHECKING:
    from backupd.settings import Settings

UNREADABLE_HEALTH = {"status": "unhealthy", "reasons": ["the health could not be judged (see the log)"],
                     "warnings": []}


def _health(view: View) -> dict[str, Any]:
    return view.health.to_json() if view.health is not None else UNREADABLE_HEALTH


def _parse_time(text: Any) -> datetime | None:
    """``parse_iso`` for a value read from a file a person may have edited: None, not an error."""
    try:
        return parse_iso(text)
    except (TypeError, ValueError):
        return None


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
    for name, verification in newest_verifications(view.backups).items():
        entry(name)["newest_verification"] = verification
    for failure in view.failures or []:
        entry(failure.get("database") or "all")["last_error"] = {"time": failure["time"], "error": failure["error"]}
    jobs = {job.name: {"schedule": job.schedule, "next_run": iso(job.next_run), "running": job.running,
                       "last_run": job.last} for job in view.live.jobs}
    return {"started": iso(view.live.started_at), "instance": view.instance, "health": _health(view),
            "databases": databases, "jobs": jobs, "targets": view.runs or {}, "postgresql": tools,
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
    targets = [{"url": url, **runs.get(url, {"ok": None}), "time": _parse_time(runs.get(url, {}).get("time"))}
               for url in urls]
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
    for name, verification in newest_verifications(view.backups).items():
        if name in databases:
            databases[name]["verification"] = {**verification, "time": _parse_time(verification.get("time"))}
    return databases


def _page_failures(view: View, databases: dict[str, dict[str, Any]], volumes: dict[str, dict[str, Any]]) -> None:
    """Each failure record on its volume's row or its database's section."""
    for failure in view.failures or []:
        if failure.get("kind") == "volume" and failure.get("database"):
            volume = volumes.setdefault(failure["database"], {"name": failure["database"], "time": None,
                                                              "size": None})
            volume["failure"] = {"time": _parse_time(failure.get("time")) or view.now, "error": failure.get("error")}
        if failure.get("kind", "database") != "database":
            continue
        name = failure.get("database") or "all"  # None: the whole run (the server could not be reached)
        found = databases.setdefault(name, {"name": name, "history": [], "count": 0})
        found["failure"] = {"time": _parse_time(failure.get("time")) or view.now, "error": failure.get("error")}
        found["whole_run"] = failure.get("database") is None
