"""Replication targets from REPLICATION_TARGETS and the older single-target variables,
all turned into the same list."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from backupd.errors import UsageError
from backupd.redact import strip_url_credentials
from backupd.targets.base import Target, TargetError

if TYPE_CHECKING:
    from backupd.settings import Settings

__all__ = ["Target", "TargetError", "configured_targets", "make_target", "target_urls", "check_target_url"]


def check_target_url(url: str) -> str:
    """Raise ValueError unless ``url`` is a target backupd understands."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"{strip_url_credentials(url)!r}: a file target is file:///absolute/path")
    elif parts.scheme == "s3":
        if not parts.hostname:
            raise ValueError(f"{strip_url_credentials(url)!r}: an s3 target is s3://bucket/prefix")
    elif parts.scheme == "ssh":
        try:
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            raise ValueError(f"{strip_url_credentials(url)!r}: the port is not a number") from None
        if not parts.hostname or not parts.path or parts.path == "/":
            raise ValueError(f"{strip_url_credentials(url)!r}: an ssh target is ssh://user@host[:port]/path")
    else:
        raise ValueError(f"{strip_url_credentials(url)!r}: targets are file://, s3:// or ssh:// URLs")
    return url


def target_urls(settings: Settings) -> list[str]:
    """Every configured target URL, old and new forms alike, without duplicates."""
    urls = list(settings.replication_targets)
    kind, target = settings.replication_type, settings.replication_target
    if settings.replication_enabled and kind and target and kind != "custom":
        if kind == "local":
            urls.append(Path(target).absolute().as_uri())
        elif kind == "rsync":
            urls.append(target if target.startswith("ssh://") else _scp_to_ssh_url(target))
        elif kind == "s3":
            urls.append(target if target.startswith("s3://") else f"s3://{target}")
    if settings.aws_s3_bucket:
        urls.append(f"s3://{settings.aws_s3_bucket}/{settings.aws_s3_prefix.strip('/')}")
    unique = []
    for url in urls:
        if url not in unique:
            unique.append(url)
    return unique


def _scp_to_ssh_url(target: str) -> str:
    """``user@host:/path`` (rsync's own form) -> ``ssh://user@host/path``."""
    login, _, path = target.partition(":")
    return f"ssh://{login}/{path.lstrip('/')}"


def make_target(url: str, settings: Settings) -> Target:
    check_target_url(url)
    parts = urlsplit(url)
    shown = strip_url_credentials(url)
    if parts.scheme == "file":
        from backupd.targets.file import FileTarget

        return FileTarget(shown, Path(unquote(parts.path)))
    if parts.scheme == "s3":
        from backupd.targets.s3 import S3Target

        return S3Target(shown, parts.hostname or "", unquote(parts.path), settings)
    from backupd.targets.ssh import SshTarget

    return SshTarget(shown, parts.username, parts.hostname or "", parts.port, unquote(parts.path), settings)


def configured_targets(settings: Settings) -> list[Target]:
    targets = [make_target(url, settings) for url in target_urls(settings)]
    if settings.replication_enabled and settings.replication_type == "custom":
        from backupd.targets.command import CommandTarget

        if not settings.replication_command or not settings.replication_target:
            raise UsageError("REPLICATION_TYPE=custom needs REPLICATION_COMMAND and REPLICATION_TARGET")
        targets.append(CommandTarget(settings.replication_command, settings.replication_target))
    return targets
