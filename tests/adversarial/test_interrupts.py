"""Class 6: SIGINT or SIGTERM to a one-shot command stops its children within seconds,
leaves no listed backup that was not finished, and says what really happened."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from backupd import cancel
from backupd.transforms import commit_manifest
from backupd.errors import Aborted
from backupd.repository import Repository, pending_path
from tests.conftest import log_lines
from tests.integration.helpers import (descendants, leftovers, make_database, start_backupd, table_locked,
                                       wait_for_child)

STOP_WITHIN = 10.0  # seconds from the signal to the exit, children included


@pytest.fixture(scope="module")
def big_db(cluster):
    make_database(cluster, "interrupt_big", rows=60000, payload=512)
    return "interrupt_big"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead already
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _interrupt(proc, signum: int) -> tuple[str, str, list[int]]:
    """Send the signal, wait at most STOP_WITHIN; returns stdout, stderr and the children it had."""
    children = descendants(proc.pid)
    assert children, "the command had no child process to stop"
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < STOP_WITHIN, f"took {time.monotonic() - sent:.1f}s to stop"
    assert proc.returncode == 128 + signum, err
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "a child outlived the command"
    return out, err, children


def _said_what_happened(stderr: str, signum: int) -> None:
    lines = log_lines(stderr)
    assert lines[-1]["event"].startswith(("backup interrupted", "restore interrupted", "verify interrupted",
                                          "replicate interrupted"))
    assert signal.Signals(signum).name in lines[-1]["event"]
    assert "cleaned up" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_backup_stops_at_once_and_lists_nothing(cluster, env, backupd, backup_dir, big_db, signum):
    before = backupd.listing()
    with table_locked(cluster, big_db):  # pg_dump waits on the lock: the run would go on for minutes
        proc = start_backupd({**env, "BACKUP_GLOBALS": "false"}, "backup", "--database", big_db)
        wait_for_child(proc, "pg_dump")
        out, err, _ = _interrupt(proc, signum)
    _said_what_happened(err, signum)
    assert out.strip() == ""  # no id printed: nothing finished
    assert backupd.listing() == before
    assert leftovers(backup_dir) == []
    assert "Traceback" not in err


def test_an_interrupted_backup_keeps_what_finished_before_the_signal(cluster, env, backupd, big_db):
    make_database(cluster, "interrupt_small", rows=10)
    with table_locked(cluster, big_db):
        proc = start_backupd({**env, "BACKUP_GLOBALS": "false"}, "backup",
                             "--database", "interrupt_small", "--database", big_db)
        deadline = time.monotonic() + 30
        while not backupd.listing() and time.monotonic() < deadline:  # the small one is done
            time.sleep(0.1)
        wait_for_child(proc, "pg_dump")  # and the big one waits for its lock
        out, err, _ = _interrupt(proc, signal.SIGTERM)
    listed = backupd.listing()
    assert [b["database"] for b in listed] == ["interrupt_small"]
    assert out.split() == [listed[0]["id"]]  # printed: it really finished
    assert listed[0]["status"] == "ok"
    _said_what_happened(err, signal.SIGTERM)


def test_an_interrupted_restore_into_a_new_database_leaves_no_database(cluster, env, backupd, big_db):
    backupd.ok("backup", "--database", big_db)
    proc = start_backupd(env, "restore", "latest", "--database", big_db, "--into", "interrupt_copy")
    wait_for_child(proc, "pg_restore")
    _, err, _ = _interrupt(proc, signal.SIGINT)
    _said_what_happened(err, signal.SIGINT)
    with cluster.connect() as admin:
        names = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
    assert "interrupt_copy" not in names
    assert not [n for n in names if "__restoring_" in n]


def test_an_interrupted_verify_drops_its_scratch_database_and_records_nothing(cluster, env, backupd, big_db):
    backup_id = backupd.ok("backup", "--database", big_db).stdout.split()[0]
    proc = start_backupd(env, "verify", backup_id)
    wait_for_child(proc, "pg_restore")
    _, err, _ = _interrupt(proc, signal.SIGTERM)
    _said_what_happened(err, signal.SIGTERM)
    with cluster.connect() as admin:
        scratch = [r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'backupd_verify_%'")]
    assert scratch == []
    (listed,) = [b for b in backupd.listing() if b["id"] == backup_id]
    assert listed["verified"] is None  # an interrupted check is no failed check


def test_an_interrupted_replication_stops_its_copy_command(env, backupd, big_db, tmp_path):
    backupd.ok("backup", "--database", big_db)
    slow_copy = tmp_path / "slow-copy"
    slow_copy.write_text('#!/bin/sh\nsleep 60\ncp "$1" "$2"\n')
    slow_copy.chmod(slow_copy.stat().st_mode | stat.S_IXUSR)
    target = tmp_path / "offsite"
    target.mkdir()
    custom = {"REPLICATION_ENABLED": "true", "REPLICATION_TYPE": "custom", "REPLICATION_TARGET": str(target),
              "REPLICATION_COMMAND": str(slow_copy)}
    proc = start_backupd({**env, **custom}, "replicate")
    wait_for_child(proc, "sleep", with_arg="60")
    _, err, _ = _interrupt(proc, signal.SIGTERM)
    _said_what_happened(err, signal.SIGTERM)
    assert list(target.rglob("*.json")) == []
    assert all(not b["replicated_to"] for b in backupd.listing())


def test_a_signal_as_the_dump_ends_never_commits_its_manifest(tmp_path):
    """The signal can land between the file's rename and its manifest: the file goes, no manifest."""
    repo = Repository(tmp_path / "backups")
    folder = repo.ensure_folder(repo.folder_for("shop"))
    final = folder / "shop-20261121T020000Z.dump.zst"
    pending_path(final).write_bytes(b"x")  # complete, waiting for its manifest
    manifest = {"id": "shop-20261121T020000Z", "file": final.name, "size_bytes": 1, "sha256": "0" * 64}
    cancel.abort_all("interrupted by SIGTERM")
    try:
        with pytest.raises(Aborted):
            commit_manifest(repo, folder, final, manifest)
    finally:
        cancel.reset()
    assert not final.exists() and not pending_path(final).exists() and repo.backups() == []
    assert not (folder / "shop-20261121T020000Z.json").exists()
    assert json.dumps(manifest)  # untouched input


def test_a_signal_while_rows_are_counted_after_the_dump_stops_at_once_and_keeps_nothing(cluster, env, backupd,
                                                                                         backup_dir):
    """pg_dump is done, the row counts are not (a table waits for a lock): the signal must stop
    the count at once, and the finished file must go with it, never stay without its manifest."""
    make_database(cluster, "interrupt_counts", rows=10)
    with cluster.connect("interrupt_counts") as conn:
        conn.execute("CREATE TABLE aside (id int)")  # counted, but left out of the dump
    before = backupd.listing()
    with table_locked(cluster, "interrupt_counts", "aside"):
        proc = start_backupd({**env, "BACKUP_GLOBALS": "false", "BACKUP_EXTRA_OPTS": "--exclude-table=aside"},
                             "backup", "--database", "interrupt_counts")
        folder = backup_dir / "interrupt_counts"
        deadline = time.monotonic() + 30
        while not list(folder.glob(".*.dump.zst.pending")) and time.monotonic() < deadline:  # the dump is done
            time.sleep(0.05)
        assert list(folder.glob(".*.dump.zst.pending")), "the dump did not finish"
        time.sleep(0.5)  # the count now waits for the lock on "aside"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < STOP_WITHIN, f"took {time.monotonic() - sent:.1f}s to stop"
    assert proc.returncode == 143, err
    _said_what_happened(err, signal.SIGTERM)
    assert "interrupt_counts" in log_lines(err)[-1]["event"]  # named as not finished
    assert out.strip() == ""
    assert backupd.listing() == before
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []  # no file without manifest
    assert leftovers(backup_dir) == []


def test_an_interrupted_in_place_restore_says_the_database_is_gone(cluster, env, backupd):
    """--in-place drops the live database first: the last line must not claim it is as it was."""
    make_database(cluster, "interrupt_in_place", rows=60000, payload=512)
    backupd.ok("backup", "--database", "interrupt_in_place")
    proc = start_backupd(env, "restore", "latest", "--database", "interrupt_in_place", "--yes", "--in-place")
    wait_for_child(proc, "pg_restore")
    _, err, _ = _interrupt(proc, signal.SIGTERM)
    _said_what_happened(err, signal.SIGTERM)
    last = log_lines(err)[-1]["event"]
    with cluster.connect() as admin:
        names = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
    assert "interrupt_in_place" not in names  # half-restored, so dropped
    assert "gone" in last and "as it was" not in last
