"""One PITR repository for the adversarial PITR tests: a cluster, two base backups with
committed rows between and after them, all the WAL archived. Built once per module; each
test works on its own copy of BACKUP_DIR, so damage done by one never reaches another."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import Backupd
from tests.integration.daemon_helpers import RunningDaemon
from tests.pg import MATRIX, Cluster, matrix_bindir, remove_cluster, start_cluster
from tests.pitr.helpers import commit, make_shop, wait_for_window


@dataclass
class Repository:
    cluster: Cluster
    backup_dir: Path
    env: dict[str, str]
    after_last_commit: datetime

    def copy(self, into: Path) -> tuple[Backupd, Path]:
        """A backupd whose BACKUP_DIR is a private copy of this repository."""
        backup_dir = into / "backups"
        shutil.copytree(self.backup_dir, backup_dir, symlinks=True)
        return Backupd({**self.env, "BACKUP_DIR": str(backup_dir)}), backup_dir


def build(folder: Path):
    """Yields the repository; the cluster goes afterwards."""
    cluster = start_cluster(matrix_bindir(17))
    try:
        env = {**cluster.env(), "BACKUP_DIR": str(folder / "backups"), "LOG_FORMAT": "json",
               "DB_WAIT_TIMEOUT": "5s", "PG_BINDIR": str(MATRIX), "PITR_ENABLED": "true", "PITR_MAX_LAG": "10s"}
        make_shop(cluster)
        daemon = RunningDaemon(env)
        try:
            # Each row after the moment its base backup is consistent (to the second): a
            # restore to the window's start has no rows, and row 2 is in the WAL only.
            _after(wait_for_window(daemon)["start"])
            commit(cluster, 1)
            Backupd(env).ok("pitr", "base")  # the newer base backup
            _after(wait_for_window(daemon)["end"])
            last = commit(cluster, 2)
            with cluster.connect() as conn:
                conn.execute("SELECT pg_switch_wal()")
            wait_for_window(daemon, last)
        finally:
            assert daemon.stop() == 0, daemon.stderr
        yield Repository(cluster, folder / "backups", env, last)
    finally:
        remove_cluster(cluster)


def _after(moment: str) -> None:
    time.sleep(max(0.0, (datetime.fromisoformat(moment) - datetime.now(UTC)).total_seconds()))
