"""Where notifications go: the Apprise URLs of NOTIFICATION_URLS, and the older
NOTIFICATION_EMAIL/SMTP_* and NOTIFY_WEBHOOK_URL settings, as one list of channels.

A channel's URL carries its token (a bot token, a topic, a password), so a channel
is only ever shown as ``scheme://host``, and Apprise's own log lines, which name
whole URLs, never reach the log: they are kept per sending thread, masked, and only
used to say why a send failed.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from backupd.redact import MASK

if TYPE_CHECKING:
    from backupd.settings import Settings

TIMEOUT = 10.0  # seconds for one connection attempt or one answer

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Spaces always separate URLs; a comma only when another URL follows it, because
# Apprise URLs may hold commas themselves (mailto://...?to=a@x,b@y).
_SEPARATOR = re.compile(r"\s+|,(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


class DeliveryFailed(Exception):
    """A send that did not go through; the message is safe to show (no URL, no token)."""


@dataclass(frozen=True)
class Channel:
    scheme: str  # the label of backupd_notifications_failed_total
    shown: str  # scheme://host: all that is ever shown of the URL
    deliver: Callable[[str, str, dict[str, Any]], None]  # (title, body, payload); raises DeliveryFailed


def split_urls(text: str) -> list[str]:
    return [part.strip(", ") for part in _SEPARATOR.split(text.strip()) if part.strip(", ")]


def scheme_of(url: str) -> str:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else "?"


def shown(url: str) -> str:
    """``tgram://BOT_TOKEN/CHAT_ID`` -> ``tgram://``; ``ntfy://ntfy.sh/topic`` -> ``ntfy://ntfy.sh``."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    # Some services put a token or an id where the host goes (tgram://TOKEN/chat,
    # discord://ID/TOKEN): only a name with a dot, an IP address or localhost is shown.
    if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+|[0-9a-f]*:[0-9a-f:.]+|localhost", host):
        host = ""
    return f"{scheme_of(url)}://{host}"


def check_urls(text: str) -> list[str]:
    """Every problem with NOTIFICATION_URLS, naming each URL only by its place and scheme."""
    problems = []
    for number, url in enumerate(split_urls(text), start=1):
        if not _SCHEME.match(url):
            problems.append(f"entry {number} is not a URL (scheme://...)")
        elif _instantiate(url) is None:
            problems.append(f"entry {number} ({scheme_of(url)}://) is not a URL Apprise can use: check its form "
                            f"at https://github.com/caronc/apprise/wiki")
    return problems


def check_email(settings: Settings) -> str | None:
    """Why Apprise could not send the NOTIFICATION_EMAIL mail, or None."""
    from apprise.utils.parse import is_email

    if not_addresses := [a for a in settings.notification_email if not is_email(a)]:
        return f"NOTIFICATION_EMAIL: {', '.join(map(repr, not_addresses))} is not an e-mail address"
    if settings.smtp_from and not is_email(settings.smtp_from):
        return f"SMTP_FROM={settings.smtp_from!r}: is not an e-mail address to send from"
    if _instantiate(_email_details(settings)) is None:
        return "SMTP_HOST, SMTP_PORT: Apprise cannot send e-mail with these settings"
    return None


def configured(settings: Settings) -> list[Channel]:
    """Every channel the settings name, in the order given."""
    channels = []
    if settings.notification_email:
        password = [settings.smtp_pass.get_secret_value()] if settings.smtp_pass else []
        channels.append(_apprise_channel("mailto", f"mailto://{settings.smtp_host}", _email_details(settings),
                                         password))
    if settings.notify_webhook_url:
        channels.append(_webhook_channel(settings.notify_webhook_url.get_secret_value()))
    if settings.notification_urls:
        for url in split_urls(settings.notification_urls.get_secret_value()):
            channels.append(_apprise_channel(scheme_of(url), shown(url), url, _pieces(url)))
    return channels


def _email_details(settings: Settings) -> dict[str, Any]:
    # Built from parts, never as a URL string: a password may hold any character.
    user = settings.smtp_user
    sender = settings.smtp_from or (user if user and "@" in user else _default_sender())
    return {"schema": "mailto", "host": settings.smtp_host, "smtp_host": settings.smtp_host,
            "port": settings.smtp_port, "user": user,
            "password": settings.smtp_pass.get_secret_value() if settings.smtp_pass else None,
            "from_addr": sender, "targets": list(settings.notification_email),
            "secure_mode": "starttls" if settings.smtp_starttls else "insecure", "cto": TIMEOUT}


def _default_sender() -> str:
    # Apprise refuses some host names as a mail domain ("vm", a bare container id may pass).
    from apprise.utils.parse import is_email

    sender = f"backupd@{socket.gethostname()}"
    return sender if is_email(sender) else "backupd@localhost"


# Apprise's message types (colours and icons on most services) for the report's severity.
_NOTIFY_TYPES = {"failure": "failure", "warning": "warning", "recovery": "success", "success": "success"}


def _apprise_channel(scheme: str, name: str, url: str | dict[str, Any], secrets: list[str]) -> Channel:
    made: list[Any] = []  # one plugin for every attempt: Apprise's e-mail skips, on a retry,
    # the recipients that already took the message

    def deliver(title: str, body: str, payload: dict[str, Any]) -> None:
        with _apprise_log() as lines:
            if not made:
                made.append(_instantiate(url))
            plugin = made[0]
            kind = _NOTIFY_TYPES.get(payload.get("severity", ""), "info")
            sent = plugin is not None and plugin.notify(body=body, title=title, notify_type=kind)
        if not sent:
            raise DeliveryFailed(_mask(_reason(lines), secrets))
    return Channel(scheme, name, deliver)


_CAUSE = re.compile(r"\[Errno -?\d+\] [\w ,.-]+|Read timed out|timed out")


def _reason(lines: list[tuple[int, str]]) -> str:
    """Apprise's last warning, with the system's cause from its debug lines ("Connection refused")."""
    warnings = [text for level, text in lines if level >= logging.WARNING]
    causes = [m.group(0) for level, text in lines if (m := _CAUSE.search(text))]
    reason = warnings[-1] if warnings else "Apprise did not say why"
    return f"{reason} ({causes[-1]})" if causes else reason


def _webhook_channel(url: str) -> Channel:
    return Channel(scheme_of(url), shown(url), lambda title, body, payload: _post_json(url, payload))


def _post_json(url: str, payload: dict[str, Any]) -> None:
    """NOTIFY_WEBHOOK_URL: its documented body holds the structured ``status`` and ``events``
    beside the Slack-style ``text``, and Apprise's json:// sends a fixed flat body (version,
    title, message, type), so this one POST stays ours."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "backupd"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as err:
        raise DeliveryFailed(f"HTTP {err.code}") from None
    except urllib.error.URLError as err:  # the reason may name the URL: masked
        reason = err.reason.strerror if isinstance(err.reason, OSError) else None
        raise DeliveryFailed(_mask(str(reason or err.reason), _pieces(url))) from None
    except OSError as err:
        raise DeliveryFailed(_mask(f"{type(err).__name__}: {err.strerror or err}", _pieces(url))) from None


def _pieces(url: str) -> list[str]:
    """The parts of a URL that may be a token: user, password, path segments, query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    pieces = [url, parts.username or "", parts.password or "", parts.fragment]
    pieces += parts.path.split("/") + re.split(r"[&=]", parts.query)
    if shown(url).endswith("://"):  # the host is a token
        pieces.append(parts.hostname or "")
    return sorted({p for raw in pieces for p in (raw, unquote(raw)) if len(p) >= 3}, key=len, reverse=True)


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


# Apprise logs through the standard library, and its lines name whole URLs ("Unparseable URL
# tgram://TOKEN..."), at error level too: they stop here and are kept per thread.
class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.kept: dict[int, list[tuple[int, str]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        lines = self.kept.get(threading.get_ident())
        if lines is None:
            return
        try:
            lines.append((record.levelno, record.getMessage()))
        except Exception:  # never logging's own report of it: that prints the record, URL and all
            pass


_KEEP = _Keep()
_APPRISE_LOG = logging.getLogger("apprise")
_APPRISE_LOG.handlers[:] = [_KEEP]
_APPRISE_LOG.propagate = False
_APPRISE_LOG.setLevel(logging.DEBUG)  # only kept while a send on this thread asks for them


@contextmanager
def _apprise_log() -> Iterator[list[tuple[int, str]]]:
    lines: list[tuple[int, str]] = []
    _KEEP.kept[threading.get_ident()] = lines
    try:
        yield lines
    finally:
        _KEEP.kept.pop(threading.get_ident(), None)


def _instantiate(url: str | dict[str, Any]) -> Any:
    import apprise

    return apprise.Apprise.instantiate(url)
