"""One database back to a moment, beside the live one: a table dropped in database A while
database B keeps taking writes; ``pitr restore --time <before the drop> --database A``
brings A's rows back into the running server (``--into A_back``, or ``--over A`` by the
safe swap), from encrypted archives, while the server never stops, B's writer never fails
and A is left alone. A signal mid-way leaves no private server and no scratch folder; a
disk without room is refused with the figures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.daemon_helpers import RunningDaemon
from tests.pitr.helpers import age_keys, wait_for_window

ONE_RUN = 240  # seconds: a rebuild, a private server, a dump and a restore of a small cluster


def _drop_after_commits(cluster, env: dict[str, str], archived: Path | None = None) -> datetime:
    """A holds orders 1..3 and a table that stays; the daemon keeps the WAL; orders is
    dropped; returns a moment before the drop (and after the commits). ``archived``: the
    BACKUP_DIR whose archived (complete) WAL must reach the drop, for a replication target."""
    with cluster.connect() as admin:
        admin.execute("CREATE ROLE clerk LOGIN")
        admin.execute("CREATE DATABASE a OWNER clerk")
        admin.execute("CREATE DATABASE b")
    with cluster.connect("b") as conn:
        conn.execute("CREATE TABLE log (n serial, at timestamptz DEFAULT now())")
    daemon = RunningDaemon(env)
    try:
        wait_for_window(daemon)
        with cluster.connect("a") as conn:
            conn.execute("CREATE TABLE orders (n int)")
            conn.execute("ALTER TABLE orders OWNER TO clerk")
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("CREATE ROLE auditor")
            conn.execute("GRANT SELECT ON orders TO auditor")
            for n in (1, 2, 3):
                conn.execute("INSERT INTO orders VALUES (%s)", (n,))
        time.sleep(1.1)
        before_drop = datetime.now(UTC)
        time.sleep(1.1)
        with cluster.connect("a") as conn:
            conn.execute("DROP TABLE orders")
            conn.execute("INSERT INTO kept VALUES (42)")  # after the drop: A's own later write
            conn.execute("DROP ROLE auditor")  # gone since: the restore creates it again
            conn.execute("SELECT pg_switch_wal()")  # the segment completes: archived, then replicated
        wait_for_window(daemon, datetime.now(UTC))
        if archived is not None:
            daemon.wait_until(lambda: _archived_after(archived, before_drop), 60, "the drop's WAL archived")
    finally:
        assert daemon.stop() == 0, daemon.stderr
    return before_drop


def _archived_after(backup_dir: Path, moment: datetime) -> bool:
    for record in backup_dir.glob("_pitr/*/wal/*.json"):
        last = json.loads(record.read_text()).get("last_commit")
        if last and datetime.fromisoformat(last) > moment:
            return True
    return False


class _Writer(threading.Thread):
    """Writes to database B every few milliseconds; every error is kept."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster, self.errors, self.writes = cluster, [], 0
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            with self.cluster.connect("b") as conn:
                while not self.stopping.is_set():
                    conn.execute("INSERT INTO log DEFAULT VALUES")
                    self.writes += 1
                    time.sleep(0.01)
        except Exception as err:  # noqa: BLE001 - the test asserts there is none
            self.errors.append(repr(err))

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def _server_started(cluster) -> datetime:
    with cluster.connect() as conn:
        return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def _rows(cluster, database: str, table: str) -> list[int]:
    with cluster.connect(database) as conn:
        return [n for (n,) in conn.execute(f"SELECT n FROM {table} ORDER BY n")]


def _databases(cluster) -> set[str]:
    with cluster.connect() as conn:
        return {name for (name,) in conn.execute("SELECT datname FROM pg_database")}


