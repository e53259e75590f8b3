"""Telling people what changed: every channel of ``backupd.channels`` gets the same report.

What to say is decided by comparing the conditions health finds now with those
reported last time (kept, with when each began, in ``BACKUP_DIR/.notified.json``):
a new failure or warning is sent once, and so is its recovery, with how long the
trouble lasted. ``NOTIFY_ON=always`` also reports every job's result; ``never``
sends nothing. Each message names the instance, what failed since when, and the
one command that shows more; no secret is ever part of it.
"""

from __future__ import annotations

import json
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backupd.channels import configured
from backupd.delivery import Outcome, deliver_all
from backupd.documents import InvalidDocument
from backupd.health import Health, describe_age
from backupd.logging import get_logger
from backupd.manifests import Notified, read_as
from backupd.redact import redact_text
from backupd.repository import Repository, iso, parse_iso, utc_now
from backupd.stream import write_json_atomically

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.notify")

STATE_FILE = ".notified.json"


@dataclass
class Event:
    kind: str  # failure, warning, recovery, success
    key: str
    message: str
    since: datetime | None = None  # when the condition began
    lasted: str | None = None  # for a recovery: how long the trouble lasted


@dataclass
class Report:
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    instance: str = field(default_factory=socket.gethostname)
    backup_dir: str = "/backups"

    @property
    def severity(self) -> str:
        kinds = {e.kind for e in self.events}
        for kind in ("failure", "warning", "recovery", "success"):
            if kind in kinds:
                return kind
        return "success"

    def subject(self) -> str:
        first = next(e for e in self.events if e.kind == self.severity)
        more = f" (+{len(self.events) - 1} more)" if len(self.events) > 1 else ""
        return f"[backupd] {self.severity} on {self.instance}: {first.message}"[:180] + more

    def text(self) -> str:
        lines = []
        for event in self.events:
            lines.append(f"{_headline(event)}: {event.message}")
            if event.kind in ("failure", "warning"):
                lines.append(f"  more: {more_command(event.key, self.backup_dir)}")
        lines += ["", f"Status of {self.instance}: {self.status.get('status', 'unknown')}"]
        lines += [f"  - {reason}" for reason in self.status.get("reasons", [])]
        lines += [f"  - warning: {warning}" for warning in self.status.get("warnings", [])]
        return "\n".join(lines)


def _headline(event: Event) -> str:
    if event.kind == "recovery":
        return f"RECOVERED after {event.lasted}" if event.lasted else "RECOVERED"
    if event.since and event.kind in ("failure", "warning"):
        return f"{event.kind.upper()} since {event.since.strftime('%Y-%m-%d %H:%M UTC')}"
    return event.kind.upper()


def more_command(key: str, backup_dir: str) -> str:
    """The one command that shows more about a condition (its key is health's)."""
    kind, _, name = key.partition(":")
    if kind.startswith("pitr"):
        return "backupd pitr status"
    if kind == "disk":
        return f"df -h {shlex.quote(backup_dir)}"
    if kind in ("backup", "stale", "min-keep", "size-drop", "verify", "unverifiable") and name:
        return f"backupd list {shlex.quote('--database=' + name)}"
    if kind in ("run", "globals", "scheduler", "replication", "job"):
        return "backupd health"
    return "backupd list"


def channels_configured(settings: Settings) -> bool:
    return bool(configured(settings)) and settings.notify_on != "never"


def report_changes(settings: Settings, health: Health, job: str | None = None, result: str | None = None,
                   error: str | None = None, count_failure: Callable[[str], None] | None = None) -> Report | None:
    """Compare the health found now with what was reported before; send what changed."""
    if not channels_configured(settings):
        return None
    repo = Repository(settings.backup_dir)
    repo.ensure_folder(repo.root)
    now = utc_now()
    with repo.lock(repo.root, "notifications", lock_name=".notify.lock"):
        previous = _read_state(repo)
        current = {c.key: c for c in health.conditions}
        report = Report(status=health.to_json(), instance=instance_name(settings), backup_dir=str(repo.root))
        active = {}
        for key, condition in current.items():
            since = (_when(previous[key]["since"]) if key in previous else None) or now
            active[key] = {"message": condition.message, "since": iso(since)}
            if key not in previous:
                report.events.append(Event(condition.severity, key, condition.message, since))
        for key, before in previous.items():
            if key not in current:
                began = _when(before["since"])
                lasted = describe_age(now - began) if began else None
                report.events.append(Event("recovery", key, f"resolved: {before['message']}", began, lasted))
        if settings.notify_on == "always" and job:
            kind = "success" if result == "success" else "failure"
            report.events.append(Event(kind, f"job:{job}", f"job {job} finished: {result}" +
                                       (f": {error}" if error else "")))
        write_json_atomically(repo.root / STATE_FILE, json.dumps({"time": iso(now), "active": active},
                                                                 sort_keys=True))
    if report.events:
        send(settings, report, count_failure)
    return report


def instance_name(settings: Settings) -> str:
    """This sidecar's instance name as far as it is known without asking the server (a
    notification must not wait for it), else the host name."""
    from backupd import origin

    return origin.instance_if_known(settings) or origin.host_name(settings)


def _when(text: str | None) -> datetime | None:
    try:
        return parse_iso(text)
    except (TypeError, ValueError):  # a start that cannot be read: unknown
        return None


def _read_state(repo: Repository) -> dict[str, dict[str, str | None]]:
    """The conditions reported last time; the older form kept only messages, so their
    start is taken as the time of that report."""
    try:
        state = read_as(Notified, repo.root / STATE_FILE)
    except OSError:
        return {}
    except InvalidDocument as err:  # rewritten after this report: it only remembers what was reported
        log.warning("ignoring an invalid record of what was reported", error=str(err))
        return {}
    return {key: {"message": value.message, "since": iso(value.since)} if not isinstance(value, str)
            else {"message": value, "since": iso(state.time)} for key, value in state.active.items()}


def _secrets(settings: Settings) -> list[str]:
    values = [settings.password, settings.identity, settings.auth_token]
    for secret in (settings.smtp_pass, settings.notify_webhook_url, settings.aws_secret_access_key,
                   settings.notification_urls):
        values.append(secret.get_secret_value() if secret else None)
    return [v for v in values if v]


def send(settings: Settings, report: Report, count_failure: Callable[[str], None] | None = None) -> list[Outcome]:
    """Every configured channel at once, each with bounded retries; failures are logged and
    counted, never raised."""
    secrets = _secrets(settings)
    subject, text = redact_text(report.subject(), secrets), redact_text(report.text(), secrets)
    payload = {"text": f"{subject}\n{text}", "source": "backupd", "host": socket.gethostname(),
               "instance": report.instance, "severity": report.severity, "status": report.status,
               "events": [_event_json(e, secrets) for e in report.events]}
    return deliver_all(configured(settings), subject, text, json.loads(redact_text(json.dumps(payload), secrets)),
                       count_failure)


def _event_json(event: Event, secrets: list[str]) -> dict[str, str | None]:
    message = redact_text(event.message, secrets)
    shown: dict[str, str | None] = {"kind": event.kind, "key": event.key, "message": message}
    if event.since:
        shown["since"] = iso(event.since)
    if event.lasted:
        shown["lasted"] = event.lasted
    return shown
