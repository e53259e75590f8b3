"""The names backupd gives to what it stores in ``BACKUP_DIR``: backup ids, the percent-encoding
of a database's name into a folder name, and the one test of which files are backupd's own
(nothing else is ever deleted). Pure functions of names: no file is read here."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from backupd.errors import UsageError

ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_TIME = r"\d{8}T\d{6}Z"
# A database name may hold any character but NUL, a newline included: DOTALL and fullmatch.
_ID = re.compile(rf"(?P<name>.+)-(?P<time>{_TIME})", re.DOTALL)
# Roles dumps have ids of their own shape, so that no database (not even one called
# "_globals" or "globals") can ever share an id with them: a database id ends in "-<time>".
GLOBALS_ID_PREFIX = "globals@"
_GLOBALS_ID = re.compile(rf"globals@(?P<time>{_TIME})")
GLOBALS = "_globals"
VOLUMES = "_volumes"
PITR = "_pitr"  # point-in-time recovery keeps a layout of its own (backupd.pitr.store)
FORMAT_SUFFIXES = {"custom": ".dump", "directory": ".dir.tar", "tar": ".tar", "plain": ".sql"}

# The names backupd writes in a backup folder, and nothing else is ever deleted:
#   <encoded id><data suffix>      the stored file          <encoded id>.json        its manifest
#   <encoded id>.state.json        later facts              .<one of those>.partial  being written
#   .<encoded id><data suffix>.staging   a directory dump being packed
#   .<encoded id>.json.deleting    a manifest whose backup is being deleted (prune)
_DATA_SUFFIX = r"\.(?:dump|dir\.tar|tar|sql)(?:\.(?:zst|gz|bz2|xz))?(?:\.age)?"
_OWN_NAME = re.compile(rf"(?P<stem>.*[-@]{_TIME})(?P<suffix>{_DATA_SUFFIX}|\.json|\.state\.json)", re.DOTALL)
_OWN_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:partial|staging|deleting|pending)", re.DOTALL)
_FETCH_TEMPORARY = re.compile(r"\.fetch-[a-z0-9_]{8}")  # tempfile.TemporaryDirectory(prefix=".fetch-")
# In BACKUP_DIR itself: a database restore's and a volume restore's staging folders.
RESTORE_STAGING = re.compile(r"\.restore-[0-9a-f]{0,40}-\d+\.staging|\.volume-restore-[^/]+\.staging")
# backupd's own bookkeeping beside the backups; written atomically like everything else.
BOOKKEEPING = {".last-failure.json", ".replication.json", ".notified.json"}


def encode_name(name: str) -> str:
    """Percent-encode ``%``, ``/`` and a leading ``.`` or ``_`` so that no database can
    escape its folder or collide with ``_globals``."""
    encoded = name.replace("%", "%25").replace("/", "%2F")
    if encoded[:1] == ".":
        encoded = "%2E" + encoded[1:]
    elif encoded[:1] == "_":
        encoded = "%5F" + encoded[1:]
    return encoded


def decode_name(encoded: str) -> str:
    """The inverse of ``encode_name``: every ``%`` in an encoded name starts an escape."""
    return unquote(encoded)


def make_id(name: str, when: datetime) -> str:
    """A database backup's or a volume archive's id."""
    return f"{name}-{when.astimezone(UTC).strftime(ID_TIME_FORMAT)}"


def make_globals_id(when: datetime) -> str:
    """A roles dump's id: ``globals@20261121T020000Z``."""
    return f"{GLOBALS_ID_PREFIX}{when.astimezone(UTC).strftime(ID_TIME_FORMAT)}"


def is_globals_id(backup_id: str) -> bool:
    return bool(_GLOBALS_ID.fullmatch(backup_id))


def parse_id(backup_id: str) -> tuple[str, datetime]:
    """``shop-20261121T020000Z`` -> ("shop", datetime); a roles dump's id -> ("_globals", datetime);
    UsageError when it is not an id."""
    match = _GLOBALS_ID.fullmatch(backup_id) or _ID.fullmatch(backup_id)
    if not match:
        raise UsageError(f"{backup_id!r} is not a backup id (expected <database>-YYYYMMDDTHHMMSSZ)")
    when = datetime.strptime(match.group("time"), ID_TIME_FORMAT).replace(tzinfo=UTC)
    return match.groupdict().get("name") or GLOBALS, when


def looks_like_id(text: str) -> bool:
    """Whether ``text`` has the shape of an id. A database name may contain ``/``, so an id
    may too: callers look an id up in the repository before they take it for a path."""
    return bool(_GLOBALS_ID.fullmatch(text) or _ID.fullmatch(text))


def own_file_id(name: str) -> tuple[str, str] | None:
    """(id, suffix) when ``name`` is a file name backupd writes for a backup (the stored
    file, its manifest or its state), else None: the one test of what backupd may delete."""
    match = _OWN_NAME.fullmatch(name)
    if not match or match.group("stem").startswith("."):
        return None
    backup_id = decode_name(match.group("stem"))
    if encode_name(backup_id) != match.group("stem") or not looks_like_id(backup_id):
        return None  # not a name backupd would have written
    return backup_id, match.group("suffix")


def is_own_temporary(name: str) -> bool:
    """A partial file, staging folder or deletion marker of backupd's, in a backup folder."""
    match = _OWN_TEMPORARY.fullmatch(name)
    if match and (match.group("name") in BOOKKEEPING or own_file_id(match.group("name"))
                  or is_own_temporary(match.group("name"))):  # e.g. the partial of a pending file
        return True
    return bool(_FETCH_TEMPORARY.fullmatch(name))


PENDING_SUFFIX = ".pending"


def pending_path(final: Path) -> Path:
    """Where a stored file waits, complete but hidden, until its manifest is written (row
    counts and the archive check come first): a run killed meanwhile leaves a temporary
    that the next run removes, never a file that looks like a backup without its manifest."""
    return final.with_name(f".{final.name}{PENDING_SUFFIX}")


def is_data_suffix(suffix: str) -> bool:
    return bool(re.fullmatch(_DATA_SUFFIX, suffix))


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def parse_iso(text: str | None) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if text else None
