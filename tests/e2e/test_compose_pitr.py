"""Point-in-time recovery end to end, with the real compose stack: what docs/pitr.md tells a
compose user to do, step by step ("What the server needs", then the runbook "bring a
database back to one second before a mistake"), with the project's compose.yaml and
compose.backup.yaml and deploy/ci/compose.ci.yaml on top (host networking, images built
locally from a debootstrap base, as in test_compose.py).

One suite only (trixie, PostgreSQL 17): its base image is the one test_compose.py builds, and
a postgres:17 volume is mounted at /var/lib/postgresql/data, which is also PGDATA."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.conftest import REPO
from tests.e2e.test_compose import project

SUITE, MAJOR = "trixie", 17
DATA = "/var/lib/postgresql/data"  # where the db service mounts db-data, and PGDATA (postgres:17 and older)


@dataclass
class Stack:
    compose: Callable[..., subprocess.CompletedProcess]
    password: str
    port: int

    def connect(self, database: str = "shop") -> psycopg.Connection:
        """The app's connection: over TCP, as the app would."""
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.password,
                               dbname=database, autocommit=True, connect_timeout=5)

    def pitr_status(self) -> dict:
        """`dc exec backup backupd pitr status --json`, as docs/pitr.md shows it."""
        result = self.compose("exec", "-T", "backup", "backupd", "pitr", "status", "--json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else {}

    def logs(self, *services: str) -> str:
        return self.compose("logs", "--no-color", *services, check=False, timeout=60).stdout


def wait_for(what: str, probe: Callable[[], object], timeout: float, stack: Stack | None = None,
             interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = probe()
        except (psycopg.Error, OSError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            detail = stack.logs() if stack else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


PAGE = REPO / "docs" / "pitr.md"  # the runbook this test follows
RUNBOOK = " ".join(PAGE.read_text(encoding="utf-8").replace("\\\n", " ").split())
EXAMPLE_TIME = "2026-11-29T14:03:00Z"  # the noted time of the runbook in docs/pitr.md


def runbook(command: str, time_: str | None = None) -> list[str]:
    """A `dc ...` command exactly as docs/pitr.md writes it (so this test follows the runbook
    as it stands), as arguments for the stack's compose: `exec` gets -T (no terminal here),
    and the runbook's example time becomes ``time_``."""
    assert " ".join(command.split()) in RUNBOOK, f"docs/pitr.md no longer says: {command}"
    args = shlex.split(command)
    assert args[0] == "dc", command
    args = args[1:]
    if args[0] == "exec":
        args.insert(1, "-T")
    if time_ is not None:
        assert EXAMPLE_TIME in args, command
        args = [time_ if arg == EXAMPLE_TIME else arg for arg in args]
    return args


def parse_utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def pitr_stack(tmp_path_factory):
    """The project, copied, with PITR_ENABLED=true in .env; nothing started yet (the test
    starts the database first, as a user turning PITR on for a running stack)."""
    compose, password, port = project(tmp_path_factory, SUITE, MAJOR, "PITR_ENABLED=true\nLOG_FORMAT=json\n",
                                      "e2e-pitr")
    try:
        yield Stack(compose, password, port)
    finally:
        compose("down", "-v", "--timeout", "30", check=False, timeout=300)


def test_the_runbook_brings_a_database_back_to_one_second_before_a_mistake(pitr_stack):
    stack = pitr_stack
    compose = stack.compose
    phases: dict[str, float] = {}
    began = time.monotonic()

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - began, 1)

    # --- What the server needs --------------------------------------------------------------
    up = compose("up", "-d", "--build", "--wait", "db", timeout=1200, check=False)
    assert up.returncode == 0, f"up db failed:\n{up.stdout}\n{up.stderr}\n{stack.logs()}"
    began = time.monotonic()
    phase("db up")
    # CI only: initdb's pg_hba.conf allows replication from 127.0.0.1, which is where the sidecar
    # comes from with host networking. Those lines go, so that, as with the official image seen
    # from a sidecar on the compose network, only the documented line lets the stream in.
    compose("exec", "-T", "--user", "postgres", "db", "sed", "-i", r"/^host[[:space:]]\+replication/d",
            f"{DATA}/pg_hba.conf")
    compose("exec", "-T", "db", "psql", "-U", "postgres", "-c", "SELECT pg_reload_conf()")
    identify = ["exec", "-T", "db", "psql", "-U", "postgres", "-h", "127.0.0.1",
                "dbname=postgres replication=true", "-c", "IDENTIFY_SYSTEM"]
    refused = wait_for("replication from 127.0.0.1 to be refused",
                       lambda: (r := compose(*identify, check=False)).returncode != 0 and r, 10, stack)
    assert "no pg_hba.conf entry for replication connection" in refused.stderr, refused.stderr
    # The two commands of docs/pitr.md.
    compose(*runbook("""dc exec db sh -c 'echo "host replication postgres samenet scram-sha-256" >> """
                    """"$PGDATA/pg_hba.conf"'"""))
    compose(*runbook("dc exec db psql -U postgres -c 'SELECT pg_reload_conf()'"))
    wait_for("the documented replication line to let the stream in",
             lambda: compose(*identify, check=False).returncode == 0, 10, stack)
    rules = compose("exec", "-T", "db", "psql", "-U", "postgres", "-Atc",
                    "SELECT count(*) FILTER (WHERE error IS NOT NULL) || ' ' || "
                    "count(*) FILTER (WHERE 'replication' = ANY(database) AND 'samenet' = address) "
                    "FROM pg_hba_file_rules").stdout.split()
    assert rules == ["0", "1"], rules

    # --- The whole stack with PITR_ENABLED=true, until there is a recovery window ----------
    up = compose("up", "-d", "--build", "--wait", timeout=1200, check=False)
    assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}\n{stack.logs()}"
    phase("stack up")
    first = wait_for("a PITR recovery window", lambda: stack.pitr_status().get("window"), 90, stack)
    phase("first window")

    # --- The app's data, a noted time, the mistake --------------------------------------------
    with stack.connect() as app:
        app.execute("CREATE TABLE orders (n int PRIMARY KEY)")
        for n in range(1, 6):  # each its own transaction
            app.execute("INSERT INTO orders VALUES (%s)", (n,))
        committed = datetime.now(UTC)
        noted = (committed + timedelta(seconds=2)).replace(microsecond=0)  # 1 to 2 s after the last commit
        time.sleep(max(0.0, (noted - datetime.now(UTC)).total_seconds()) + 1.1)
        for n in range(6, 9):  # committed after the noted time: the restore must not bring them back
            app.execute("INSERT INTO orders VALUES (%s)", (n,))
        app.execute("DROP TABLE orders")  # the mistake
        mistake = datetime.now(UTC)
    assert parse_utc(first["start"]) <= noted, (first, noted)
    noted_text = noted.strftime("%Y-%m-%dT%H:%M:%SZ")

    # Wait until the archive holds the WAL past the mistake.
    def window_past_the_mistake():
        window = stack.pitr_status().get("window")
        return window if window and parse_utc(window["end"]) > mistake else None
    window = wait_for("the recovery window to pass the mistake", window_past_the_mistake, 60, stack)
    assert parse_utc(window["start"]) <= noted < parse_utc(window["end"]), (window, noted_text)
    phase("window past the mistake")

    # --- Runbook step 2: the noted time is inside the recovery window -------------------------
    status = compose(*runbook("dc exec backup backupd pitr status")).stdout
    assert f"recovery window: {window['start']} to " in status, status

    # --- Step 3: stop the app, backupd and the database ---------------------------------------
    compose(*runbook("dc stop app backup db"), timeout=180)
    assert not compose("ps", "--status", "running", "--services").stdout.split()
    phase("stopped")

    # --- Step 4: build the data directory in the database's volume ----------------------------
    restored = compose(*runbook("dc run --rm --no-deps --user root -v db-data:/var/lib/postgresql/data "
                               f"backup pitr restore --time '{EXAMPLE_TIME}' --to /var/lib/postgresql/data --yes",
                               noted_text), timeout=300)
    assert f"{DATA} holds base backup {window['base']}" in restored.stdout, restored.stdout
    assert f"recovers to {noted.isoformat(sep=' ')}, then promotes" in restored.stdout, restored.stdout
    assert f"the folder's old content is in {DATA}/backupd-replaced-" in restored.stdout, restored.stdout
    phase("restore built")

    # --- Step 5: start the database and watch it recover --------------------------------------
    compose(*runbook("dc start db"), timeout=120)

    def promoted():
        with stack.connect() as conn:
            return conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()[0]
    wait_for("the restored server to recover and promote", promoted, 60, stack)
    db_logs = stack.logs("db")
    for line in ("recovery stopping before commit", "archive recovery complete",
                 "database system is ready to accept connections"):  # what the runbook says to watch for
        assert line in RUNBOOK, line
        assert line in db_logs, f"{line!r} not in the db logs:\n{db_logs}"
    phase("db recovered")

    # --- Step 6: check the data: exactly the rows committed before the noted time --------------
    count = compose(*runbook("dc exec db psql -U postgres -d shop -c 'SELECT count(*) FROM orders'")).stdout
    assert count.split()[2] == "5", count
    with stack.connect() as conn:
        assert [n for (n,) in conn.execute("SELECT n FROM orders ORDER BY n")] == [1, 2, 3, 4, 5]

    # --- Step 7: remove what the restore left, start the rest ---------------------------------
    # All of it belongs to the server's user: the extracted files keep the uid the server's files
    # had (here Debian's postgres, uid 100, not the backup image's 999), and the folder with the
    # old content is given to the data directory's owner.
    left = compose("exec", "-T", "db", "sh", "-c", 'stat -c "%U %n" "$PGDATA" "$PGDATA"/PG_VERSION '
                   '"$PGDATA"/backupd-replaced-* "$PGDATA"/backupd-replaced-*/PG_VERSION "$PGDATA"/backupd_wal')
    owners = [line.split()[0] for line in left.stdout.splitlines()]
    assert owners == ["postgres"] * 5, left.stdout
    compose(*runbook("""dc exec db sh -c 'rm -rf "$PGDATA"/backupd-replaced-* "$PGDATA".backupd-replaced-* """
                    """"$PGDATA"/backupd_wal'"""))
    compose(*runbook("dc start backup app"), timeout=120)

    # backupd finds the slot missing (a base backup has no slots): a gap, a new slot, a new base
    # backup, and a new window that starts after the restore.
    def new_window():
        report = stack.pitr_status()
        window = report.get("window")
        return report if window and report.get("gaps") and parse_utc(window["start"]) > mistake else None
    report = wait_for("a new recovery window after the restore", new_window, 120, stack)
    assert report["window"]["base"] != window["base"], report
    assert any("was missing" in gap["reason"] for gap in report["gaps"]), report["gaps"]

    container = compose("ps", "-q", "backup").stdout.strip()

    def healthy():
        state = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}", container],
                               capture_output=True, text=True).stdout.strip()
        return state == "healthy"
    wait_for("the backup service to be healthy again", healthy, 60, stack)
    health = compose("exec", "-T", "backup", "backupd", "health")
    assert json.loads(health.stdout)["status"] == "ok", health.stdout
    with stack.connect() as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 5
    phase("backup healthy again")
    print("phases (s since the database was up):", phases, "\ngaps:", report["gaps"])
