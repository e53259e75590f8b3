"""Volume archives with a real Docker engine: labelled containers stop for the archive
and always start again; a restore makes the folder identical to the archive."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path

import docker
import pytest

from tests.dockerd import ensure_busybox, ensure_engine


@pytest.fixture(scope="module")
def engine():
    ensure_engine()
    image = ensure_busybox()
    client = docker.from_env()
    yield client, image
    for container in client.containers.list(all=True, filters={"label": "backupd-test"}):
        container.remove(force=True)


def start(engine, labels: dict[str, str], running: bool = True):
    client, image = engine
    container = client.containers.run(image, ["sleep", "3600"], detach=True, network_mode="none", init=True,
                                      labels={"backupd-test": "1", **labels}, name=f"bt-{uuid.uuid4().hex[:8]}")
    if not running:
        container.stop(timeout=1)
    container.reload()
    return container


def state(container) -> dict:
    container.reload()
    return container.attrs["State"]


@pytest.fixture
def volume(tmp_path):
    folder = tmp_path / "uploads"
    (folder / "nested" / "empty").mkdir(parents=True)
    (folder / "ünïcødé name.txt").write_text("ü" * 1000)
    (folder / "nested" / "data.bin").write_bytes(os.urandom(300_000))
    (folder / "nested" / "script.sh").write_text("#!/bin/sh\n")
    (folder / "nested" / "script.sh").chmod(0o750)
    (folder / "link").symlink_to("nested/data.bin")
    os.link(folder / "nested" / "data.bin", folder / "hard-link.bin")
    os.chown(folder / "nested" / "script.sh", 1234, 5678)
    return folder


def tree(folder):
    result = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            content = os.readlink(path) if os.path.islink(path) else (
                open(path, "rb").read() if os.path.isfile(path) else None)
            result[os.path.relpath(path, folder)] = (info.st_mode, info.st_uid, info.st_gid, content)
    return result


def test_labelled_containers_stop_for_the_archive_and_start_again(engine, backupd, volume):
    label = "backupd.stop-during-backup"
    labelled = start(engine, {label: "true"})
    other = start(engine, {})
    already_stopped = start(engine, {label: "true"}, running=False)
    before = {c.id: state(c) for c in (labelled, other, already_stopped)}
    backupd.ok("volumes", "backup", extra_env={"VOLUME_PATHS": f"uploads={volume}", "DOCKER_STOP_SCOPE": "all"})
    after = {c.id: state(c) for c in (labelled, other, already_stopped)}
    assert after[labelled.id]["Running"]
    assert after[labelled.id]["StartedAt"] > before[labelled.id]["StartedAt"]  # it was stopped and started
    assert after[other.id]["StartedAt"] == before[other.id]["StartedAt"]  # never touched
    assert not after[already_stopped.id]["Running"]  # stays stopped
    listed = backupd.ok("volumes", "list", "--json").stdout
    assert '"file_count": 5' in listed


def test_containers_start_again_after_a_failed_archive(engine, env, volume, tmp_path):
    from tests.conftest import Backupd

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)], check=True)
    try:
        labelled = start(engine, {"backupd.stop-during-backup": "true"})
        started = state(labelled)["StartedAt"]
        result = Backupd({**env, "BACKUP_DIR": str(tiny / "backups"), "BACKUP_COMPRESSION": "none"})(
            "volumes", "backup", extra_env={"VOLUME_PATHS": f"uploads={volume}", "DOCKER_STOP_SCOPE": "all"})
        assert result.returncode == 1 and "No space left on device" in result.stderr
        assert state(labelled)["Running"] and state(labelled)["StartedAt"] > started
    finally:
        subprocess.run(["umount", "-l", str(tiny)])


def test_project_scope_touches_only_the_own_compose_project(engine, backupd, volume):
    mine = start(engine, {"backupd.stop-during-backup": "true", "com.docker.compose.project": "mine"})
    theirs = start(engine, {"backupd.stop-during-backup": "true", "com.docker.compose.project": "theirs"})
    before = {c.id: state(c)["StartedAt"] for c in (mine, theirs)}
    backupd.ok("volumes", "backup", extra_env={"VOLUME_PATHS": f"uploads={volume}", "COMPOSE_PROJECT_NAME": "mine"})
    assert state(mine)["StartedAt"] > before[mine.id]
    assert state(theirs)["StartedAt"] == before[theirs.id]


def test_a_volume_round_trip_restores_identical_files(backupd, volume, tmp_path, keys_for_volumes):
    recipient, identity = keys_for_volumes
    env = {"VOLUME_PATHS": f"uploads={volume}", "BACKUP_ENCRYPTION_RECIPIENTS": recipient}
    backupd.ok("volumes", "backup", extra_env=env)
    expected = tree(volume)
    (volume / "added later.txt").write_text("not in the archive")
    (volume / "ünïcødé name.txt").write_text("changed")
    refused = backupd("volumes", "restore", "latest", extra_env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    backupd.ok("volumes", "restore", "latest", "--yes",
               extra_env={**env, "BACKUP_ENCRYPTION_IDENTITY": identity})
    assert tree(volume) == expected
    elsewhere = tmp_path / "elsewhere"
    backupd.ok("volumes", "restore", "latest", "--to", str(elsewhere),
               extra_env={**env, "BACKUP_ENCRYPTION_IDENTITY": identity})
    assert tree(elsewhere) == expected


@pytest.fixture(scope="module")
def keys_for_volumes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("volume-keys")
    subprocess.run(["age-keygen", "-o", str(folder / "k")], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(folder / "k")], capture_output=True, text=True).stdout.strip()
    return recipient, (folder / "k").read_text()


def test_a_file_changing_while_it_is_read_gives_a_warning_not_a_failure(backupd, tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    growing = folder / "growing.log"
    growing.write_bytes(os.urandom(64 * 1024 * 1024))
    stop = threading.Event()

    def writer():
        with open(growing, "ab") as out:
            while not stop.is_set():
                out.write(b"x" * 4096)
                out.flush()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = backupd("volumes", "backup", extra_env={"VOLUME_PATHS": f"busy={folder}", "BACKUP_COMPRESSION": "none"})
    finally:
        stop.set()
        thread.join()
    assert result.returncode == 0, result.stderr
    assert "file changed as we read it" in result.stderr
    assert '"warnings": null' not in result.stderr


def test_an_unreachable_engine_is_an_error_only_when_the_stop_label_is_in_use(backupd, volume, monkeypatch):
    from tests.pg import free_port

    result = backupd("volumes", "backup", extra_env={"VOLUME_PATHS": f"uploads={volume}",
                                                     "DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}"})
    assert result.returncode == 1
    assert "Docker engine is not reachable" in result.stderr
    assert backupd.ok("volumes", "list", "--json").stdout.strip() == "[]"  # nothing archived without the stop

    import backupd.docker_ctl as docker_ctl
    from backupd.settings import load_settings

    monkeypatch.setattr(docker_ctl, "DEFAULT_SOCKET", Path("/nonexistent/docker.sock"))
    with docker_ctl.containers_stopped(load_settings({}), "a test") as stopped:
        assert stopped == []  # no socket, no DOCKER_HOST: the feature is not in use, nothing to reach
