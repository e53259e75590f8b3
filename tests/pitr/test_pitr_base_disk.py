"""A disk that fills during a base backup, for real (a small tmpfs): the command fails
clearly, nothing half-written is left or listed as a base backup (neither the tar, nor the
WAL kept aside to find where it is consistent), the failure is recorded for /healthz, and
the next try, once there is room, succeeds."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import Backupd
from tests.integration.helpers import small_disk


@pytest.mark.parametrize("pitr_cluster", [17], indirect=True)
def test_a_disk_that_fills_during_a_base_backup_leaves_no_base_and_the_next_try_succeeds(pitr_env, tmp_path):
    with small_disk(tmp_path / "disk", "48m") as disk:
        backupd = Backupd({**pitr_env, "BACKUP_DIR": str(disk)})
        filler = disk / "filler"
        with open(filler, "wb") as out:  # all but ~6 MB taken: the WAL kept aside alone needs 16 MB
            out.write(os.urandom(42 << 20))
        failed = backupd("pitr", "base")
        assert failed.returncode == 1, (failed.returncode, failed.stderr)
        assert "No space left" in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
        status = json.loads(backupd.ok("pitr", "status", "--json").stdout)
        assert status["base_backups"] == [] and status["window"] is None
        assert "base" in status["failures"], status["failures"]
        ours = ("filler", "cluster.json", ".base.lock")
        leftovers = [p.relative_to(disk).as_posix() for p in disk.rglob("*")
                     if p.is_file() and p.name not in ours and not p.name.startswith(".last-")]
        assert leftovers == [], leftovers

        filler.unlink()
        backupd.ok("pitr", "base")
        status = json.loads(backupd.ok("pitr", "status", "--json").stdout)
        assert len(status["base_backups"]) == 1 and "base" not in status["failures"]
