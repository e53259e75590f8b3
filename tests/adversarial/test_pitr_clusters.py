"""Two clusters in one BACKUP_DIR (two servers on one volume, or a server initialised
again at the same address): every PITR decision is about one cluster alone. Each daemon
takes its own base backup and judges its own cluster; each cluster restores to its own
rows; without a server to ask, a restore that does not name its cluster is refused."""

from __future__ import annotations

import json
import os
import pwd
import shutil
from datetime import datetime

import pytest

from tests.conftest import Backupd
from tests.integration.daemon_helpers import RunningDaemon
from tests.pg import MATRIX, free_port, matrix_bindir, remove_cluster, start_cluster
from tests.pitr.conftest import data_home, recovered  # noqa: F401 (fixtures)
from tests.pitr.helpers import commit, make_shop, pitr_view, wait_for_window


def identifier(cluster) -> str:
    with cluster.connect() as conn:
        return str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])


@pytest.fixture
def two_clusters():
    started = [start_cluster(matrix_bindir(17)) for _ in range(2)]
    yield started
    for cluster in started:
        remove_cluster(cluster)


def env_for(cluster, backup_dir) -> dict[str, str]:
    return {**cluster.env(), "BACKUP_DIR": str(backup_dir), "LOG_FORMAT": "json", "DB_WAIT_TIMEOUT": "2s",
            "PG_BINDIR": str(MATRIX), "PITR_ENABLED": "true", "PITR_MAX_LAG": "10s"}