def _private_servers(folder: Path) -> list[int]:
    """Pids of postgres processes whose command line names a folder inside ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "backupd-pitr-database" in cmdline and str(folder) in cmdline:
            found.append(int(entry.name))
    return found


def test_a_dropped_table_comes_back_beside_the_live_database_then_over_it(pitr_cluster, pitr_env, pitr_backupd,
                                                                         data_home, tmp_path):
    identity, recipient = age_keys(tmp_path)
    env = {**pitr_env, "BACKUP_ENCRYPTION_RECIPIENTS": recipient, "BACKUP_ENCRYPTION_IDENTITY": identity,
           "TMPDIR": str(data_home)}
    before_drop = _drop_after_commits(pitr_cluster, env)
    started = _server_started(pitr_cluster)
    writer = _Writer(pitr_cluster)
    writer.start()
    with pitr_cluster.connect("a") as session_in_a:  # A's own session: never ended by --into
        result = pitr_backupd.ok("pitr", "restore", "--time", before_drop.isoformat(), "--database", "a",
                                 "--into", "a_back", extra_env=env, timeout=ONE_RUN)
        assert session_in_a.execute("SELECT n FROM kept").fetchall() == [(42,)]
    assert "into a_back" in result.stdout and before_drop.strftime("%Y-%m-%dT%H:%M:%S") in result.stdout, \
        result.stdout
    assert "roles created: auditor" in result.stdout, result.stdout
    assert _rows(pitr_cluster, "a_back", "orders") == [1, 2, 3]
    with pitr_cluster.connect("a_back") as conn:
        assert conn.execute("SELECT has_table_privilege('auditor', 'orders', 'SELECT')").fetchone()[0]
    assert _rows(pitr_cluster, "a_back", "kept") == []  # as of the moment: the later write is not there
    with pitr_cluster.connect() as conn:
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'a_back'"
                            ).fetchone()[0] == "clerk"
    with pitr_cluster.connect("a") as conn:  # A itself untouched
        assert conn.execute("SELECT to_regclass('orders')").fetchone()[0] is None
    assert list(data_home.iterdir()) == []  # the scratch folder is gone
    assert _private_servers(data_home) == []

    # --over replaces A by the safe swap, and only with --yes.
    refused = pitr_backupd("pitr", "restore", "--time", before_drop.isoformat(), "--database", "a", "--over", "a",
                           extra_env=env, timeout=ONE_RUN)
    assert refused.returncode == 2 and "--yes" in refused.stderr, refused.stderr
    for forbidden in ("postgres", "template1"):
        refused = pitr_backupd("pitr", "restore", "--time", before_drop.isoformat(), "--database", "a", "--over",
                               forbidden, "--yes", extra_env=env, timeout=ONE_RUN)
        assert refused.returncode == 2 and "never replaces" in refused.stderr, refused.stderr
    result = pitr_backupd.ok("pitr", "restore", "--time", before_drop.isoformat(), "--database", "a", "--over", "a",
                             "--yes", extra_env=env, timeout=ONE_RUN)
    assert "kept as a__before_restore_" in result.stdout, result.stdout
    assert _rows(pitr_cluster, "a", "orders") == [1, 2, 3]
    writer.stop()
    assert writer.errors == [] and writer.writes > 50, (writer.errors, writer.writes)
    assert _server_started(pitr_cluster) == started  # the live server never stopped
    assert list(data_home.iterdir()) == []


def test_no_room_is_refused_with_figures_and_a_signal_leaves_nothing_behind(pitr_cluster, pitr_env, pitr_backupd,
                                                                           data_home, tmp_path):
    env = {**pitr_env, "TMPDIR": str(data_home)}
    before_drop = _drop_after_commits(pitr_cluster, env)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(small)], check=True)
    try:
        refused = pitr_backupd("pitr", "restore", "--time", before_drop.isoformat(), "--database", "a", "--into",
                               "a_back", extra_env={**env, "TMPDIR": str(small)}, timeout=ONE_RUN)
        assert refused.returncode == 2, refused.stderr
        assert "not enough room" in refused.stderr and "bytes are needed" in refused.stderr, refused.stderr
        assert "are free" in refused.stderr and "WAL" in refused.stderr, refused.stderr
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)

    for signum in (signal.SIGTERM, signal.SIGINT):
        command = subprocess.Popen(
            pitr_backupd.argv("pitr", "restore", "--time", before_drop.isoformat(), "--database", "a", "--into",
                              "a_back"),
            env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        deadline = time.monotonic() + ONE_RUN
        while not _private_servers(data_home) and command.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert command.poll() is None, f"it ended before its private server was seen: {command.communicate()}"
        command.send_signal(signum)
        _, stderr = command.communicate(timeout=120)
        assert command.returncode == 128 + signum, stderr
        assert "private server was stopped" in stderr, stderr
        assert _private_servers(data_home) == []
        assert list(data_home.iterdir()) == []
        assert "a_back" not in _databases(pitr_cluster)

    # A database that did not exist at that moment, and a moment outside the window: refused,
    # with nothing left behind.
    for time_text, database, says in ((before_drop.isoformat(), "nosuch", "did not exist"),
                                      ("2001-01-01T00:00:00Z", "a", "before the recovery window")):
        refused = pitr_backupd("pitr", "restore", "--time", time_text, "--database", database, "--into", "a_back",
                               extra_env=env, timeout=ONE_RUN)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
        assert _private_servers(data_home) == [] and list(data_home.iterdir()) == []


def test_from_a_replication_target_alone(pitr_cluster, pitr_env, pitr_backupd, s3, backup_dir, data_home):
    """BACKUP_DIR is lost: the archive on the target is fetched for the rebuild."""
    bucket = f"onedb-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    env = {**pitr_env, **s3.env(bucket), "REPLICATION_INTERVAL": "5s", "TMPDIR": str(data_home)}
    before_drop = _drop_after_commits(pitr_cluster, env, archived=backup_dir)
    pitr_backupd.ok("replicate", extra_env=env)
    shutil.rmtree(backup_dir)
    pitr_backupd.ok("pitr", "restore", "--time", before_drop.isoformat(), "--database", "a", "--into", "a_back",
                    extra_env=env, timeout=ONE_RUN)
    assert _rows(pitr_cluster, "a_back", "orders") == [1, 2, 3]
    assert list(data_home.iterdir()) == []


@pytest.mark.parametrize("args, says", [
    (["--database", "a"], "--into NEWDB"),
    (["--database", "a", "--into", "x", "--over", "a"], "give one of them"),
    (["--database", "a", "--into", "x", "--to", "/srv/x"], "give one of them"),
    (["--database", "", "--into", "x"], "empty"),
    ([], "--to DIR"),
])
def test_a_command_that_says_too_little_or_too_much_is_refused(backupd, args, says):
    result = backupd("pitr", "restore", "--time", "latest", *args)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_live_server_unreachable_is_a_clear_failure(backupd):
    """Before anything is built: the destination is checked on the live server first."""
    result = backupd("pitr", "restore", "--time", "latest", "--database", "a", "--into", "x",
                          extra_env={"DB_PORT": "1", "DB_WAIT_TIMEOUT": "1s"})
    assert result.returncode == 1 and "not reachable" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
