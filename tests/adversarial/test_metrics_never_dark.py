"""Class 6: /metrics never goes dark. An unreadable BACKUP_DIR, an unreadable database
folder or a part of the scrape that fails: /metrics still answers 200 with what it can
compute, says what cannot be read (``backupd_repository_readable`` and a gauge per folder),
keeps the series it knew, and counts the part it had to leave out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adversarial.test_failures_show import WITHOUT_ROOT_POWERS
from tests.conftest import REPO
from tests.integration import daemon_helpers
from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import make_database

FIRST, SECOND = "dark_one", "dark_two"


@pytest.fixture(scope="module")
def dark_dbs(cluster):
    for name in (FIRST, SECOND):
        make_database(cluster, name, rows=50)
    return FIRST, SECOND


def start_without_root_powers(env: dict[str, str], *args: str) -> subprocess.Popen:
    """``backupd ARGS`` as root without the capabilities that let root ignore file modes, so
    a folder of mode 000 is as unreadable to it as a folder owned by another user."""
    full = {"PATH": os.environ["PATH"], "HOME": "/tmp", "LANG": "C.UTF-8", **env}
    return subprocess.Popen([*WITHOUT_ROOT_POWERS, sys.executable, "-m", "backupd", *args], env=full, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def powerless(monkeypatch):
    monkeypatch.setattr(daemon_helpers, "start_backupd", start_without_root_powers)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text exposition, None when it is not there."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def scrape_until(daemon: RunningDaemon, predicate, what: str) -> str:
    """/metrics until ``predicate(text)``; every answer on the way must be a 200."""
    def attempt():
        status, text = daemon.get("/metrics")
        assert status == 200, f"/metrics answered {status}: {text}"
        return text if predicate(text) else None
    return daemon.wait_until(attempt, timeout=30, what=what)


def test_an_unreadable_backup_dir_keeps_metrics_answering(env, backupd, backup_dir, dark_dbs, powerless):
    backupd.ok("backup", "--database", FIRST)
    daemon = RunningDaemon(env, DB_NAME=FIRST)
    try:
        text = scrape_until(daemon, lambda t: sample(t, "backupd_backup_last_success_timestamp_seconds",
                                                     database=FIRST), "the first reading")
        known = sample(text, "backupd_backup_last_success_timestamp_seconds", database=FIRST)
        assert sample(text, "backupd_repository_readable") == 1
        os.chmod(backup_dir, 0)
        try:
            text = scrape_until(daemon, lambda t: sample(t, "backupd_repository_readable") == 0,
                                "the repository reported unreadable")
            # What was known stays: the age alert keeps counting from the real newest backup.
            assert sample(text, "backupd_backup_last_success_timestamp_seconds", database=FIRST) == known
            assert sample(text, "backupd_build_info", version=sample_version(text)) == 1
        finally:
            os.chmod(backup_dir, 0o700)
        scrape_until(daemon, lambda t: sample(t, "backupd_repository_readable") == 1, "readable again")
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.stderr


def sample_version(text: str) -> str:
    found = re.search(r'backupd_build_info\{version="([^"]*)"\}', text)
    assert found, text
    return found.group(1)


def test_an_unreadable_database_folder_keeps_its_series_and_is_named(env, backupd, backup_dir, dark_dbs, powerless):
    backupd.ok("backup", "--database", FIRST, "--database", SECOND)
    daemon = RunningDaemon(env, DB_NAME=f"{FIRST},{SECOND}")
    locked = backup_dir / SECOND
    try:
        text = scrape_until(daemon, lambda t: sample(t, "backupd_backup_last_success_timestamp_seconds",
                                                     database=SECOND), "the first reading")
        known = sample(text, "backupd_backup_last_success_timestamp_seconds", database=SECOND)
        os.chmod(locked, 0)
        text = scrape_until(daemon, lambda t: sample(t, "backupd_repository_readable") == 0,
                            "the folder reported unreadable")
        assert sample(text, "backupd_repository_folder_readable", folder=SECOND) == 0
        assert sample(text, "backupd_repository_folder_readable", folder=FIRST) == 1
        assert sample(text, "backupd_backup_last_success_timestamp_seconds", database=SECOND) == known
        assert sample(text, "backupd_backup_last_success_timestamp_seconds", database=FIRST) is not None
        assert sample(text, "backupd_stored_backups", target="local", database=SECOND) == 1
    finally:
        daemon.stop()
    # A daemon started while the folder cannot be read never knew its series: it names the folder.
    daemon = RunningDaemon(env, DB_NAME=f"{FIRST},{SECOND}")
    try:
        text = scrape_until(daemon, lambda t: sample(t, "backupd_repository_readable") == 0, "a fresh reading")
        assert sample(text, "backupd_repository_folder_readable", folder=SECOND) == 0
        assert sample(text, "backupd_backup_last_success_timestamp_seconds", database=FIRST) is not None
    finally:
        os.chmod(locked, 0o700)
        daemon.stop()
    assert "Traceback" not in daemon.stderr


@pytest.mark.parametrize("replacement", ["a link to nowhere", "a file"])
def test_a_database_folder_that_is_no_folder_any_more_keeps_its_series(env, backupd, backup_dir, dark_dbs,
                                                                       replacement):
    """A database's folder on another disk that is not mounted (a dangling link), or a file
    in its place: its backups cannot be read, which is not the same as deleted."""
    backupd.ok("backup", "--database", FIRST, "--database", SECOND)
    daemon = RunningDaemon(env, DB_NAME=f"{FIRST},{SECOND}")
    folder, moved = backup_dir / SECOND, backup_dir.parent / "elsewhere"
    try:
        text = scrape_until(daemon, lambda t: sample(t, "backupd_backup_last_success_timestamp_seconds",
                                                     database=SECOND), "the first reading")
        known = sample(text, "backupd_backup_last_success_timestamp_seconds", database=SECOND)
        folder.rename(moved)
        if replacement == "a file":
            folder.write_text("not a folder\n")
        else:
            folder.symlink_to(backup_dir.parent / "not-mounted")
        text = scrape_until(daemon, lambda t: sample(t, "backupd_repository_readable") == 0,
                            "the folder reported unreadable")
        assert sample(text, "backupd_repository_folder_readable", folder=SECOND) == 0
        assert sample(text, "backupd_backup_last_success_timestamp_seconds", database=SECOND) == known
        folder.unlink()
        moved.rename(folder)
        scrape_until(daemon, lambda t: sample(t, "backupd_repository_readable") == 1, "readable again")
    finally:
        daemon.stop()


def test_an_unreadable_pitr_folder_is_named(tmp_path: Path):
    from backupd import metrics
    from backupd.repository import Repository

    pitr = tmp_path / "backups" / "_pitr"
    pitr.mkdir(parents=True)
    folder = metrics.RepositoryReader(Repository(tmp_path / "backups"))
    assert folder.read().folders == {"_pitr": True}
    pitr.rmdir()
    pitr.write_text("")  # stands for any folder that cannot be listed (root reads mode 000)
    reading = folder.read()
    assert reading.folders == {"_pitr": False} and not reading.readable


def test_a_damaged_replication_record_leaves_the_rest_of_the_scrape(env, backupd, backup_dir, dark_dbs):
    backupd.ok("backup", "--database", FIRST)
    (backup_dir / ".replication.json").write_text('["not", "a", "record"]\n')
    daemon = RunningDaemon(env, DB_NAME=FIRST)
    try:
        text = scrape_until(daemon, lambda t: sample(t, "backupd_backup_last_success_timestamp_seconds",
                                                     database=FIRST), "the database's series")
        assert sample(text, "backupd_repository_readable") == 1
    finally:
        daemon.stop()


def test_a_part_that_fails_is_logged_left_out_and_counted(tmp_path: Path, monkeypatch, capsys):
    """Pure logic: whatever goes wrong in one part of the scrape (a bug, a surprise), the
    other parts answer, and ``backupd_metrics_errors_total`` says which part was left out."""
    from backupd import metrics, view
    from backupd.repository import Repository

    def broken(repo):
        raise RuntimeError("a bug in reading replication runs")

    monkeypatch.setattr(view, "read_runs", broken)  # the one reading every output renders from
    text = metrics.Metrics(Repository(tmp_path / "backups")).render().decode()
    assert sample(text, "backupd_repository_readable") == 1
    assert sample(text, "backupd_metrics_errors_total", part="replication") == 1
    assert sample(text, "backupd_stored_bytes", target="local") == 0
    logged = capsys.readouterr()
    assert "a bug in reading replication runs" in logged.out + logged.err
