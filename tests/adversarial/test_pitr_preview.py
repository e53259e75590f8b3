"""``pitr restore --dry-run`` against a real cluster and its archive (two base backups, rows
1 and 2 committed after them): it names the base backup, WAL and last commit that the real
restore then uses, touches nothing (no file in BACKUP_DIR nor at the destination, no WAL
written on the server), and exits 2 wherever the restore would refuse. The drill's rates
give an estimate within a factor of 2 of a real restore's duration."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.adversarial.pitr_repository import build
from tests.adversarial.test_pitr_restore_safety import assert_recovers_to, refused, snapshot
from tests.integration.helpers import small_disk
from tests.pg import matrix_bindir
from tests.pitr.conftest import RecoveredServer


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    yield from build(tmp_path_factory.mktemp("pitr-preview"))


@pytest.fixture
def copy(repo, tmp_path):
    return repo.copy(tmp_path)


@pytest.fixture
def home():
    home = Path(tempfile.mkdtemp(prefix="backupd-pitr-"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def wal_position(repo) -> str:
    with repo.cluster.connect() as conn:
        return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def window(backupd) -> dict:
    (cluster,) = json.loads(backupd.ok("pitr", "status", "--json").stdout)["clusters"]
    return cluster


def took(output: str) -> str:
    return re.search(r"took base backup (base-\w+)", output).group(1)


@pytest.mark.parametrize("moment", ["latest", "the window's start"])
def test_the_dry_run_names_the_base_and_wal_the_restore_then_uses_and_touches_nothing(repo, copy, home, moment):
    backupd, backup_dir = copy
    status = window(backupd)
    when = "latest" if moment == "latest" else status["window"]["start"]
    to = home / "restored"
    before, position = snapshot(backup_dir), wal_position(repo)

    dry = backupd.ok("pitr", "restore", "--time", when, "--to", str(to), "--dry-run")
    assert snapshot(backup_dir) == before and not to.exists() and wal_position(repo) == position
    assert f"cluster {status['system_identifier']}" in dry.stdout, dry.stdout
    segments = int(re.search(r"WAL: (\d+) segment\(s\) from BACKUP_DIR", dry.stdout).group(1))
    assert "room needed:" in dry.stdout and "dry run: nothing was changed" in dry.stdout, dry.stdout
    newest, oldest = status["base_backups"][0]["id"], status["base_backups"][-1]["id"]
    if moment == "latest":
        assert took(dry.stdout) == newest, dry.stdout
    elif took(dry.stdout) == oldest:  # the newer one is consistent only after the window's first second
        assert f"skipped base backup {newest}: it is consistent only from" in dry.stdout, dry.stdout
    else:  # taken within that same second, the newer one is consistent at it already: either serves
        assert took(dry.stdout) == newest and f"(from {status['window']['start'][:19]}" in dry.stdout, dry.stdout

    real = backupd.ok("pitr", "restore", "--time", when, "--to", str(to))
    assert took(real.stdout) == took(dry.stdout), (dry.stdout, real.stdout)
    assert f"and {segments} WAL files" in real.stdout, (dry.stdout, real.stdout)
    assert_recovers_to(repo, to, [1, 2] if moment == "latest" else [])


def test_the_dry_run_names_the_last_commit_with_its_transaction_id(repo, copy, home):
    backupd, _ = copy
    with repo.cluster.connect("shop") as conn:
        xid = conn.execute("SELECT xmin::text FROM orders WHERE n = 2").fetchone()[0]
    dry = backupd.ok("pitr", "restore", "--time", "latest", "--to", str(home / "restored"), "--dry-run")
    assert re.search(rf"last commit in the WAL: transaction {xid} at \S+Z \(lsn [0-9A-F]+/[0-9A-F]+\)",
                     dry.stdout), dry.stdout
    # The window's end as a Berlin wall-clock time: the same commit; the moment understood
    # is printed in UTC.
    end = datetime.fromisoformat(window(backupd)["window"]["end"])
    local = end.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M:%S")
    later = backupd.ok("pitr", "restore", "--time", local, "--to", str(home / "restored"), "--dry-run",
                       extra_env={"TZ": "Europe/Berlin"})
    assert f"--time '{local}' is {end.strftime('%Y-%m-%dT%H:%M:%SZ')} (UTC)" in later.stdout, later.stdout
    assert f"transaction {xid} at" in later.stdout, later.stdout


@pytest.mark.parametrize("case", ["before the window", "after the window", "a folder that is not empty",
                                  "inside BACKUP_DIR", "not enough room"])
def test_the_dry_run_is_exit_2_where_the_restore_would_refuse(repo, copy, home, case):
    backupd, backup_dir = copy
    when = {"before the window": "2000-01-01T00:00:00Z", "after the window": "2999-01-01 00:00"}.get(case, "latest")
    to = home / "restored"
    if case == "a folder that is not empty":
        to.mkdir()
        (to / "notes.txt").write_text("someone's notes")
    elif case == "inside BACKUP_DIR":
        to = backup_dir / "restored"
    before, position = snapshot(backup_dir), wal_position(repo)
    if case == "not enough room":
        with small_disk(home / "volume", "24m", "0755") as volume:
            message = refused(backupd("pitr", "restore", "--time", when, "--to", str(volume), "--dry-run"))
            assert "not enough room" in message and not list(volume.iterdir()), message
            real = refused(backupd("pitr", "restore", "--time", when, "--to", str(volume)))  # the restore agrees
            assert "not enough room" in real and not list(volume.iterdir()), real
    else:
        refused(backupd("pitr", "restore", "--time", when, "--to", str(to), "--dry-run"))
        refused(backupd("pitr", "restore", "--time", when, "--to", str(to)))
    assert snapshot(backup_dir) == before and wal_position(repo) == position
    if case == "a folder that is not empty":
        assert [p.name for p in to.iterdir()] == ["notes.txt"]
    elif case != "not enough room":
        assert not to.exists()


def test_the_estimate_is_within_a_factor_of_two_of_a_real_restore(repo, copy, home):
    backupd, backup_dir = copy
    assert window(backupd)["restore_estimate_seconds"] is None  # no drill has measured the rates yet
    backupd.ok("pitr", "verify")
    drill = json.loads(next(backup_dir.glob("_pitr/*/verify.json")).read_text())
    assert drill["base_bytes_per_second"] > 0 and drill["wal_bytes_per_second"] > 0 and drill["seconds"] > 0
    estimate = window(backupd)["restore_estimate_seconds"]
    text = backupd.ok("pitr", "status").stdout
    assert f"a restore to now would take about {max(round(estimate), 1)} s (from the last drill)" in text, text
    dry = backupd.ok("pitr", "restore", "--time", "latest", "--to", str(home / "restored"), "--dry-run")
    assert "a restore would take about" in dry.stdout, dry.stdout

    started = time.monotonic()
    backupd.ok("pitr", "restore", "--time", "latest", "--to", str(home / "restored"))
    server = RecoveredServer(matrix_bindir(17), home / "restored")
    try:
        server.wait_promoted(repo.cluster)
        measured = time.monotonic() - started
    finally:
        server.stop()
    assert measured / 2 <= estimate <= measured * 2, (estimate, measured)


def scrape_pitr(settings, receiver: dict) -> list:
    """The PITR part of a scrape, in process, over a one-shot view of the folder."""
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as Errors

    from backupd import metrics
    from backupd.repository import Repository, utc_now
    from backupd.view import Live, build

    guard = metrics.Guard(Errors("errors", "", ["part"], registry=CollectorRegistry()))
    reading = build(settings, Repository(settings.backup_dir), Live(utc_now(), receiver=receiver), pitr="streamed",
                    attempt=lambda part, produce: produce())
    return list(metrics.PitrCollector(lambda: reading, guard).collect())


def test_the_drill_figures_are_exported_and_an_older_drill_record_still_reads(copy):
    """Metrics, in process: the collector of a one-shot view of the folder."""
    from backupd.settings import load_settings

    backupd, backup_dir = copy
    settings = load_settings(backupd.env)
    folder = next(p for p in (backup_dir / "_pitr").iterdir() if p.is_dir())
    record, streaming = folder / "verify.json", {"system_identifier": folder.name}
    record.write_text(json.dumps({"time": "2026-12-01T00:00:00Z", "ok": True, "last_success": "2026-12-01T00:00:00Z"}))
    names = [m.name for m in scrape_pitr(settings, streaming)]
    assert "backupd_pitr_verify_last_success_timestamp_seconds" in names
    assert "backupd_pitr_drill_seconds" not in names and "backupd_pitr_restore_estimate_seconds" not in names
    status = window(backupd)
    assert status["invalid"] == [] and status["restore_estimate"] is None

    record.write_text(json.dumps({"time": "2026-12-01T00:00:00Z", "ok": True, "last_success": "2026-12-01T00:00:00Z",
                                  "seconds": 4.5, "base_bytes_per_second": 1e6, "wal_bytes_per_second": 1e7}))
    found = {m.name: m.samples[0].value for m in scrape_pitr(settings, streaming)}
    assert found["backupd_pitr_drill_seconds"] == 4.5 and found["backupd_pitr_restore_estimate_seconds"] > 0
