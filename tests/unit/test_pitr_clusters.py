"""Which cluster a PITR command is about, when BACKUP_DIR holds several and no server can
be asked; and each failure stays with its own cluster. Pure logic on folders."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backupd import failures
from backupd.errors import NotFoundError, RefusedError, UsageError
from backupd.pitr import clusters
from backupd.settings import load_settings
from backupd.statuspage import _pitr
from tests.pg import free_port

OLD, NEW = "7400000000000000001", "7400000000000000002"
WHEN = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def offline(tmp_path):
    """Settings whose server is nowhere (nothing listens on its port)."""
    return load_settings({"BACKUP_DIR": str(tmp_path), "PITR_ENABLED": "true", "DB_HOST": "127.0.0.1",
                          "DB_PORT": str(free_port())})


def folders(settings, *names: str) -> None:
    for name in names:
        (settings.backup_dir / "_pitr" / name / "base").mkdir(parents=True)


def test_several_clusters_and_no_server_is_refused_naming_them(offline):
    folders(offline, OLD, NEW)
    with pytest.raises(RefusedError, match=f"{OLD}, {NEW}") as refused:
        clusters.choose(offline)
    assert refused.value.exit_code == 2
    assert clusters.choose(offline, NEW).system_identifier == NEW
    assert clusters.current(offline, None) is None  # a one-shot command: no telling
    assert clusters.current(offline, {"system_identifier": OLD}).system_identifier == OLD  # the daemon's stream


def test_an_unknown_cluster_is_refused_naming_the_known_ones(offline):
    folders(offline, OLD, NEW)
    for wrong in ("123", "../" + OLD, ""):
        with pytest.raises(UsageError, match=f"{OLD}, {NEW}"):
            clusters.choose(offline, wrong)


def test_the_only_cluster_is_the_default_and_none_is_not_found(offline):
    with pytest.raises(NotFoundError):
        clusters.choose(offline)
    folders(offline, OLD)
    assert clusters.choose(offline).system_identifier == OLD
    assert clusters.current(offline, None).system_identifier == OLD
    assert clusters.current(offline, {"system_identifier": None}) is None  # the daemon never guesses


def test_a_failure_is_its_own_clusters_and_one_of_no_cluster_is_everyones(offline):
    folders(offline, OLD, NEW)
    failures.record(offline.backup_dir, failures.pitr("verify", OLD), "the drill failed", WHEN)
    failures.record(offline.backup_dir, failures.pitr("base", None), "the server is down", WHEN)
    assert set(failures.of_cluster(offline.backup_dir, OLD)) == {"verify", "base"}
    assert set(failures.of_cluster(offline.backup_dir, NEW)) == {"base"}
    assert failures.of_cluster(offline.backup_dir, NEW)["base"].job.cluster is None


def test_the_status_page_names_the_cluster_and_the_others_beside_it():
    window = {"start": "2026-12-01T00:00:00Z", "end": "2026-12-01T01:00:00Z", "base": "base-20261201T000000Z"}
    section = _pitr({"system_identifier": NEW, "window": window, "receiver": {"streaming": True},
                     "clusters": [{"system_identifier": OLD, "window": window},
                                  {"system_identifier": NEW, "window": window}]}, WHEN)
    assert NEW in section and "Other clusters" in section and OLD in section
