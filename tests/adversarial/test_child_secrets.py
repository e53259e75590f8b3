"""Class 8, secrets reach only the process that needs them: while a backup (encrypted), an
encrypted restore and replications to S3 (SeaweedFS) and over ssh run, with every secret
backupd knows of (and one it cannot know of) set to a marker, /proc/<pid>/environ and
/proc/<pid>/cmdline of every descendant of backupd are read. pg_dump and its siblings see
the database password (as PGPASSWORD) and nothing else secret; every other child sees no
secret at all; no argv holds one.

Each tool is wrapped in a shim on PATH that sleeps a moment before it execs the real one,
so even a short-lived child is seen; the shim's environment is exactly what the tool gets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.helpers import make_database

DB = "child_secrets_db"
LIBPQ = {"pg_dump", "pg_dumpall", "pg_restore", "psql"}
OTHERS = {"zstd", "age", "tee", "tar", "rsync", "ssh", "gzip", "pigz"}
SHIMMED = sorted(LIBPQ | {"zstd", "age", "tee", "rsync", "ssh"})
PAUSE = "0.15"
SHIM_SLEEP = f"sleep\0{PAUSE}\0".encode()


@pytest.fixture(scope="module", autouse=True)
def database(cluster):
    make_database(cluster, DB, rows=500)


def write_shim(shim: Path, real: str) -> None:
    shim.write_text(f'#!/bin/sh\nsleep {PAUSE}\nexec {real} "$@"\n')
    shim.chmod(0o755)


@pytest.fixture
def shims(tmp_path, cluster) -> Path:
    """Shims on PATH for the other tools; for PostgreSQL's, shims in PG_BINDIR's layout
    (``<folder>/pg/<major>/bin``), since backupd takes those from there by absolute path."""
    folder = tmp_path / "shims"
    folder.mkdir()
    major = cluster.bindir.parent.name
    (folder / "pg" / major / "bin").mkdir(parents=True)
    for tool in SHIMMED:
        if tool in LIBPQ:
            write_shim(folder / "pg" / major / "bin" / tool, str(cluster.bindir / tool))
            continue
        real = shutil.which(tool)
        assert real, f"{tool} is installed by scripts/bootstrap"
        write_shim(folder / tool, real)
    return folder


def marker(name: str) -> str:
    return f"mark-{name.lower().replace('_', '-')}-{uuid.uuid4().hex[:10]}"


@dataclass
class Seen:
    """What one descendant process was seen with."""

    pid: int
    argvs: list[list[str]] = field(default_factory=list)
    environs: list[dict[str, str]] = field(default_factory=list)

    @property
    def tool(self) -> str | None:
        for argv in reversed(self.argvs):  # the newest: after the shim (or setpriv) exec'd
            for arg in argv[:6]:
                # pg_dumpall checks its pg_dump with `sh -c '"/usr/.../pg_dump" -V'`: that shell
                # is pg_dumpall's own child, and holds what pg_dumpall holds.
                for word in arg.replace('"', " ").split() or [arg]:
                    if os.path.basename(word) in LIBPQ | OTHERS:
                        return os.path.basename(word)
        return None


def _read(pid: int, what: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes()
    except OSError:
        return None


def _children_of(pids: set[int]) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read(int(entry.name), "stat")
            if stat and int(stat.rsplit(b")", 1)[1].split()[1]) in pids:
                found.add(int(entry.name))
    return found


def watch(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, list[Seen]]:
    """Run ``backupd args`` and read every descendant's argv and environment every ~20 ms."""
    proc = subprocess.Popen([sys.executable, "-m", "backupd", *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    own_argv = _read(proc.pid, "cmdline")
    seen: dict[int, Seen] = {}

    def poll() -> None:
        while proc.poll() is None:
            family, frontier = set(), {proc.pid}
            while frontier:
                frontier = _children_of(frontier) - family
                family |= frontier
            for pid in family:
                argv, environ = _read(pid, "cmdline"), _read(pid, "environ")
                if not argv or argv == own_argv or environ is None:
                    continue  # forked, not yet exec'd: still backupd itself
                if argv == SHIM_SLEEP:
                    continue  # the shim's own pause: it has the environment of the tool it wraps
                entry = seen.setdefault(pid, Seen(pid))
                entry.argvs.append(argv.decode("utf-8", "replace").split("\0"))
                entry.environs.append(dict(item.split("=", 1) for item in
                                           environ.decode("utf-8", "replace").split("\0") if "=" in item))
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        poller.join(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), list(seen.values())


def assert_no_leak(children: list[Seen], secrets: dict[str, str], password: str) -> None:
    for child in children:
        for argv in child.argvs:
            leaked = [name for name, value in secrets.items() if any(value in arg for arg in argv)]
            assert not leaked, f"{child.tool} {argv[:3]} has {leaked} in its arguments"
        for environ in child.environs:
            holding = {key for key, value in environ.items()
                       if any(secret in value or secret in key for secret in secrets.values())}
            if child.tool in LIBPQ:
                assert holding <= {"PGPASSWORD"}, f"{child.tool} got secrets {sorted(holding)}"
                assert environ.get("PGPASSWORD", password) == password, f"{child.tool} got another password"
            else:
                assert not holding, f"{child.tool or child.argvs[-1][:2]} got secrets {sorted(holding)}"


def test_each_child_gets_only_the_secrets_it_needs(cluster, env, backup_dir, tmp_path, shims, s3, sshd):
    identity_file = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(identity_file)], check=True, capture_output=True)
    identity = "\n".join(line for line in identity_file.read_text().splitlines() if not line.startswith("#"))
    recipient = subprocess.run(["age-keygen", "-y", str(identity_file)], check=True, capture_output=True,
                               text=True).stdout.strip()
    token_file = tmp_path / "http-token"
    token_file.write_text(marker("HTTP_AUTH_TOKEN"))
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    secrets = {
        "DB_PASSWORD": cluster.password, "PGPASSWORD": marker("PGPASSWORD"),
        "VERIFY_DB_PASSWORD": marker("VERIFY_DB_PASSWORD"), "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SESSION_TOKEN": marker("AWS_SESSION_TOKEN"),
        "SMTP_PASS": marker("SMTP_PASS"), "HTTP_AUTH_TOKEN_FILE": str(token_file),
        "NOTIFY_WEBHOOK_URL": f"http://127.0.0.1:9/{marker('NOTIFY_WEBHOOK_URL')}",
        "BACKUP_ENCRYPTION_IDENTITY": identity, "MY_APP_SECRET": marker("MY_APP_SECRET"),
        "DATABASE_URL": f"postgres://app:{marker('URL_PASSWORD')}@db.example/app",
    }
    watched = {**secrets, "http token": token_file.read_text(), "identity key": identity.split()[-1]}
    full = {"PATH": f"{shims}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            **env, **secrets, "DB_NAME": DB, "BACKUP_ENCRYPTION_RECIPIENTS": recipient,
            "PG_BINDIR": str(shims / "pg"),
            "AWS_ENDPOINT_URL": s3.endpoint, "AWS_REGION": "us-east-1"}

    backup, during_backup = watch(full, "backup")
    assert backup.returncode == 0, backup.stderr
    backup_id = backup.stdout.split()[0]
    restore, during_restore = watch(full, "restore", backup_id, "--into", "child_secrets_restored")
    assert restore.returncode == 0, restore.stderr
    to_s3, during_s3 = watch({**full, "REPLICATION_TARGETS": f"s3://{bucket}/offsite"}, "replicate")
    assert to_s3.returncode == 0, to_s3.stdout + to_s3.stderr
    over_ssh, during_ssh = watch({**full, **sshd.env(tmp_path / "over ssh")}, "replicate")
    assert over_ssh.returncode == 0, over_ssh.stdout + over_ssh.stderr

    for children in (during_backup, during_restore, during_s3, during_ssh):
        assert_no_leak(children, watched, cluster.password)
    kinds = lambda children: {c.tool for c in children}  # noqa: E731
    assert {"pg_dump", "pg_dumpall", "zstd", "age", "tee"} <= kinds(during_backup), kinds(during_backup)
    assert {"age", "zstd", "pg_restore"} <= kinds(during_restore), kinds(during_restore)
    assert {"rsync", "ssh"} <= kinds(during_ssh), kinds(during_ssh)
    for children, tool in ((during_backup, "pg_dump"), (during_backup, "pg_dumpall"), (during_restore, "pg_restore")):
        assert any(c.tool == tool and e.get("PGPASSWORD") == cluster.password  # the ones that connect have it
                   for c in children for e in c.environs), f"{tool} never had the database password"
    assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) >= 2  # S3 ran, inside backupd
    with cluster.connect() as admin:
        admin.execute('DROP DATABASE IF EXISTS "child_secrets_restored" WITH (FORCE)')
