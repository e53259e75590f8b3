from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from psycopg import sql

from tests.conftest import REPO
from tests.pg import Cluster


def make_database(cluster: Cluster, name: str, rows: int = 1000, payload: int = 32) -> None:
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with cluster.connect(name) as conn:
        conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, payload text)")
        conn.execute("INSERT INTO items (payload) SELECT string_agg(md5(random()::text || g || i), '') "
                     "FROM generate_series(1, %s) g, generate_series(1, %s) i GROUP BY g", (rows, payload // 32 or 1))


@contextmanager
def table_locked(cluster: Cluster, dbname: str, table: str = "items"):
    """Holds an ACCESS EXCLUSIVE lock, so pg_dump blocks on it until released."""
    conn = cluster.connect(dbname, autocommit=False)
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table)))
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


@contextmanager
def small_disk(folder: Path, size: str, mode: str = "0700"):
    """A tmpfs of ``size`` mounted on a new ``folder``: a disk that fills up for real."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def start_backupd(env: dict[str, str], *args: str) -> subprocess.Popen:
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", **env}
    return subprocess.Popen([sys.executable, "-m", "backupd", *args], env=full, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            children.append(int(entry.name))
    result = list(children)
    for child in children:
        result += descendants(child)
    return result


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def wait_for_child(parent: subprocess.Popen, name: str, timeout: float = 30, with_arg: str = "--format") -> int:
    """The pid of ``parent``'s descendant ``name`` whose argv has an argument starting with ``with_arg``
    (so ``pg_dump --version`` checks are passed over)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in descendants(parent.pid):
            argv = cmdline(pid)
            if argv and Path(argv[0]).name == name and any(a.startswith(with_arg) for a in argv):
                return pid
        if parent.poll() is not None:
            raise AssertionError(f"backupd exited before {name} started: {parent.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"{name} did not start within {timeout}s")


def flip_a_byte(path: str | Path) -> None:
    """Damage a stored file the way a failing disk would: one bit in its middle, same size."""
    size = Path(path).stat().st_size
    with open(path, "r+b") as stored:
        stored.seek(size // 2)
        byte = stored.read(1)
        stored.seek(size // 2)
        stored.write(bytes([byte[0] ^ 0x01]))


def leftovers(backup_dir: Path) -> list[Path]:
    """Anything that could look like a backup but is not one: partials, staging folders."""
    if not backup_dir.exists():
        return []
    return [p for p in backup_dir.rglob("*") if p.name.endswith((".partial", ".staging", ".pending"))]


def run_at_terminal(env: dict[str, str], args: list[str], answer: bytes | None = None,
                    prompt: bytes = b"Type the database name to confirm") -> tuple[int, str]:
    """Run backupd under a pseudo-terminal, as a person at a shell would; type ``answer``
    when ``prompt`` appears. Returns (exit code, everything the terminal showed)."""
    import pty
    import select

    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "backupd", *args], cwd=REPO, stdin=secondary, stdout=secondary,
                            stderr=secondary, env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env})
    os.close(secondary)
    output, answered = b"", answer is None
    while select.select([primary], [], [], 60)[0]:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        output += chunk
        if not answered and prompt in output:
            os.write(primary, answer)
            answered = True
    os.close(primary)
    return proc.wait(timeout=60), output.decode("utf-8", "replace")
