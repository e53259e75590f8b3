"""The dump side's stored documents, one typed model per kind: a database backup's manifest,
a roles dump's, a volume archive's, a backup's ``<id>.state.json``, and backupd's own
bookkeeping (``.last-failure.json``, ``.replication.json``, ``.notified.json``).

Each is validated where it is read (``backupd.documents``) and where it is written, so that
what is written is what is read, and readers use its attributes: no access by key can meet
a value of the wrong type. ``as_dict`` gives the plain dict a document was read from (a
field absent from the file stays absent), for what shows documents as JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, Field, PlainSerializer, model_validator

from backupd.documents import Document, FileName, InvalidDocument, M, decode, parse
from backupd.naming import GLOBALS, is_globals_id, looks_like_id, parse_id
from backupd.origin import INSTANCE_PATTERN

Count = Annotated[int, Field(ge=0)]


def _in_utc(when: datetime) -> datetime:
    """A time that exists in UTC (``0001-01-01T00:00:00+01:00`` does not)."""
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


def iso_text(when: datetime) -> str:
    """backupd's own form, ``2026-11-21T02:00:00Z`` (a year below 1000 keeps four digits)."""
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


Time = Annotated[AwareDatetime, AfterValidator(_in_utc), PlainSerializer(iso_text, return_type=str)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the default of a time an older document may lack


def _globals_id(text: str) -> str:
    # Roles dumps of older versions had ids "_globals-<time>".
    if not (is_globals_id(text) or (looks_like_id(text) and parse_id(text)[0] == GLOBALS)):
        raise ValueError("not the id of a roles dump")
    return text


def _backup_id(text: str) -> str:
    if not looks_like_id(text):
        raise ValueError("not a backup id")
    return text


BackupId = Annotated[str, AfterValidator(_backup_id)]
GlobalsId = Annotated[str, AfterValidator(_globals_id)]


class Encryption(Document):
    tool: Literal["age"]
    recipients: list[str] = []


class ServerSeen(Document):
    host: str = ""
    port: int = 0
    version: str = ""


class ToolsUsed(Document):
    major: int = 0
    bindir: str = ""
    version: str = ""


class OriginRecord(Document):
    """Where a backup came from (``backupd.origin``): the instance that wrote it, and the
    cluster it was taken from when that was known."""

    instance: Annotated[str, Field(pattern=rf"^{INSTANCE_PATTERN.pattern}$")]
    system_identifier: str | None = None


class Manifest(Document):
    """What every stored artifact's manifest has. A field that backupd never writes as null
    does not accept null (a reader may do arithmetic with it); one absent from an older
    manifest stays absent, and its reader's default applies."""

    id: BackupId
    file: FileName
    size_bytes: Count
    sha256: Sha256 | None  # each stored kind requires it; only an UnlistedFile has none
    format: Literal["custom", "directory", "tar", "plain"]
    compression: Literal["zstd", "gzip", "bzip2", "xz", "none"] = "none"
    compression_level: int = 0
    compressed_by: Literal["pg_dump", "stream"] = "stream"
    encryption: Encryption | None = None
    label: str | None = None
    scheduled_for: Time | None = None
    started: Time = EPOCH
    finished: Time = EPOCH
    duration_seconds: Seconds = 0.0
    backupd_version: str = ""
    origin: OriginRecord | None = None  # absent in manifests from before origins were recorded

    @property
    def recorded_duration(self) -> float | None:
        """How long it took; None when the manifest does not say."""
        return self.duration_seconds if "duration_seconds" in self.model_fields_set else None

    @property
    def recorded_finish(self) -> datetime | None:
        """When it finished, to the second as it is shown; None when the manifest does not say."""
        return self.finished.replace(microsecond=0) if "finished" in self.model_fields_set else None


class Grant(Document):
    grantee: str | None
    privilege: Literal["CONNECT", "CREATE", "TEMPORARY"]
    grantable: bool = False


class DatabaseInfoRecord(Document):
    owner: str
    encoding: str
    collate: str
    ctype: str
    locale_provider: Literal["libc", "icu"] = "libc"
    icu_locale: str | None = None
    settings: list[str] = []
    acl: list[str] = []
    connection_limit: Annotated[int, Field(ge=-1)] = -1
    grants: list[Grant] | None = None  # absent in backups made before grants were recorded

    @property
    def grants_recorded(self) -> bool:
        """Grants are recorded (None among them: the defaults, no ACL); backups made before
        backupd recorded grants have none, not even None."""
        return "grants" in self.model_fields_set

    @property
    def limit_recorded(self) -> int | None:
        """The connection limit, when the manifest has one."""
        return self.connection_limit if "connection_limit" in self.model_fields_set else None


class TableRecord(Document):
    schema_: str = Field(alias="schema")
    name: str
    rows: Count | None = None


class DumpManifest(Manifest):
    sha256: Sha256
    kind: Literal["database"] = "database"
    database: str
    database_info: DatabaseInfoRecord | None = None
    row_counts: Literal["exact", "estimate", "off"] = "exact"
    tables: list[TableRecord] = []
    globals_id: GlobalsId | None = None
    server: ServerSeen = ServerSeen()
    pg_dump_version: str = ""
    tools: ToolsUsed = ToolsUsed()

    @model_validator(mode="after")
    def _names_its_own_database(self) -> DumpManifest:
        """The database a restore goes to by default is the one the id (and so the folder)
        names: a manifest that says another cannot steer a restore elsewhere."""
        _id_names(self.id, self.database)
        return self


def _id_names(backup_id: str, name: str) -> None:
    if parse_id(backup_id)[0] != name:
        raise ValueError(f"its id {backup_id!r} is not of {name!r}")


class RolesManifest(Manifest):
    sha256: Sha256
    kind: Literal["globals"]
    id: GlobalsId
    database: None = None
    role_passwords: bool = False
    server: ServerSeen = ServerSeen()
    pg_dump_version: str = ""
    tools: ToolsUsed = ToolsUsed()


class VolumeManifest(Manifest):
    sha256: Sha256
    kind: Literal["volume"]
    volume: str = Field(min_length=1)
    database: None = None
    source: str = ""
    file_count: Count = 0
    source_bytes: Count = 0
    warnings: list[str] = []

    def counts(self) -> dict[str, int | None]:
        """What it holds, as ``volumes list`` shows it: None for a count the manifest lacks."""
        return {name: getattr(self, name) if name in self.model_fields_set else None
                for name in ("file_count", "source_bytes")}

    @model_validator(mode="after")
    def _names_its_own_volume(self) -> VolumeManifest:
        _id_names(self.id, self.volume)
        return self


class UnlistedFile(Manifest):
    """A dump restored from a file that has no manifest beside it: what its name says, and
    nothing to check it against (no sha256, no database of its own)."""

    kind: Literal["database"] = "database"
    database: None = None
    sha256: None = None


StoredManifest = DumpManifest | RolesManifest | VolumeManifest
MANIFESTS: dict[str, type[StoredManifest]] = {"database": DumpManifest, "globals": RolesManifest,
                                              "volume": VolumeManifest}


class Verification(Document):
    time: Time
    result: Literal["passed", "failed", "unverifiable"]
    reason: str | None = None
    duration_seconds: Seconds = 0.0


class CopySent(Document):
    mtime: float = 0.0


class Replica(Document):
    time: Time
    confirmed: bool
    files: dict[str, CopySent] = {}


class Integrity(Document):
    time: Time
    reason: str
    mtime: float


class BackupState(Document):
    """``<id>.state.json``: the later facts about one backup."""

    pinned: bool = False
    verification: Verification | None = None
    replicas: dict[str, Replica] = {}
    integrity: Integrity | None = None


class FailureRecord(Document):
    """``.last-failure.json``: the newest failure of a database (or of a whole run)."""

    database: str | None
    kind: Literal["database", "volume", "globals"] = "database"
    time: Time
    error: str


class Refused(Document):
    id: str
    reason: str


class TargetRun(Document):
    """One target's newest replication run in ``.replication.json``."""

    time: Time
    ok: bool
    error: str | None = None
    sent: Count = 0
    deleted: Count = 0
    confirmed: bool = True
    refused: list[Refused] = []
    last_success: Time | None = None
    stored: dict[str, Count] = {}
    stored_bytes: Count = 0


class ReplicationRuns(Document):
    runs: dict[str, TargetRun]


class ReportedCondition(Document):
    """One condition in ``.notified.json``: its message, and since when it holds."""

    message: str
    since: Time | None = None


class Notified(Document):
    """``.notified.json``: the conditions reported last time, by key. Older releases kept
    only the message (a string)."""

    time: Time = EPOCH
    active: dict[str, ReportedCondition | str] = {}


def as_dict(document: Document) -> dict[str, Any]:
    """The validated document as the plain dict its readers use: fields the file did not
    have stay absent, times are backupd's ISO text."""
    return document.model_dump(mode="json", by_alias=True, exclude_unset=True)


def read_manifest(path: Path) -> StoredManifest:
    """The manifest at ``path``, of the model its ``kind`` names. OSError when it cannot be
    read; InvalidDocument when it is not a manifest of backupd's."""
    return parse_manifest(decode(path.read_bytes()))


def parse_manifest(data: Any) -> StoredManifest:
    """Decoded JSON as the manifest its ``kind`` names, or InvalidDocument."""
    kind = data.get("kind", "database") if isinstance(data, dict) else None
    model = MANIFESTS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InvalidDocument("it is not an object with a known kind (database, globals or volume)")
    return parse(model, data)


def read_as(model: type[M], path: Path) -> M:
    """Any other stored document; OSError or InvalidDocument as for a manifest."""
    return parse(model, decode(path.read_bytes()))


def read_runs(path: Path) -> dict[str, TargetRun]:
    """``.replication.json`` (target URL -> its newest run)."""
    return parse(ReplicationRuns, {"runs": decode(path.read_bytes())}).runs
