"""Stop the containers labelled ``DOCKER_STOP_LABEL=true`` while volumes are archived or
restored and while a database restore swaps, and always start them again.

With ``DOCKER_STOP_SCOPE=project`` (the default) only containers of the sidecar's
own compose project are touched: the project is read from backupd's own container
(or ``COMPOSE_PROJECT_NAME``). A container that was already stopped stays stopped.
The feature is in use when a Docker socket is mounted (or DOCKER_HOST is set);
only then is an unreachable engine an error.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.errors import BackupdError
from backupd.logging import get_logger

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from backupd.settings import Settings

log = get_logger("backupd.docker")

DEFAULT_SOCKET = Path("/var/run/docker.sock")
PROJECT_LABEL = "com.docker.compose.project"


class DockerError(BackupdError):
    """The Docker engine is needed for the stop label and cannot be used."""


def in_use(settings: Settings) -> bool:
    return bool(settings.docker_host) or DEFAULT_SOCKET.exists()


def _client(settings: Settings) -> DockerClient:
    import docker

    try:
        client = docker.DockerClient(base_url=settings.docker_host, timeout=60) if settings.docker_host \
            else docker.from_env(timeout=60)
        client.ping()
        return client
    except Exception as err:
        raise DockerError(f"the Docker engine is not reachable for DOCKER_STOP_LABEL "
                          f"({settings.docker_host or DEFAULT_SOCKET}): {err}") from None


_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")


def own_container_id() -> str | None:
    """backupd's own container: Docker mounts /etc/hostname and friends from the
    container's folder, which names its id (the hostname does not, with host networking)."""
    try:
        match = _CONTAINER_ID.search(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def _own_project(client: DockerClient) -> str | None:
    if name := os.environ.get("COMPOSE_PROJECT_NAME"):
        return name
    for candidate in (own_container_id(), socket.gethostname()):
        if not candidate:
            continue
        try:
            project: str | None = client.containers.get(candidate).labels.get(PROJECT_LABEL)
            return project
        except Exception:
            continue
    return None


def labelled_running(settings: Settings, client: DockerClient) -> list[Container]:
    labels = [f"{settings.docker_stop_label}=true"]
    if settings.docker_stop_scope == "project":
        project = _own_project(client)
        if project is None:
            log.warning("cannot tell which compose project backupd belongs to, so no container is stopped; "
                        "set COMPOSE_PROJECT_NAME or DOCKER_STOP_SCOPE=all")
            return []
        labels.append(f"{PROJECT_LABEL}={project}")
    me = own_container_id() or socket.gethostname()
    return [c for c in client.containers.list(filters={"label": labels, "status": "running"})
            if not c.id.startswith(me)]


@contextmanager
def containers_stopped(settings: Settings, why: str) -> Iterator[list[str]]:
    """Stop the labelled containers for the ``with`` block; start them again in any case."""
    if not in_use(settings):
        yield []
        return
    client = _client(settings)
    stopped: list[Container] = []
    try:
        for container in labelled_running(settings, client):
            log.info("stopping container", container=container.name, reason=why)
            container.stop(timeout=30)
            stopped.append(container)
        yield [c.name for c in stopped]
    finally:
        for container in reversed(stopped):
            try:
                container.start()
                log.info("started container again", container=container.name)
            except Exception as err:  # try the others; this one is reported loudly
                log.error("could not start a container again", container=container.name, error=str(err))