def metric(daemon: RunningDaemon, name: str) -> float | None:
    for line in daemon.get("/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def stream_rows(cluster, env: dict[str, str], *values: int) -> None:
    """A daemon on ``cluster``: its own base backup, its own window, its health; then stopped."""
    sid = identifier(cluster)
    daemon = RunningDaemon(env)
    try:
        daemon.wait_until(lambda: pitr_view(daemon).get("system_identifier") == sid
                          and pitr_view(daemon).get("window"), 90, "this cluster's own first base backup")
        committed = commit(cluster, *values)
        wait_for_window(daemon, reaching=committed)
        view = pitr_view(daemon)
        assert view["system_identifier"] == sid
        assert all(b["id"] for b in view["base_backups"]) and view["base_backups"]
        status, health = daemon.json("/healthz")
        assert status == 200, health
        newest = max(datetime.fromisoformat(b["stop_time"]) for b in view["base_backups"])
        assert metric(daemon, "backupd_pitr_base_last_success_timestamp_seconds") == newest.timestamp()
    finally:
        assert daemon.stop() == 0, daemon.stderr


def test_two_clusters_share_a_folder_and_each_restores_to_its_own_rows(two_clusters, backup_dir, data_home,  # noqa: F811
                                                                      recovered):  # noqa: F811
    first, second = two_clusters
    for cluster in two_clusters:
        make_shop(cluster)
    stream_rows(first, env_for(first, backup_dir), 1, 2)
    # The first cluster's drill fails (no server binary here): its failure, not the second's.
    empty = data_home / "no-postgres"
    empty.mkdir()
    failed = Backupd({**env_for(first, backup_dir), "PG_BINDIR": str(empty)})("pitr", "verify")
    assert failed.returncode != 0, failed.stdout
    stream_rows(second, env_for(second, backup_dir), 10, 20)
    ids = sorted([identifier(first), identifier(second)])
    assert sorted(p.name for p in (backup_dir / "_pitr").iterdir() if p.name.isdigit()) == ids
    for sid in ids:
        assert list((backup_dir / "_pitr" / sid / "base").glob("base-*.json")), f"no base backup of {sid}"

    # No server to ask: status lists both; a restore that does not say which is refused.
    offline = Backupd({**env_for(first, backup_dir), "DB_PORT": str(free_port())})
    listed = json.loads(offline.ok("pitr", "status", "--json").stdout)
    assert sorted(c["system_identifier"] for c in listed["clusters"]) == ids
    assert all(c["window"] for c in listed["clusters"])
    text = offline.ok("pitr", "status").stdout
    assert all(sid in text for sid in ids), text
    refused = offline("pitr", "restore", "--time", "latest", "--to", str(data_home / "which"))
    assert refused.returncode == 2 and all(sid in refused.stderr for sid in ids), refused.stderr
    assert not (data_home / "which").exists()
    unknown = offline("pitr", "restore", "--cluster", "123", "--time", "latest", "--to", str(data_home / "x"))
    assert unknown.returncode == 2 and all(sid in unknown.stderr for sid in ids), unknown.stderr
    assert offline("pitr", "verify").returncode == 2

    for cluster, expected in ((first, [1, 2]), (second, [10, 20])):
        target = data_home / identifier(cluster)
        offline.ok("pitr", "restore", "--cluster", identifier(cluster), "--time", "latest", "--to", str(target))
        server = recovered(matrix_bindir(17), target)
        server.wait_promoted(cluster)
        with server.as_cluster(cluster).connect("shop") as conn:
            assert [n for (n,) in conn.execute("SELECT n FROM orders ORDER BY n")] == expected
        server.stop()

    first_failures = {c["system_identifier"]: c["failures"] for c in listed["clusters"]}
    assert set(first_failures[identifier(first)]) == {"verify"} and not first_failures[identifier(second)]

    # With its server up, the connected server's cluster is the default; the other cluster's
    # drill is not judged by this server's slot.
    online = Backupd(env_for(first, backup_dir))
    default = online.ok("pitr", "restore", "--time", "latest", "--to", str(data_home / "default"))
    assert f"cluster {identifier(first)}" in default.stdout, default.stdout
    drilled = online.ok("pitr", "verify", "--cluster", identifier(second))
    assert "ok" in drilled.stdout, drilled.stdout
    listed = json.loads(online.ok("pitr", "status", "--json").stdout)
    assert [c["connected"] for c in listed["clusters"] if c["system_identifier"] == identifier(first)] == [True]
    assert not {c["system_identifier"]: c["failures"] for c in listed["clusters"]}[identifier(second)]


def reinitialise(cluster) -> None:
    """The same server address, a new cluster: initdb again (a new system identifier)."""
    cluster.stop()
    shutil.rmtree(cluster.data)
    pwfile = cluster.base / "pwfile"
    pwfile.write_text(cluster.password + "\n")
    entry = pwd.getpwnam("postgres")
    os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    cluster._as_postgres([str(cluster.bindir / "initdb"), "-D", str(cluster.data), "--auth=scram-sha-256",
                          f"--pwfile={pwfile}", "-U", "postgres", "--encoding=UTF8", "--locale=C.UTF-8"])
    pwfile.unlink()
    cluster.start()


def test_a_server_initialised_again_starts_a_new_cluster_and_the_old_one_stays_restorable(
        two_clusters, backup_dir, data_home, recovered):  # noqa: F811
    server = two_clusters[0]
    env = env_for(server, backup_dir)
    make_shop(server)
    stream_rows(server, env, 1, 2)
    old = identifier(server)
    reinitialise(server)
    new = identifier(server)
    assert new != old
    make_shop(server)
    stream_rows(server, env, 7)

    backupd = Backupd(env)
    backupd.ok("prune")  # each cluster by its own retention: the old one keeps its base backup
    listed = json.loads(backupd.ok("pitr", "status", "--json").stdout)
    assert {c["system_identifier"]: c["connected"] for c in listed["clusters"]} == {old: False, new: True}
    assert all(c["window"] for c in listed["clusters"])
    for cluster_id, flag, expected in ((old, ["--cluster", old], [1, 2]), (new, [], [7])):
        target = data_home / cluster_id
        built = backupd.ok("pitr", "restore", *flag, "--time", "latest", "--to", str(target))
        assert f"cluster {cluster_id}" in built.stdout, built.stdout
        restored = recovered(matrix_bindir(17), target)
        restored.wait_promoted(server)
        with restored.as_cluster(server).connect("shop") as conn:
            assert [n for (n,) in conn.execute("SELECT n FROM orders ORDER BY n")] == expected
        restored.stop()
