"""Steps the PITR tests share: rows committed at known times, a running daemon's window."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.integration.daemon_helpers import RunningDaemon


def make_shop(cluster) -> None:
    with cluster.connect() as admin:
        admin.execute("CREATE DATABASE shop")
    with cluster.connect("shop") as conn:
        conn.execute("CREATE TABLE orders (n int)")


def commit(cluster, *values: int) -> datetime:
    """Each value in a transaction of its own; returns the time after the last commit."""
    with cluster.connect("shop") as conn:
        for value in values:
            conn.execute("INSERT INTO orders (n) VALUES (%s)", (value,))
    return datetime.now(UTC)


def rows(cluster) -> list[int]:
    with cluster.connect("shop") as conn:
        return [n for (n,) in conn.execute("SELECT n FROM orders ORDER BY n")]


def pitr_view(daemon: RunningDaemon) -> dict:
    return daemon.json("/status")[1].get("pitr") or {}


def wait_for_window(daemon: RunningDaemon, reaching: datetime | None = None, timeout: float = 90) -> dict:
    """The recovery window, once it exists (and reaches ``reaching``)."""
    def ready():
        window = pitr_view(daemon).get("window")
        if window and (reaching is None or datetime.fromisoformat(window["end"]) >= reaching):
            return window
        return None
    return daemon.wait_until(ready, timeout, "the recovery window")


def age_keys(folder: Path) -> tuple[str, str]:
    """(identity, recipient) of a new age key."""
    subprocess.run(["age-keygen", "-o", str(folder / "age.txt")], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(folder / "age.txt")], check=True, capture_output=True,
                               text=True).stdout.strip()
    return (folder / "age.txt").read_text(), recipient


def write_wal(cluster, megabytes: int) -> None:
    """Enough WAL to fill ``megabytes`` (whole segments switch)."""
    with cluster.connect("shop") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (payload text)")
        for _ in range(megabytes):
            conn.execute("INSERT INTO filler SELECT repeat(md5(random()::text), 32) FROM generate_series(1, 1000)")


def settle(seconds: float = 1.5) -> None:
    time.sleep(seconds)
