"""Telling people: e-mail (SMTP, STARTTLS) and a webhook (JSON POST with a Slack-style
``text`` field plus structured fields).

What to say is decided by comparing the conditions health finds now with those
reported last time (kept in ``BACKUP_DIR/.notified.json``): a new failure or
warning is sent once, and so is its recovery. ``NOTIFY_ON=always`` also reports
every job's result; ``never`` sends nothing. Sending is retried a bounded number
of times and never fails the job that asked; no secret is ever part of a message.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage

from backupd.documents import InvalidDocument
from backupd.health import Health
from backupd.logging import get_logger
from backupd.manifests import Notified, read_as
from backupd.redact import redact_text
from backupd.repository import Repository, iso, utc_now
from backupd.stream import write_json_atomically

log = get_logger("backupd.notify")

STATE_FILE = ".notified.json"
ATTEMPTS = 3
TIMEOUT = 10.0


@dataclass
class Event:
    kind: str  # failure, warning, recovery, success
    key: str
    message: str


@dataclass
class Report:
    events: list[Event] = field(default_factory=list)
    status: dict = field(default_factory=dict)

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
        return f"[backupd] {self.severity}: {first.message}"[:180] + more

    def text(self) -> str:
        lines = [f"{e.kind.upper()}: {e.message}" for e in self.events]
        lines += ["", f"Status on {socket.gethostname()}: {self.status.get('status', 'unknown')}"]
        lines += [f"  - {reason}" for reason in self.status.get("reasons", [])]
        lines += [f"  - warning: {warning}" for warning in self.status.get("warnings", [])]
        return "\n".join(lines)


def channels_configured(settings) -> bool:
    return bool(settings.notification_email or settings.notify_webhook_url) and settings.notify_on != "never"


def report_changes(settings, health: Health, job: str | None = None, result: str | None = None,
                   error: str | None = None) -> Report | None:
    """Compare the health found now with what was reported before; send what changed."""
    if not channels_configured(settings):
        return None
    repo = Repository(settings.backup_dir)
    repo.ensure_folder(repo.root)
    with repo.lock(repo.root, "notifications", lock_name=".notify.lock"):
        previous = _read_state(repo)
        current = {c.key: c for c in health.conditions}
        report = Report(status=health.to_json())
        for key, condition in current.items():
            if key not in previous:
                report.events.append(Event(condition.severity, key, condition.message))
        for key, message in previous.items():
            if key not in current:
                report.events.append(Event("recovery", key, f"resolved: {message}"))
        if settings.notify_on == "always" and job:
            kind = "success" if result == "success" else "failure"
            report.events.append(Event(kind, f"job:{job}", f"job {job} finished: {result}" +
                                       (f": {error}" if error else "")))
        write_json_atomically(repo.root / STATE_FILE, json.dumps(
            {"time": iso(utc_now()), "active": {k: c.message for k, c in current.items()}}, sort_keys=True))
    if report.events:
        send(settings, report)
    return report


def _read_state(repo: Repository) -> dict[str, str]:
    try:
        return read_as(Notified, repo.root / STATE_FILE).active
    except OSError:
        return {}
    except InvalidDocument as err:  # rewritten below: it only remembers what was reported
        log.warning("ignoring an invalid record of what was reported", error=str(err))
        return {}


def _secrets(settings) -> list[str]:
    values = [settings.password, settings.identity, settings.auth_token]
    for secret in (settings.smtp_pass, settings.notify_webhook_url, settings.aws_secret_access_key):
        values.append(secret.get_secret_value() if secret else None)
    return [v for v in values if v]


def send(settings, report: Report) -> None:
    """Every configured channel, each with bounded retries; failures are logged, never raised."""
    secrets = _secrets(settings)
    subject, text = redact_text(report.subject(), secrets), redact_text(report.text(), secrets)
    if settings.notification_email:
        _with_retries("e-mail", lambda: _send_mail(settings, subject, text))
    if settings.notify_webhook_url:
        payload = {"text": f"{subject}\n{text}", "source": "backupd", "host": socket.gethostname(),
                   "severity": report.severity, "status": report.status,
                   "events": [{"kind": e.kind, "key": e.key, "message": redact_text(e.message, secrets)}
                              for e in report.events]}
        _with_retries("webhook", lambda: _post_webhook(settings, payload))


def _with_retries(channel: str, action) -> None:
    delay = 1.0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            action()
            log.info("notification sent", channel=channel)
            return
        except Exception as err:  # a notifier must never break what it reports on
            if attempt == ATTEMPTS:
                log.error("notification failed", channel=channel, attempts=attempt, error=_describe(err))
                return
            log.warning("notification failed; retrying", channel=channel, attempt=attempt, error=_describe(err))
            time.sleep(delay)
            delay *= 2


def _describe(err: Exception) -> str:
    # Never the webhook URL itself: it carries a token.
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}"
    if isinstance(err, urllib.error.URLError):
        return f"{type(err.reason).__name__}: {err.reason}"
    return f"{type(err).__name__}: {err}"


def _send_mail(settings, subject: str, text: str) -> None:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.smtp_from or settings.smtp_user or f"backupd@{socket.gethostname()}"
    message["To"] = ", ".join(settings.notification_email)
    message.set_content(text)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_pass.get_secret_value() if settings.smtp_pass else "")
        smtp.send_message(message)


def _post_webhook(settings, payload: dict) -> None:
    request = urllib.request.Request(settings.notify_webhook_url.get_secret_value(),
                                     data=json.dumps(payload).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "backupd"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        response.read()
