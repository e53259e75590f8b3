"""/metrics, /status and the status page each read BACKUP_DIR once per request: every
manifest is read one time, however many parts (the series, backupd_healthy, the health
in /status) show what it says. Pure logic, in-process, on a BACKUP_DIR written by main."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from backupd import repository, statuspage
from backupd.daemon import Daemon
from backupd.settings import load_settings
from tests.adversarial.test_metrics_never_dark import sample

FIXTURE = Path(__file__).parent / "fixtures" / "main_backup_dir"


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch) -> tuple[Daemon, Counter[Path]]:
    """A daemon (built, not started) over a copy of the fixture, and a count of each
    manifest's reads."""
    shutil.copytree(FIXTURE, tmp_path / "backups")
    reads: Counter[Path] = Counter()
    load = repository.Repository._load

    def counted(self, manifest_path, problems=None):
        reads[manifest_path] += 1
        return load(self, manifest_path, problems)

    monkeypatch.setattr(repository.Repository, "_load", counted)
    settings = load_settings({"BACKUP_DIR": str(tmp_path / "backups"), "DB_PORT": "1", "DB_NAME": "shop"})
    return Daemon(settings), reads


def test_a_scrape_reads_each_manifest_once(daemon):
    running, reads = daemon
    text = running.metrics.render().decode()
    assert sample(text, "backupd_healthy") is not None and sample(text, "backupd_stored_backups",
                                                                  target="local", database="shop") == 1
    assert reads and set(reads.values()) == {1}, reads


@pytest.mark.parametrize("endpoint", ["/status", "/"])
def test_status_and_the_page_read_each_manifest_once(daemon, endpoint):
    running, reads = daemon
    if endpoint == "/status":
        assert running.status()["databases"]["shop"]["backups"] == 1
    else:
        assert "<code>shop</code>" in statuspage.render(running.page_view())
    assert reads and set(reads.values()) == {1}, reads


def test_a_part_of_the_reading_that_fails_is_counted_and_the_rest_answers(daemon, monkeypatch):
    from backupd import view

    running, _ = daemon

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in judging health")

    monkeypatch.setattr(view, "judge", broken)
    text = running.metrics.render().decode()
    assert sample(text, "backupd_metrics_errors_total", part="health") == 1
    assert sample(text, "backupd_healthy") is None
    assert sample(text, "backupd_stored_backups", target="local", database="shop") == 1
    assert running.status()["databases"]["shop"]["backups"] == 1  # and /status says what it can
