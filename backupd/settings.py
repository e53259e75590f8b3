"""Configuration from environment variables only (interface §1).

Every field is read from the upper-cased field name, then from the libpq
fallbacks in ``FALLBACKS``. Every variable ``X`` may be given as ``X_FILE``
instead (Docker secrets); giving both is an error. ``load_settings`` reports
every problem at once, one line each, naming the variable.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from backupd.errors import ConfigError
from backupd.redact import MASK, is_secret_name, redact_text

# Older names that existing setups use; the first one set wins.
FALLBACKS: dict[str, tuple[str, ...]] = {
    "db_host": ("PGHOST",),
    "db_port": ("PGPORT",),
    "db_user": ("PGUSER",),
    "db_password": ("PGPASSWORD",),
    "db_name": ("PGDATABASE",),
    "db_sslmode": ("PGSSLMODE",),
    "backup_timezone": ("TZ",),
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


MAX_DURATION_SECONDS = 100 * 365 * 86400.0
MAX_SECRET_FILE_BYTES = 64 * 1024


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


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be more than 0 (a time limit of 0 fails every run)")
    return seconds


def _split_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as UTC or Europe/Berlin") from None
    return value


def _check_cron(value: str) -> str:
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


def _check_extra_opts(value: str) -> str:
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


def _check_targets(urls: tuple[str, ...]) -> tuple[str, ...]:
    from backupd.targets import check_target_url

    for url in urls:
        check_target_url(url)
    return urls


def _parse_volumes(value: Any) -> tuple[tuple[str, Path], ...]:
    if isinstance(value, tuple):
        return value
    from backupd.actions.volumes import parse_volume_paths

    return tuple(parse_volume_paths(str(value)).items())


def _check_webhook(url: SecretStr | None) -> SecretStr | None:
    if url is not None and not url.get_secret_value().startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return url


def _check_notification_urls(urls: SecretStr | None) -> SecretStr | None:
    from backupd.channels import check_urls

    if urls is not None and (problems := check_urls(urls.get_secret_value())):
        raise ValueError("; ".join(problems))
    return urls


def _check_recipients(recipients: tuple[str, ...]) -> tuple[str, ...]:
    from backupd.encryption import check_recipient

    return tuple(check_recipient(r) for r in recipients)


def _check_identity(identity: SecretStr | None) -> SecretStr | None:
    from backupd.encryption import check_identity

    if identity is not None:
        check_identity(identity.get_secret_value())
    return identity


def _absolute_path(value: Any, example: str) -> Path:
    text = str(value).strip() if value is not None else ""
    if not text:
        raise ValueError(f"is empty; give an absolute path, e.g. {example}")
    if not text.startswith("/"):
        raise ValueError(f"must be an absolute path (starting with /), e.g. {example}")
    return Path(text)


def _check_repository_path(value: Any) -> Path:
    # An empty value would mean the current folder, and a relative one a folder that moves
    # with it: backupd deletes files in BACKUP_DIR, so it must be one fixed place.
    path = _absolute_path(value, "/backups")
    if path.resolve() == Path("/"):  # backupd writes lock files in the folders it finds there
        raise ValueError("must not be the root folder /; give a folder of its own, e.g. /backups")
    return path


def _check_tools_path(value: Any) -> Path:
    # A relative folder would pick tools by the current folder: whatever sits there would run.
    return _absolute_path(value, "/usr/lib/postgresql")


def _check_instance(value: str | None) -> str | None:
    from backupd.origin import check_instance

    return check_instance(value) if value else None  # empty: unset, as compose passes ${VAR:-}


def _check_slot_name(value: str) -> str:
    # PostgreSQL's own rule for replication slot names.
    if not re.fullmatch(r"[a-z0-9_]{1,63}", value):
        raise ValueError("a replication slot name has 1 to 63 lower-case letters, digits and underscores")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
CommaList = Annotated[tuple[str, ...], BeforeValidator(_split_list)]
Timezone = Annotated[str, AfterValidator(_check_timezone)]
Cron = Annotated[str, AfterValidator(_check_cron)]

COMPRESSION_LEVELS = {"zstd": (1, 19), "gzip": (1, 9), "bzip2": (1, 9), "xz": (0, 9), "none": (0, 0)}


class EnvWithFilesSource(PydanticBaseSettingsSource):
    """Reads ``NAME`` or ``NAME_FILE`` (never both) for each field and its fallbacks."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        super().__init__(settings_cls)
        self.environ = environ
        self.problems: list[str] = []
        self.origin: dict[str, str] = {}  # field name -> the variable that supplied it

    def _read(self, name: str) -> str | None:
        direct = self.environ.get(name)
        file_name = self.environ.get(f"{name}_FILE")
        if direct is not None and file_name is not None:
            self.problems.append(f"{name}: both {name} and {name}_FILE are set; give only one")
            return None
        if file_name is not None:
            try:
                with open(file_name, "rb") as source:  # at most 64 KiB: /dev/zero must not hang the start
                    data = source.read(MAX_SECRET_FILE_BYTES + 1)
            except OSError as err:
                self.problems.append(f"{name}_FILE={file_name!r}: cannot be read ({err.strerror})")
                return None
            if len(data) > MAX_SECRET_FILE_BYTES:
                self.problems.append(f"{name}_FILE={file_name!r}: is larger than 64 KiB; give a file with the value")
                return None
            try:
                return data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                self.problems.append(f"{name}_FILE={file_name!r}: is not UTF-8 text")
                return None
        return direct

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for name in (field_name.upper(), *FALLBACKS.get(field_name, ())):
            value = self._read(name)
            if value is not None:
                self.origin[field_name] = name
                return value, field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[field_name] = value
        return values


