"""The checks each setting's value passes on its way into ``Settings``.

Each takes the raw value (or the value already converted to the field's type) and
returns the value to keep, or raises ValueError with a message that completes
"NAME=value: ...". They import what they need only once there is a value to check:
``backupd backup`` loads the settings before its dump starts, and the defaults need
no checking (the daemon's scheduler, the targets, Apprise and age stay unimported).
"""

from __future__ import annotations

import re
import shlex
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

MAX_DURATION_SECONDS = 100 * 365 * 86400.0


def parse_duration(value: Any) -> float:
    """``90`` / ``90s`` / ``15m`` / ``26h`` / ``7d`` -> seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("must be seconds or a number with a unit s, m, h, d or w (e.g. 90, 15m, 7d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_DURATION_SECONDS:  # beyond this, timers and dates overflow
        raise ValueError("must be at most 100 years")
    return seconds


def positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be more than 0 (a time limit of 0 fails every run)")
    return seconds


def split_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as UTC or Europe/Berlin") from None
    return value


def check_cron(value: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    if len(value.split()) != 5:
        raise ValueError("must be a 5-field cron expression such as '0 2 * * *'")
    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as err:
        raise ValueError(f"is not a valid cron expression ({err})") from None
    return value


# pg_dump options that would change where or how the output is written, or the
# connection: backupd owns those.
_FORBIDDEN_DUMP_OPTIONS = (
    "-f", "--file", "-F", "--format", "-Z", "--compress", "-j", "--jobs", "--snapshot",
    "-d", "--dbname", "-h", "--host", "-p", "--port", "-U", "--username", "-w", "--no-password",
    "-W", "--password", "-v", "--verbose", "-V", "--version", "-?", "--help", "--lock-wait-timeout",
)


def check_extra_opts(value: str) -> str:
    try:
        args = shlex.split(value)
    except ValueError as err:
        raise ValueError(f"cannot be split into arguments ({err})") from None
    for arg in args:
        for name in _option_names(arg):
            if name in _FORBIDDEN_DUMP_OPTIONS:
                raise ValueError(f"may not contain {name}: backupd sets the output, format and connection itself")
    return value


# pg_dump's short options that take a value: in a cluster such as "-Of/x", the rest is the value.
_SHORT_WITH_VALUE = frozenset("fFZjdhpUnNtTESe")


def _option_names(arg: str) -> list[str]:
    """The options one argument sets, as pg_dump's getopt reads it: "--file=x" -> ["--file"],
    "-Of/tmp/x" -> ["-O", "-f"]."""
    if arg.startswith("--"):
        return [arg.split("=", 1)[0]]
    if not arg.startswith("-") or arg == "-":
        return []
    names = []
    for char in arg[1:]:
        names.append(f"-{char}")
        if char in _SHORT_WITH_VALUE:
            break
    return names


def check_targets(urls: tuple[str, ...]) -> tuple[str, ...]:
    if not urls:
        return urls
    from backupd.targets import check_target_url

    for url in urls:
        check_target_url(url)
    return urls


def parse_volumes(value: Any) -> tuple[tuple[str, Path], ...]:
    """``name=/path,other=/path`` -> ((name, path), ...); ValueError naming what is wrong."""
    if isinstance(value, tuple):
        return value
    volumes: dict[str, Path] = {}
    for entry in (part.strip() for part in str(value).split(",") if part.strip()):
        name, sep, path = entry.partition("=")
        name = name.strip()
        if not sep or not name or not path.strip().startswith("/"):
            raise ValueError(f"{entry!r} is not name=/absolute/path")
        if name in volumes:
            raise ValueError(f"the name {name!r} is given twice")
        volumes[name] = Path(path.strip())
    return tuple(volumes.items())


def check_webhook(url: SecretStr | None) -> SecretStr | None:
    if url is not None and not url.get_secret_value().startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return url


def check_notification_urls(urls: SecretStr | None) -> SecretStr | None:
    if urls is None:
        return urls
    from backupd.channels import check_urls

    if problems := check_urls(urls.get_secret_value()):
        raise ValueError("; ".join(problems))
    return urls


def check_recipients(recipients: tuple[str, ...]) -> tuple[str, ...]:
    if not recipients:
        return recipients
    from backupd.encryption import check_recipient

    return tuple(check_recipient(r) for r in recipients)


def check_identity(identity: SecretStr | None) -> SecretStr | None:
    if identity is not None:
        from backupd.encryption import check_identity as check

        check(identity.get_secret_value())
    return identity


def _absolute_path(value: Any, example: str) -> Path:
    text = str(value).strip() if value is not None else ""
    if not text:
        raise ValueError(f"is empty; give an absolute path, e.g. {example}")
    if not text.startswith("/"):
        raise ValueError(f"must be an absolute path (starting with /), e.g. {example}")
    return Path(text)


def check_repository_path(value: Any) -> Path:
    # An empty value would mean the current folder, and a relative one a folder that moves
    # with it: backupd deletes files in BACKUP_DIR, so it must be one fixed place.
    path = _absolute_path(value, "/backups")
    if path.resolve() == Path("/"):  # backupd writes lock files in the folders it finds there
        raise ValueError("must not be the root folder /; give a folder of its own, e.g. /backups")
    return path


def check_tools_path(value: Any) -> Path:
    # A relative folder would pick tools by the current folder: whatever sits there would run.
    return _absolute_path(value, "/usr/lib/postgresql")


def check_instance(value: str | None) -> str | None:
    if not value:  # empty: unset, as compose passes ${VAR:-}
        return None
    from backupd.origin import check_instance as check

    return check(value)


def check_slot_name(value: str) -> str:
    # PostgreSQL's own rule for replication slot names.
    if not re.fullmatch(r"[a-z0-9_]{1,63}", value):
        raise ValueError("a replication slot name has 1 to 63 lower-case letters, digits and underscores")
    return value
