"""The sidecar as deploy/kubernetes/ runs it, without a cluster: the ConfigMap's settings and
the StatefulSet's env, secrets as files of the Secret's volume (root-owned, mode 0440, group
fsGroup), a repository volume that fsGroup makes group-writable, and the image's unprivileged
uid. On a real server of its own, it backs up, streams WAL, answers its probes, and stops
cleanly on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.pg import free_port, remove_cluster, start_cluster

DEPLOY = REPO / "deploy" / "kubernetes"
UID = 10001  # the image's user backupd, and the pod's runAsUser, runAsGroup and fsGroup


def _shipped_environment() -> tuple[dict[str, str], dict[str, str]]:
    """(the daemon container's variables, the Secret's values) as the manifests give them."""
    config_map = yaml.safe_load((DEPLOY / "base" / "configmap.yaml").read_text())
    secret = yaml.safe_load((DEPLOY / "base" / "secret.yaml").read_text())
    statefulset = yaml.safe_load((DEPLOY / "sidecar" / "statefulset.yaml").read_text())
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    environ = {**config_map["data"], **{item["name"]: item["value"] for item in container["env"]}}
    return environ, secret["stringData"]


@pytest.fixture
def pod_folders():
    """The pod's volumes, in a folder the unprivileged uid can reach (pytest's is root's only)."""
    root = Path(tempfile.mkdtemp(prefix="backupd-pod-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_cluster():
    cluster = start_cluster()  # PITR: a slot and a stream of its own, on Debian's server and tools
    yield cluster
    remove_cluster(cluster)


def _as_pod_user(env: dict[str, str], *args: str, **popen) -> subprocess.Popen:
    argv = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--",
            sys.executable, "-m", "backupd", *args]
    full = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env}
    return subprocess.Popen(argv, env=full, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def _healthz(port: int) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, ConnectionError) as err:
        return None, str(err)


def test_the_shipped_sidecar_runs_as_the_images_user_with_secrets_as_files(own_cluster, pod_folders):
    environ, secret = _shipped_environment()
    secrets_dir, backups = pod_folders / "secrets", pod_folders / "backups"
    secrets_dir.mkdir()
    secrets_dir.chmod(0o755)  # whatever the umask (in-process tests before this one may set backupd's 077)
    secret["db-password"] = own_cluster.password
    for key, value in secret.items():  # a Secret volume: root's files, readable by fsGroup only
        (secrets_dir / key).write_text(value)
        os.chown(secrets_dir / key, 0, UID)
        (secrets_dir / key).chmod(0o440)
    backups.mkdir()
    os.chown(backups, 0, UID)
    backups.chmod(0o2770)  # what fsGroup does to the volume's top folder
    with own_cluster.connect() as admin:
        admin.execute("CREATE DATABASE shop")
    port = free_port()
    environ.update({name: value.replace("/run/secrets/backupd", str(secrets_dir))
                    for name, value in environ.items() if name.endswith("_FILE")})
    # Where this machine differs from the cluster: the server, the volume, a free port.
    environ.update({"DB_HOST": own_cluster.host, "DB_PORT": str(own_cluster.port), "DB_USER": own_cluster.user,
                    "BACKUP_DIR": str(backups), "HOME": str(backups), "HTTP_HOST": "127.0.0.1",
                    "HTTP_PORT": str(port), "BACKUP_ON_START": "true", "PITR_MAX_LAG": "60s"})
    daemon = _as_pod_user(environ, "run")
    try:
        deadline = time.monotonic() + 90
        # Ready once the first backup, the stream and the first base backup are there.
        while time.monotonic() < deadline and not (
                list(backups.glob("shop/*.json")) and list(backups.glob("_pitr/*/wal/*"))
                and _healthz(port)[0] == 200):
            assert daemon.poll() is None, daemon.communicate()[1][-3000:]
            with own_cluster.connect("shop") as conn:  # WAL to stream
                conn.execute("SELECT pg_switch_wal()")
            time.sleep(1)
        status, reasons = _healthz(port)
        assert status == 200, f"the readiness probe: {reasons}"
        assert list(backups.glob("shop/*.json")), "no backup of shop"
        assert list(backups.glob("_pitr/*/wal/*")), "no WAL streamed"
        owners = {path.stat().st_uid for path in backups.rglob("*")}
        assert owners == {UID}
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, stderr[-3000:]
    assert own_cluster.password not in stderr
