"""backupd_instance_info: the sidecar's name as a label, never one called `instance`, and
never a question to the server during a scrape."""

from __future__ import annotations

import pytest

from backupd import origin
from backupd.metrics import Metrics
from backupd.repository import Repository
from backupd.settings import load_settings


def scrape(tmp_path, **env: str) -> str:
    metrics = Metrics(Repository(tmp_path), load_settings({"BACKUP_DIR": str(tmp_path), **env}))
    metrics.add_instance()
    return metrics.render().decode()


@pytest.fixture(autouse=True)
def nothing_known(monkeypatch):
    monkeypatch.setattr(origin, "_cache", {"compose": None})  # no compose labels, the server not asked


def test_the_name_given_is_the_label_and_the_identifier_is_empty_until_known(tmp_path):
    assert 'backupd_instance_info{backup_instance="shop.backup",system_identifier=""} 1.0' in scrape(
        tmp_path, BACKUP_INSTANCE="shop.backup")
    origin._cache["system_identifier"] = "7301234567890123456"
    assert ('backupd_instance_info{backup_instance="shop.backup",system_identifier="7301234567890123456"} 1.0'
            in scrape(tmp_path, BACKUP_INSTANCE="shop.backup"))


def test_without_a_name_the_series_waits_and_the_scrape_does_not(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a scrape asked the server")

    monkeypatch.setattr(origin, "_server_identifier", never)
    text = scrape(tmp_path)
    assert "backupd_instance_info{" not in text and 'backupd_metrics_errors_total{part="settings"} 0.0' in text
    origin._cache["system_identifier"] = "7301234567890123456"  # a job asked: the default name is known
    assert ('backupd_instance_info{backup_instance="7301234567890123456",system_identifier="7301234567890123456"} '
            '1.0' in scrape(tmp_path))
