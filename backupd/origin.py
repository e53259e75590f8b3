"""Where a backup came from: the server's system identifier, this sidecar's instance name
(``BACKUP_INSTANCE``) and the host name, recorded in every manifest.

Several sidecars may share one replication target. The instance name keeps them apart
there: it is the top folder of everything a sidecar writes to a target, retention on a
target deletes only copies of this instance, and a fetch refuses a manifest of another
origin than the one asked for. The default name must survive a re-created container, so
it is never the container's host name: it is the compose project and service (labels of
backupd's own container, through the Docker API), else the server's system identifier.

A manifest written before origins were recorded has none: it reads as the instance
reading it. One whose origin is not a well-formed object is an invalid manifest, never anybody's.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backupd.errors import BackupdError, IntegrityError, RefusedError
from backupd.logging import get_logger

if TYPE_CHECKING:
    from psycopg import Connection

    from backupd.manifests import Manifest
    from backupd.settings import Settings

log = get_logger("backupd.origin")

# Safe as one folder or object-name component on every target, never hidden or special
# ("." / ".."), never one of backupd's own folders (they start with "_"), within 63
# characters like the rest of PostgreSQL's names.
INSTANCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
SYSTEM_IDENTIFIER = "SELECT system_identifier::text FROM pg_control_system()"


class OriginUnknown(BackupdError):
    """This sidecar's instance name cannot be learnt (no BACKUP_INSTANCE, no compose
    labels, and the server cannot be asked for its system identifier)."""


def check_instance(value: str) -> str:
    """The validator of BACKUP_INSTANCE (and of ``--instance``)."""
    if not INSTANCE_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not an instance name: 1 to 63 letters, digits, '.', '_' or '-', "
                         f"starting with a letter or digit")
    return value


@dataclass(frozen=True)
class Origin:
    instance: str
    system_identifier: str | None
    host: str

    def to_json(self) -> dict[str, Any]:
        return {"instance": self.instance, "system_identifier": self.system_identifier, "host": self.host}


def system_identifier(conn: Connection[Any]) -> str:
    """The cluster's identifier: fixed at initdb, the same on its physical replicas."""
    row = conn.execute(SYSTEM_IDENTIFIER).fetchone()
    if row is None:
        raise IntegrityError("the server did not report its system identifier")
    return str(row[0])


_cache: dict[str, str | None] = {}


def compose_instance(settings: Settings) -> str | None:
    """``<project>.<service>`` from the compose labels of backupd's own container, when a
    Docker engine is there to ask. Asked once per process."""
    if "compose" not in _cache:
        _cache["compose"] = _ask_docker(settings)
    return _cache["compose"]


def _ask_docker(settings: Settings) -> str | None:
    from backupd import docker_ctl

    me = docker_ctl.own_container_id()
    if me is None or not docker_ctl.in_use(settings):
        return None
    try:
        labels = docker_ctl._client(settings).containers.get(me).labels
    except Exception as err:  # no engine, no permission: the next default is used
        log.info("the compose labels of backupd's container could not be read", error=str(err))
        return None
    project, service = labels.get(PROJECT_LABEL), labels.get(SERVICE_LABEL)
    name = f"{project}.{service}" if project and service else None
    return name if name and INSTANCE_PATTERN.fullmatch(name) else None


def _server_identifier(settings: Settings, conn: Connection[Any] | None = None) -> str | None:
    """The server's system identifier: asked on ``conn`` when given (a manifest records the
    server it was made from), else once per process; None when the server cannot be reached."""
    from backupd.postgres import Server

    try:
        if conn is not None:
            value = system_identifier(conn)
        elif "system_identifier" in _cache:
            return _cache["system_identifier"]
        else:
            with Server.from_settings(settings).connect() as own:
                value = system_identifier(own)
    except Exception as err:  # unreachable, or a role without the right to ask
        log.info("the server's system identifier could not be read", error=str(err).strip())
        return None
    _cache.setdefault("system_identifier", value)  # the default instance name stays what it was first
    return value


def this_instance(settings: Settings, conn: Connection[Any] | None = None) -> str:
    """BACKUP_INSTANCE, else the compose project and service, else the system identifier."""
    name = (settings.backup_instance or compose_instance(settings) or _cache.get("system_identifier")
            or _server_identifier(settings, conn))
    if name is None:
        raise OriginUnknown("this sidecar's instance name is unknown: BACKUP_INSTANCE is not set, backupd's "
                            "compose labels cannot be read, and the server cannot be asked for its system "
                            "identifier; set BACKUP_INSTANCE")
    return name


def instance_if_known(settings: Settings) -> str | None:
    """The instance name without asking the server now (the status page must answer at
    once): known once a job, or the start of the daemon, has asked."""
    return settings.backup_instance or compose_instance(settings) or _cache.get("system_identifier")


def system_identifier_if_known() -> str | None:
    """The server's system identifier once a job, or the start of the daemon, has asked."""
    return _cache.get("system_identifier")


def this_instance_or_none(settings: Settings) -> str | None:
    try:
        return this_instance(settings)
    except OriginUnknown:
        return None


def host_name(settings: Settings) -> str:
    """The Docker host's name when the engine can be asked (a container's own host name
    changes on every re-create), else this machine's."""
    host = _cache.get("host")
    if host is None:
        from backupd import docker_ctl

        name = None
        if docker_ctl.own_container_id() and docker_ctl.in_use(settings):
            try:
                name = docker_ctl._client(settings).info().get("Name")
            except Exception:
                name = None
        host = _cache["host"] = name or socket.gethostname()
    return host


def this_origin(settings: Settings, conn: Connection[Any] | None = None) -> Origin:
    """For a new manifest; ``conn`` is a connection to the server when there is one."""
    return Origin(this_instance(settings, conn), _server_identifier(settings, conn), host_name(settings))


def manifest_fields(settings: Settings, conn: Connection[Any] | None = None) -> dict[str, Any]:
    """``{"origin": ...}`` for a manifest; an instance that cannot be learnt leaves it out,
    so a volume archive still succeeds while the server is down (it then reads as the
    instance reading it, like an older manifest)."""
    try:
        return {"origin": this_origin(settings, conn).to_json()}
    except OriginUnknown as err:
        log.warning("the backup's origin is not recorded", error=str(err))
        return {}


def instance_of(manifest: Manifest, reader: str) -> str:
    """The instance that wrote the backup: ``reader`` for a manifest from before origins
    were recorded (a manifest's model has validated its origin already)."""
    return reader if manifest.origin is None else manifest.origin.instance


def system_identifier_of(manifest: Manifest) -> str | None:
    return manifest.origin.system_identifier if manifest.origin else None


def check_fetched(manifest: Manifest, asked: str, where: str) -> None:
    """A manifest fetched for instance ``asked`` must be that instance's; refused (exit 2)
    otherwise, naming both, before anything of it is kept."""
    found = instance_of(manifest, asked)  # one from before origins: the instance whose folder holds it
    if found != asked:
        raise RefusedError(f"the manifest of {manifest.id!r} at {where} was written by instance {found!r}, "
                           f"not by {asked!r} as asked; nothing was fetched (another instance's backup is "
                           f"restored only with --instance {found})")