class Settings(BaseSettings):
    """The whole configuration. Field ``x_y`` is the variable ``X_Y``."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Connection
    db_host: str = "localhost"
    db_port: int = Field(5432, ge=1, le=65535)
    db_user: str = "postgres"
    db_password: SecretStr | None = None
    db_name: str = "all"
    db_exclude: CommaList = ()
    db_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    db_wait_timeout: Duration = 60.0

    pg_bindir: Annotated[Path, BeforeValidator(_check_tools_path)] = Path("/usr/lib/postgresql")

    # Database backups
    backup_schedule: Cron = "0 2 * * *"
    backup_timezone: Timezone = "UTC"
    backup_on_start: bool = False
    backup_dir: Annotated[Path, BeforeValidator(_check_repository_path)] = Path("/backups")
    backup_format: Literal["custom", "directory", "tar", "plain"] = "custom"
    backup_compression: Literal["zstd", "gzip", "bzip2", "xz", "none"] = "zstd"
    backup_compression_level: int | None = None
    backup_compression_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    backup_jobs: int = Field(1, ge=1, le=64)
    backup_concurrency: int = Field(1, ge=1, le=64)
    backup_globals: bool = True
    backup_row_counts: Literal["exact", "estimate", "off"] = "exact"
    backup_lock_wait_timeout: Duration = 300.0
    backup_timeout: Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)] = 6 * 3600.0
    backup_extra_opts: Annotated[str, AfterValidator(_check_extra_opts)] = ""
    backup_encryption_recipients: Annotated[tuple[str, ...], BeforeValidator(_split_list),
                                            AfterValidator(_check_recipients)] = ()
    backup_encryption_identity: Annotated[SecretStr | None, AfterValidator(_check_identity)] = None

    # Retention
    backup_retention_days: int = Field(7, ge=0, le=36500)
    backup_keep_last: int = Field(0, ge=0)
    backup_keep_daily: int = Field(0, ge=0)
    backup_keep_weekly: int = Field(0, ge=0)
    backup_keep_monthly: int = Field(0, ge=0)
    backup_keep_yearly: int = Field(0, ge=0)
    backup_min_keep: int = Field(1, ge=1)

    # Replication
    replication_targets: Annotated[tuple[str, ...], BeforeValidator(_split_list), AfterValidator(_check_targets)] = ()
    replication_interval: Duration = 3600.0
    replication_retention_days: int | None = Field(None, ge=0, le=36500)
    replication_enabled: bool = False
    replication_type: Literal["local", "rsync", "s3", "custom"] | None = None
    replication_target: str | None = None
    replication_command: str | None = None
    aws_s3_bucket: str | None = None
    aws_s3_prefix: str = "database-backups"
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_s3_storage_class: str | None = None
    aws_s3_sse: Literal["AES256", "aws:kms"] | None = None
    aws_s3_sse_kms_key_id: str | None = None
    ssh_key_file: Path | None = None
    ssh_known_hosts_file: Path | None = None

    # Volumes
    volume_paths: Annotated[tuple[tuple[str, Path], ...], BeforeValidator(_parse_volumes)] = ()
    volume_schedule: Cron = "0 3 * * 0"
    volume_retention_days: int = Field(7, ge=0, le=36500)
    docker_stop_label: str = "backupd.stop-during-backup"
    docker_stop_scope: Literal["project", "all"] = "project"
    docker_host: str | None = None

    # Restore
    force_restore: bool = False

    # Verification
    verify_schedule: Cron = "0 3 * * 0"
    verify_enabled: bool = True
    verify_sql: str | None = None
    verify_db_host: str | None = None
    verify_db_port: int | None = Field(None, ge=1, le=65535)
    verify_db_user: str | None = None
    verify_db_password: SecretStr | None = None

    # Point-in-time recovery: a WAL stream through a replication slot, and base backups
    pitr_enabled: bool = False
    pitr_slot: Annotated[str, AfterValidator(_check_slot_name)] = "backupd"
    pitr_base_schedule: Cron = "0 3 * * 0"
    pitr_retention_days: int = Field(14, ge=0, le=36500)
    pitr_max_lag: Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)] = 300.0
    pitr_verify_schedule: Cron | None = None

    # Daemon: HTTP, health, shutdown
    http_host: str = "0.0.0.0"
    http_port: int = Field(9188, ge=1, le=65535)
    http_auth_token: SecretStr | None = None
    health_max_age: Duration | None = None
    shutdown_grace: Duration = 30.0

    # Alerts and notifications
    backup_size_drop_percent: int = Field(50, ge=0, le=100)
    disk_min_free_percent: int = Field(10, ge=0, le=100)
    notification_email: CommaList = ()
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_pass: SecretStr | None = None
    smtp_from: str | None = None
    smtp_starttls: bool = True
    notify_webhook_url: Annotated[SecretStr | None, AfterValidator(_check_webhook)] = None
    notify_on: Literal["failure", "always", "never"] = "failure"
    # This sidecar's name on a shared target (backupd/origin.py); unset: a stable default
    backup_instance: Annotated[str | None, AfterValidator(_check_instance)] = None
    notification_urls: Annotated[SecretStr | None, AfterValidator(_check_notification_urls)] = None

    # Logs
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @model_validator(mode="after")
    def _legacy_replication_is_complete(self) -> Settings:
        if self.replication_enabled and self.replication_type:
            if not self.replication_target:
                raise ValueError(f"REPLICATION_TARGET: REPLICATION_TYPE={self.replication_type} needs a target")
            if self.replication_type == "custom" and not self.replication_command:
                raise ValueError("REPLICATION_COMMAND: REPLICATION_TYPE=custom needs a command")
        return self

    @model_validator(mode="after")
    def _email_has_a_server(self) -> Settings:
        if self.notification_email and not self.smtp_host:
            raise ValueError("SMTP_HOST: NOTIFICATION_EMAIL needs an SMTP server")
        if self.notification_email:
            from backupd.channels import check_email

            if problem := check_email(self):
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _compression_level_fits(self) -> Settings:
        if self.backup_compression_level is not None:
            low, high = COMPRESSION_LEVELS[self.backup_compression]
            if not low <= self.backup_compression_level <= high:
                raise ValueError(
                    f"BACKUP_COMPRESSION_LEVEL={self.backup_compression_level}: {self.backup_compression} "
                    f"takes a level from {low} to {high}"
                )
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Only explicit values: load_settings hands the environment in itself.
        return (init_settings,)

    # Derived views -----------------------------------------------------------------
    @property
    def databases(self) -> tuple[str, ...] | None:
        """The named databases, or None for ``all``."""
        names = _split_list(self.db_name)
        return None if names == ("all",) else names

    @property
    def extra_dump_args(self) -> list[str]:
        return shlex.split(self.backup_extra_opts)

    @property
    def identity(self) -> str | None:
        return self.backup_encryption_identity.get_secret_value() if self.backup_encryption_identity else None

    @property
    def pitr_drill_schedule(self) -> str:
        return self.pitr_verify_schedule or self.verify_schedule

    @property
    def auth_token(self) -> str | None:
        return self.http_auth_token.get_secret_value() if self.http_auth_token else None

    @property
    def password(self) -> str | None:
        return self.db_password.get_secret_value() if self.db_password else None

    def effective(self) -> dict[str, str]:
        """Every variable and its value as shown by ``backupd config``; secrets masked."""
        shown = {}
        for field_name in type(self).model_fields:
            value = getattr(self, field_name)
            name = field_name.upper()
            if value is None:
                text = ""
            elif isinstance(value, SecretStr) or is_secret_name(name):
                text = MASK
            elif isinstance(value, tuple):
                text = ",".join(f"{v[0]}={v[1]}" if isinstance(v, tuple) else str(v) for v in value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif field_name in _DURATION_FIELDS:
                text = f"{value:g}s"
            else:
                text = str(value)
            shown[name] = redact_text(text)  # credentials inside URLs
        return shown


_DURATION_FIELDS = {name for name, field in Settings.model_fields.items() if parse_duration in
                    [getattr(m, "func", None) for m in field.metadata]}


def _describe(error: Mapping[str, Any], origin: Mapping[str, str], environ: Mapping[str, str]) -> str:
    field = str(error["loc"][0]) if error.get("loc") else ""
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not field:  # a model-level check already names its variables
        return message
    name = origin.get(field, field.upper())
    raw = environ.get(name)
    if raw is None and f"{name}_FILE" in environ:
        raw = "(from file)"
    shown = MASK if is_secret_name(name) else raw
    return f"{name}={shown!r}: {message}" if shown is not None else f"{name}: {message}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default ``os.environ``); raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    source = EnvWithFilesSource(Settings, environ)
    values = source()
    problems = list(source.problems)
    try:
        settings = Settings(**values)
    except ValidationError as err:
        problems += [_describe(e, source.origin, environ) for e in err.errors()]
        settings = None
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings
