"""Where backups live on a target that several sidecars may share.

Each instance writes under a folder of its own name: ``<instance>/<database>/<id>.json``,
``<instance>/_globals/...``, ``<instance>/_volumes/<name>/...``, so two instances never
make the same object name, even for backups of the same second. Targets written before
instances existed hold the same layout at their top (``<database>/<id>.json``); those
copies read as the instance reading them. The two never mix up: an instance name starts
with a letter or digit and is followed by a backupd folder, while at the top level a
database's folder holds files and backupd's own folders start with ``_``. PITR files stay
in ``_pitr/<system identifier>/``, which is per cluster already.
"""

from __future__ import annotations

from dataclasses import dataclass

from backupd.errors import UsageError
from backupd.origin import INSTANCE_PATTERN
from backupd.repository import GLOBALS, VOLUMES, decode_name, encode_name, own_file_id, parse_id
from backupd.targets.base import RemoteFile


def on_target(instance: str, relative: str) -> str:
    """A file's path on a target: under its instance's folder."""
    return f"{instance}/{relative}"


def split_instance(relative: str) -> tuple[str | None, str]:
    """(instance, path inside its folder); (None, path) for the layout from before instances."""
    head, _, rest = relative.partition("/")
    if INSTANCE_PATTERN.fullmatch(head) and "/" in rest:
        return head, rest
    return None, relative


@dataclass(frozen=True)
class RemoteBackup:
    id: str
    database: str
    manifest: str  # path of the manifest on the target
    data: list[str]  # paths of its other files
    size: int
    instance: str | None  # the folder it is in; None: the top level, from before instances

    @property
    def kind(self) -> str:
        inner = split_instance(self.manifest)[1]
        if inner.startswith(f"{VOLUMES}/"):
            return "volume"
        return "globals" if inner.startswith(f"{GLOBALS}/") else "database"

    def in_space(self, instance: str, me: str) -> bool:
        """Is it among ``instance``'s copies, as seen by instance ``me`` (the top level is
        the reader's own)?"""
        return self.instance == instance or (self.instance is None and instance == me)


def remote_backups(remote: dict[str, RemoteFile]) -> list[RemoteBackup]:
    """Every backup on a target, of every instance, from file names alone:
    ``[<instance>/]<folder>/<encoded id>.json``."""
    found = []
    for relative in remote:
        instance, inner = split_instance(relative)
        folder, _, name = inner.rpartition("/")
        nested = folder.startswith(f"{VOLUMES}/") and folder.count("/") == 1
        if not folder or ("/" in folder and not nested) or not name.endswith(".json") or name.endswith(".state.json"):
            continue
        stem = name[:-5]
        try:
            backup_id = decode_name(stem)
            database, _ = parse_id(backup_id)
        except (UsageError, ValueError):
            continue
        if folder not in (encode_name(database), GLOBALS, f"{VOLUMES}/{encode_name(database)}"):
            continue  # not laid out by backupd: never fetched, never deleted
        prefix = relative[: -len(name)]
        data = [r for r in remote if r.startswith(f"{prefix}{stem}.") and r != relative
                and (own_file_id(r.rpartition("/")[2]) or ("", ""))[0] == backup_id]  # never someone else's
        found.append(RemoteBackup(backup_id, database, relative, data,
                                  sum(remote[r].size for r in [relative, *data]), instance))
    return found
