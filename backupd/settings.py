"""Configuration from environment variables only: the typed ``Settings`` and ``load_settings``.

Every field is read from the upper-cased field name, then from the libpq
fallbacks in ``FALLBACKS``. Every variable ``X`` may be given as ``X_FILE``
instead (Docker secrets); giving both is an error. ``load_settings`` reports
every problem at once, one line each, naming the variable.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from backupd.errors import ConfigError
from backupd.redact import MASK, is_secret_name, redact_text
from backupd.settings_checks import (
    check_cron,
    check_extra_opts,
    check_identity,
    check_instance,
    check_notification_urls,
    check_recipients,
    check_repository_path,
    check_slot_name,
    check_targets,
    check_timezone,
    check_tools_path,
    check_webhook,
    parse_duration,
    parse_volumes,
    positive,
    split_list,
)
from backupd.settings_source import FALLBACKS as FALLBACKS
from backupd.settings_source import EnvWithFilesSource

Duration = Annotated[float, BeforeValidator(parse_duration)]
CommaList = Annotated[tuple[str, ...], BeforeValidator(split_list)]
Timezone = Annotated[str, AfterValidator(check_timezone)]
Cron = Annotated[str, AfterValidator(check_cron)]

COMPRESSION_LEVELS = {"zstd": (1, 19), "gzip": (1, 9), "bzip2": (1, 9), "xz": (0, 9), "none": (0, 0)}


class Settings(BaseSettings):
    """The whole configuration. Field ``x_y`` is the variable ``X_Y``."""

    # The defaults are known good: checking them would only cost start-up time (validators that
    # import the scheduler, the targets, Apprise), on every command, for nothing.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, validate_default=False)

    # Connection
    db_host: str = Field("localhost",
        description="server host or socket directory")
    db_port: int = Field(5432, ge=1, le=65535,
        description="server port")
    db_user: str = Field("postgres",
        description="the role backupd connects as")
    db_password: SecretStr | None = Field(None,
        description=("the role's password; passed to child processes through their environment, never "
        "their arguments"))
    db_name: str = Field("all",
        description=("comma-separated names, or `all`: every database that accepts connections, templates "
        "and backupd's own scratch databases excluded"))
    db_exclude: CommaList = Field((),
        description="comma-separated names left out of `all`")
    db_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field("prefer",
        description="libpq sslmode")
    db_wait_timeout: Duration = Field(60.0,
        description=("how long a job waits (with backoff) for the server before it fails; a wrong password "
        "or a missing database fails at once"))

    pg_bindir: Annotated[Path, BeforeValidator(check_tools_path)] = Field(Path("/usr/lib/postgresql"),
        description=("where the client tools of each major live, as `<PG_BINDIR>/<major>/bin`; for each "
        "server backupd uses its own major's tools, or the nearest newer ones where their "
        "restore works on that server (see [PostgreSQL "
        "versions](restore.md#postgresql-versions))"))

    # Database backups
    backup_schedule: Cron = Field("0 2 * * *",
        description="5-field cron expression of the database backups")
    backup_timezone: Timezone = Field("UTC",
        description="zone the cron expressions are read in")
    backup_on_start: bool = Field(False,
        description="run one backup as soon as the daemon is up")
    backup_dir: Annotated[Path, BeforeValidator(check_repository_path)] = Field(Path("/backups"),
        description="local repository (a volume in compose); an absolute path, never `/` itself")
    backup_format: Literal["custom", "directory", "tar", "plain"] = Field("custom",
        description="`custom`, `directory`, `tar`, `plain` (pg_dump formats); always stored as one file")
    backup_compression: Literal["zstd", "gzip", "bzip2", "xz", "none"] = Field("zstd",
        description="`zstd`, `gzip`, `bzip2`, `xz`, `none`")
    backup_compression_level: int | None = Field(None,
        description=("tuned for throughput, chosen by measurement on two kinds of data "
        "([Performance](performance.md)); at zstd levels up to 3 the stage uses `--long=24`"),
        json_schema_extra={"shown_default": ("zstd 1 (with a 16 MiB window), or 2 where pg_dump compresses "
        "itself; gzip 6, bzip2 9, xz 3")})
    backup_compression_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256,
        description=("compressor threads (zstd, xz, and pigz for gzip); not used where pg_dump compresses "
        "its own archive"),
        json_schema_extra={"shown_default": "number of CPUs"})
    backup_jobs: int = Field(1, ge=1, le=64,
        description=("pg_dump `-j` workers (directory format); each compresses its own tables' files where "
        "pg_dump can write the compression (gzip; zstd from pg_dump 16 on)"))
    backup_concurrency: int = Field(1, ge=1, le=64,
        description="databases backed up at the same time")
    backup_globals: bool = Field(True,
        description="also dump roles and tablespaces (`pg_dumpall --globals-only`)")
    backup_row_counts: Literal["exact", "estimate", "off"] = Field("exact",
        description=("`exact`: row count of every dumped table in the dump's own snapshot; `estimate`: "
        "planner estimates; `off`"))
    backup_lock_wait_timeout: Duration = Field(300.0,
        description="pg_dump `--lock-wait-timeout`: never queue behind a migration forever")
    backup_timeout: Annotated[float, BeforeValidator(parse_duration), AfterValidator(positive)] = Field(6 * 3600.0,
        description="a backup running longer is aborted and fails; more than 0")
    backup_extra_opts: Annotated[str, AfterValidator(check_extra_opts)] = Field("",
        description=("extra pg_dump arguments, split like a shell would but run without one; options that "
        "change the output, format or connection are refused"))
    backup_encryption_recipients: Annotated[tuple[str, ...], BeforeValidator(split_list),
                                            AfterValidator(check_recipients)] = Field((),
        description=("comma-separated age recipients (`age1...` or ssh public keys): when set, every "
        "artifact is encrypted in the stream"))
    backup_encryption_identity: Annotated[SecretStr | None, AfterValidator(check_identity)] = Field(None,
        description=("age identity (secret key); needed by verify and restore of encrypted backups, and "
        "only by them"))

    # Retention
    backup_retention_days: int = Field(7, ge=0, le=36500,
        description=("keep everything younger than this (0: no age rule); see "
        "[retention](storage-layout.md#retention)"))
    backup_keep_last: int = Field(0, ge=0,
        description="keep the newest N")
    backup_keep_daily: int = Field(0, ge=0,
        description=("keep the newest backup of each of the last N days that have backups, read in "
        "`BACKUP_TIMEZONE`"))
    backup_keep_weekly: int = Field(0, ge=0,
        description="keep the newest backup of each of the last N ISO weeks that have backups")
    backup_keep_monthly: int = Field(0, ge=0,
        description="keep the newest backup of each of the last N months that have backups")
    backup_keep_yearly: int = Field(0, ge=0,
        description="keep the newest backup of each of the last N years that have backups")
    backup_min_keep: int = Field(1, ge=1,
        description=("never go below the newest N good backups per database, whatever the rules say (at "
        "least 1)"))

    # Replication
    replication_targets: Annotated[tuple[str, ...], BeforeValidator(split_list),
                                   AfterValidator(check_targets)] = Field((),
        description=("comma-separated URLs: `file:///mnt/offsite`, `s3://bucket/prefix`, "
        "`ssh://user@host[:port]/path` (rsync over SSH); see [Replication](replication.md)"))
    replication_interval: Duration = Field(3600.0,
        description="time between replication runs (it also runs after each backup)")
    replication_retention_days: int | None = Field(None, ge=0, le=36500,
        description="replaces the age rule on the targets; the other rules apply there too",
        json_schema_extra={"shown_default": "`BACKUP_RETENTION_DAYS`"})
    replication_enabled: bool = Field(False,
        description=("the older single-target form (with `REPLICATION_TYPE`, `REPLICATION_TARGET`, "
        "`REPLICATION_COMMAND`); still accepted"))
    replication_type: Literal["local", "rsync", "s3", "custom"] | None = Field(None,
        description="older form: `local`, `rsync`, `s3` or `custom`")
    replication_target: str | None = Field(None,
        description="older form: the single target")
    replication_command: str | None = Field(None,
        description=("older form, `custom`: runs `REPLICATION_COMMAND SRC DEST` for each file (argv, no "
        "shell); such copies cannot be confirmed, are shown as unconfirmed, and count for "
        "neither retention nor restore"))
    aws_s3_bucket: str | None = Field(None,
        description="when set, an `s3://` target is added")
    aws_s3_prefix: str = Field("database-backups",
        description="the prefix inside `AWS_S3_BUCKET`")
    aws_region: str | None = Field(None,
        description="S3 region (boto3's default when unset)")
    aws_endpoint_url: str | None = Field(None,
        description="S3-compatible stores (MinIO, R2, Ceph, SeaweedFS)")
    aws_access_key_id: str | None = Field(None,
        description="S3 credentials (boto3's default chain when unset)")
    aws_secret_access_key: SecretStr | None = Field(None,
        description="S3 credentials (boto3's default chain when unset)")
    aws_s3_storage_class: str | None = Field(None,
        description="storage class of uploaded objects")
    aws_s3_sse: Literal["AES256", "aws:kms"] | None = Field(None,
        description="server-side encryption: `AES256` or `aws:kms`")
    aws_s3_sse_kms_key_id: str | None = Field(None,
        description="the KMS key for `AWS_S3_SSE=aws:kms`")
    ssh_key_file: Path | None = Field(None,
        description="private key for `ssh://` targets")
    ssh_known_hosts_file: Path | None = Field(None,
        description="for `ssh://` targets; with a known-hosts file the host key is checked strictly")

    # Volumes
    volume_paths: Annotated[tuple[tuple[str, Path], ...], BeforeValidator(parse_volumes)] = Field((),
        description="comma-separated `name=/path` of directories mounted into the sidecar")
    volume_schedule: Cron = Field("0 3 * * 0",
        description="cron of the volume archives")
    volume_retention_days: int = Field(7, ge=0, le=36500,
        description="age rule for volume archives (with the `BACKUP_MIN_KEEP` floor and pins)")
    docker_stop_label: str = Field("backupd.stop-during-backup",
        description=("containers with this label set to `true` are stopped while volumes are archived or "
        "restored and while a database restore swaps, and always started again afterwards"))
    docker_stop_scope: Literal["project", "all"] = Field("project",
        description=("`project`: only containers of the sidecar's own compose project (read from its own "
        "container, or `COMPOSE_PROJECT_NAME`); `all`"))
    docker_host: str | None = Field(None,
        description="only needed for the stop label",
        json_schema_extra={"shown_default": "Docker's default socket"})

    # Restore
    force_restore: bool = Field(False,
        description="counts as `--yes`: restore over an existing database without asking")

    # Verification
    verify_schedule: Cron = Field("0 3 * * 0",
        description=("cron; restores the newest backup of each database into a scratch database, compares "
        "it with what was dumped, drops the scratch database"))
    verify_enabled: bool = Field(True,
        description="run the scheduled verification (and the scheduled PITR drill)")
    verify_sql: str | None = Field(None,
        description=("a query run in the scratch database that must return true, e.g. `SELECT count(*) > 0 "
        "FROM orders`"))
    verify_db_host: str | None = Field(None,
        description="restore drills on another server, to keep the load off production",
        json_schema_extra={"shown_default": "`DB_HOST`"})
    verify_db_port: int | None = Field(None, ge=1, le=65535,
        description="port of the drill server",
        json_schema_extra={"shown_default": "`DB_PORT`"})
    verify_db_user: str | None = Field(None,
        description="role on the drill server",
        json_schema_extra={"shown_default": "`DB_USER`"})
    verify_db_password: SecretStr | None = Field(None,
        description="password on the drill server",
        json_schema_extra={"shown_default": "`DB_PASSWORD`"})

    # Point-in-time recovery: a WAL stream through a replication slot, and base backups
    pitr_enabled: bool = Field(False,
        description=("keep a WAL stream and take base backups of the whole cluster (in the daemon); see "
        "[Point-in-time recovery](pitr.md)"))
    pitr_slot: Annotated[str, AfterValidator(check_slot_name)] = Field("backupd",
        description="the physical replication slot's name; created when missing")
    pitr_base_schedule: Cron = Field("0 3 * * 0",
        description=("cron for base backups (read in `BACKUP_TIMEZONE`); one is also taken at start when "
        "none recovers to the newest WAL"))
    pitr_incremental_schedule: Cron | None = Field(None,
        description=("cron for incremental base backups (`pg_basebackup --incremental`) against the previous "
        "base backup, full or incremental; PostgreSQL 17+ with `summarize_wal = on` "
        "([incremental base backups](pitr.md#incremental-base-backups)), else full ones, said once in the log. "
        "Off by default"))
    pitr_retention_days: int = Field(14, ge=0, le=36500,
        description="the recovery window to keep ([retention](pitr.md#pitr-retention))")
    pitr_max_lag: Annotated[float, BeforeValidator(parse_duration), AfterValidator(positive)] = Field(300.0,
        description=("`/healthz` is unhealthy when the stream has been down, or WAL the server wrote has "
        "not reached `BACKUP_DIR`, for longer than this"))
    pitr_verify_schedule: Cron | None = Field(None,
        description=("cron for the [PITR drill](pitr.md#the-pitr-drill); with `VERIFY_ENABLED=false` there "
        "is no scheduled drill"),
        json_schema_extra={"shown_default": "`VERIFY_SCHEDULE`"})

    # Daemon: HTTP, health, shutdown
    http_host: str = Field("0.0.0.0",
        description="address the daemon serves `/metrics`, `/healthz`, `/status` and the status page on")
    http_port: int = Field(9188, ge=1, le=65535,
        description="port of the HTTP server; a port already in use stops the daemon at start (exit 2)")
    http_auth_token: SecretStr | None = Field(None,
        description=("when set, `/metrics` and `/status` need `Authorization: Bearer <token>` (or the "
        "page's cookie) and the status page at `/` a login (a form, or a `/?token=` link); "
        "`/healthz` stays open"))
    health_max_age: Duration | None = Field(None,
        description=("newest good backup older than this: unhealthy. A daemon with an empty repository is "
        "healthy until its first backup is due, plus this margin"),
        json_schema_extra={"shown_default": "twice the longest gap between two runs of `BACKUP_SCHEDULE`"})
    shutdown_grace: Duration = Field(30.0,
        description=("on SIGTERM, how long a running job may finish before it is aborted (set compose's "
        "`stop_grace_period` above it)"))

    # Alerts and notifications
    backup_size_drop_percent: int = Field(50, ge=0, le=100,
        description="a backup this much smaller than the one before it raises a warning")
    disk_min_free_percent: int = Field(10, ge=0, le=100,
        description="less free space than this in `BACKUP_DIR` raises a warning")
    notification_email: CommaList = Field((),
        description="e-mail, sent through Apprise: comma-separated addresses; needs `SMTP_HOST`")
    smtp_host: str | None = Field(None,
        description="the SMTP server for `NOTIFICATION_EMAIL`")
    smtp_port: int = Field(587, ge=1, le=65535,
        description="the SMTP server's port")
    smtp_user: str | None = Field(None,
        description="SMTP login")
    smtp_pass: SecretStr | None = Field(None,
        description="SMTP password")
    smtp_from: str | None = Field(None,
        description="sender address of the e-mails")
    smtp_starttls: bool = Field(True,
        description="STARTTLS to the SMTP server")
    notify_webhook_url: Annotated[SecretStr | None, AfterValidator(check_webhook)] = Field(None,
        description=("JSON POST (works with Slack-style incoming webhooks: a `text` field, plus "
        "`severity`, `events` (each with `kind`, `key`, `message`, and `since` or `lasted`), "
        "`status`, `host`, `instance`)"))
    notify_on: Literal["failure", "always", "never"] = Field("failure",
        description=("`failure` (failures, warnings and the recovery after them), `always` (also every "
        "job's result), `never`"))
    # This sidecar's name on a shared target (backupd/origin.py); unset: a stable default
    backup_instance: Annotated[str | None, AfterValidator(check_instance)] = Field(None,
        description=("this sidecar's name: recorded in every manifest with the server's system identifier "
        "and the host name; shown by `list`, `config`, `/status` and the status page; the "
        "folder of everything it writes on a replication target, which keeps several sidecars "
        "apart on one shared target ([sharing a "
        "target](replication.md#several-servers-on-one-bucket)). 1 to 63 letters, digits, "
        "`.`, `_`, `-`, starting with a letter or digit. Never the container's host name, "
        "which changes on every re-create"),
        json_schema_extra={"shown_default": ("the compose project and service (`<project>.<service>`, read "
        "from the labels of backupd's own container when the Docker "
        "socket is mounted), else the server's system identifier")})
    notification_urls: Annotated[SecretStr | None, AfterValidator(check_notification_urls)] = Field(None,
        description=("[Apprise](https://github.com/caronc/apprise/wiki) URLs, separated by spaces or "
        "commas: `tgram://…`, `discord://…`, `slack://…`, `ntfy://…`, `gotify://…`, "
        "`matrix://…`, `pover://…`, `msteams://…`, `mailto://…`, `json://…` and a hundred "
        "more. Each is checked at start (one Apprise cannot use stops the start, named by its "
        "place and scheme). A secret: only each URL's scheme and host are ever shown"))

    # Logs
    log_level: Literal["debug", "info", "warning", "error"] = Field("info",
        description="`debug`, `info`, `warning`, `error`")
    log_format: Literal["json", "console"] = Field("json",
        description="`json` (one object a line on stderr, for `docker logs`) or `console`")

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
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only explicit values: load_settings hands the environment in itself. pydantic-settings
        # passes the other sources by name, so they keep their names here, unused.
        del env_settings, dotenv_settings, file_secret_settings
        return (init_settings,)

    # Derived views -----------------------------------------------------------------
    @property
    def databases(self) -> tuple[str, ...] | None:
        """The named databases, or None for ``all``."""
        names = split_list(self.db_name)
        return None if names == ("all",) else names

    @property
    def extra_dump_args(self) -> list[str]:
        return shlex.split(self.backup_extra_opts)

    @property
    def identity(self) -> str | None:
        return self.backup_encryption_identity.get_secret_value() if self.backup_encryption_identity else None

    @property
    def pitr_verify_cron(self) -> str:
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
