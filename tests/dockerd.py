"""A real Docker engine for tests: Debian's docker.io, dockerd started when none runs,
images imported locally (no registry can be reached)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BUSYBOX = "local/busybox:test"


def ensure_engine(timeout: float = 60) -> None:
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return
    log = open(Path(tempfile.gettempdir()) / "backupd-dockerd.log", "ab")
    subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("dockerd did not start; see backupd-dockerd.log in the temp folder")
        time.sleep(0.5)


def ensure_busybox() -> str:
    """A 2 MB image from Debian's busybox-static, imported with docker import."""
    if subprocess.run(["docker", "image", "inspect", BUSYBOX], capture_output=True).returncode == 0:
        return BUSYBOX
    root = Path(tempfile.mkdtemp(prefix="backupd-busybox-"))
    try:
        (root / "bin").mkdir()
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        for applet in ("sh", "sleep", "cat", "ls", "echo", "touch"):
            (root / "bin" / applet).symlink_to("busybox")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-c", 'CMD ["/bin/sh"]', "-", BUSYBOX], stdin=tar.stdout, check=True,
                       capture_output=True)
        tar.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return BUSYBOX
