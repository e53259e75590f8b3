"""A fleet seen in one place: a real Prometheus (Debian's package, on 127.0.0.1) scrapes
three backupd daemons of three PostgreSQL clusters, each with its own BACKUP_DIR and
BACKUP_INSTANCE, and evaluates the shipped rules (with
short ``for:``). The shipped dashboard's queries run against it, and a stopped daemon and
an unreadable folder raise alerts that name their instance. Also: the rules pass promtool,
and the dashboard names only metrics that backupd exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.adversarial.test_metrics_never_dark import start_without_root_powers
from tests.conftest import REPO, Backupd
from tests.integration import daemon_helpers
from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import make_database
from tests.integration.test_prometheus import query
from tests.pg import Cluster, free_port, remove_cluster, start_cluster

RULES = REPO / "deploy/prometheus"
DASHBOARD = REPO / "deploy/grafana/backupd.json"


def test_the_rules_pass_promtool():
    for argv in (["promtool", "check", "rules", "alerts.yml"],
                 ["promtool", "test", "rules", "alerts.test.yml", "alerts.long.test.yml"]):
        result = subprocess.run(argv, cwd=RULES, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_unit_test():
    rules = set(re.findall(r"^\s*- alert: (\w+)", (RULES / "alerts.yml").read_text(), flags=re.MULTILINE))
    tested = {name for tests in RULES.glob("alerts*.test.yml")
              for name in re.findall(r"alertname: (\w+)", tests.read_text())}
    assert rules and rules == tested, rules ^ tested


def exported_metrics() -> set[str]:
    """Every metric name backupd's code exports, as Prometheus stores it (counters end in _total)."""
    names: set[str] = set()
    for path in (REPO / "backupd").rglob("*.py"):
        text = path.read_text()
        names |= {n + "_total" for n in re.findall(r'Counter\(\s*"(backupd_[a-z_]+)"', text)}
        names |= set(re.findall(r'(?:Gauge|GaugeMetricFamily)\(\s*"(backupd_[a-z_]+)"', text))
        names |= set(re.findall(r'^\s+"(backupd_[a-z_]+)": \(', text, flags=re.MULTILINE))  # metrics.FAMILIES
    return names


def panel_queries(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_dashboard_names_only_metrics_backupd_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_metrics()
    assert {"backupd_backup_last_success_timestamp_seconds", "backupd_repository_readable",
            "backupd_healthy", "backupd_pitr_lag_bytes", "backupd_backups_total"} <= exported
    named = {name for expr in panel_queries(dashboard) for name in re.findall(r"backupd_[a-z_]+", expr)}
    assert named and named <= exported, named - exported
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "instance" in variables and "backupd_build_info" in variables["instance"]["definition"]
    assert all('instance=~"$instance"' in expr for expr in panel_queries(dashboard) if "backupd_" in expr)
    fleet = next(p for p in dashboard["panels"] if p["title"].startswith("Fleet"))
    columns = set(fleet["transformations"][1]["options"]["renameByName"].values())
    assert {"Newest backup age", "Newest passed verification age", "Copies on targets", "PITR lag",
            "Health"} <= columns
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


class Prometheus:
    def __init__(self, folder: Path, targets: list[int]):
        rules = folder / "alerts.yml"
        # The shipped rules with every `for:` cut to 2 s: the same expressions, fast.
        rules.write_text(re.sub(r"for: \d+[smhd]", "for: 2s", (RULES / "alerts.yml").read_text()))
        config = folder / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "backupd", "scrape_timeout": "1s", "static_configs": [
                {"targets": [f"127.0.0.1:{port}" for port in targets]}]}]}))
        self.base = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen([shutil.which("prometheus") or "/usr/bin/prometheus",
                                      f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
                                      f"--web.listen-address={self.base.removeprefix('http://')}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.base}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def firing(self, name: str) -> list[dict]:
        try:
            alerts = self.api("alerts")["data"]["alerts"]
        except OSError:
            return []
        return [a["labels"] for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]

    def until(self, predicate, what: str, timeout: float = 45):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(0.5)
        raise AssertionError(f"Prometheus: timed out waiting for {what}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def own_clusters(count: int) -> list[Cluster]:
    """``count`` new clusters, started side by side (each takes seconds alone)."""
    with ThreadPoolExecutor(count) as pool:
        started = [pool.submit(start_cluster) for _ in range(count)]
    clusters = [future.result() for future in started if future.exception() is None]
    if len(clusters) < count:
        for cluster in clusters:
            remove_cluster(cluster)
        next(f for f in started if f.exception() is not None).result()  # raises why
    return clusters


@pytest.fixture
def fleet(cluster, env, tmp_path, monkeypatch):
    """Three daemons of three PostgreSQL clusters (the session's and two of their own), each
    with its own database, BACKUP_DIR and BACKUP_INSTANCE (run without root's power over
    file modes, so a folder of mode 000 is unreadable to them), and a Prometheus."""
    monkeypatch.setattr(daemon_helpers, "start_backupd", start_without_root_powers)
    daemons: list[RunningDaemon] = []
    prometheus = None
    others = own_clusters(2)
    try:
        for index, server in enumerate([cluster, *others]):
            name, backups = f"fleet_{index}", tmp_path / f"backups_{index}"
            make_database(server, name, rows=20)
            own = {**env, **server.env(), "BACKUP_DIR": str(backups), "DB_NAME": name,
                   "BACKUP_INSTANCE": f"site-{index}.db"}
            Backupd(own).ok("backup")
            daemons.append(RunningDaemon(own))
        prometheus = Prometheus(tmp_path, [d.port for d in daemons])
        yield daemons, prometheus
    finally:
        if prometheus:
            prometheus.stop()
        for daemon in daemons:
            daemon.stop()
        for other in others:
            remove_cluster(other)


def instance(daemon: RunningDaemon) -> str:
    return f"127.0.0.1:{daemon.port}"


def test_a_fleet_in_prometheus_with_alerts_per_instance(fleet):
    daemons, prometheus = fleet
    started = time.monotonic()
    everyone = {instance(d) for d in daemons}
    prometheus.until(lambda: {r["metric"]["instance"] for r in query(prometheus.base, "backupd_healthy == 1")}
                     == everyone, "three healthy daemons")

    # The dashboard's queries, as Grafana sends them with every instance selected.
    dashboard = json.loads(DASHBOARD.read_text())
    for expr in panel_queries(dashboard):
        answer = prometheus.api("query", query=expr.replace("$instance", ".*"))
        assert answer["status"] == "success", (expr, answer)
    fleet_panel = next(p for p in dashboard["panels"] if p["title"].startswith("Fleet"))
    health = next(t["expr"] for t in fleet_panel["targets"] if t["legendFormat"] == "Health")
    rows = query(prometheus.base, health.replace("$instance", ".*"))
    assert {(r["metric"]["instance"], r["metric"]["database"], r["value"][1]) for r in rows} == {
        (instance(d), f"fleet_{i}", "1") for i, d in enumerate(daemons)}
    assert not prometheus.firing("BackupdDown")

    # Three clusters, told apart by the target (host:port) and by the name each was given.
    assert len({d.env["DB_PORT"] for d in daemons}) == 3
    named = {(r["metric"]["instance"], r["metric"]["backup_instance"])
             for r in query(prometheus.base, "backupd_instance_info == 1")}
    assert named == {(instance(d), d.env["BACKUP_INSTANCE"]) for d in daemons}
    assert {(r["metric"]["instance"], r["metric"].get("backup_instance")) for r in rows} == named
    joined = query(prometheus.base, "(time() - backupd_backup_last_success_timestamp_seconds) * on(instance, job) "
                                    "group_left(backup_instance) backupd_instance_info")  # docs/monitoring.md's
    assert {(r["metric"]["instance"], r["metric"]["backup_instance"]) for r in joined} == named

    # One daemon stops: its alert fires, naming it, and only it.
    stopped = daemons[1]
    stopped.stop()
    down = prometheus.until(lambda: prometheus.firing("BackupdDown"), "BackupdDown")
    assert [labels["instance"] for labels in down] == [instance(stopped)], down
    summaries = [a["annotations"]["summary"] for a in prometheus.api("alerts")["data"]["alerts"]
                 if a["labels"]["alertname"] == "BackupdDown"]
    assert summaries == [f"backupd on {instance(stopped)} ({stopped.env['BACKUP_INSTANCE']}) cannot be scraped: "
                         "it is down or unreachable"], summaries
    assert not prometheus.firing("BackupSeriesDisappeared")  # a down daemon is BackupdDown's to tell

    # Another's database folder becomes unreadable: its series stay, the folder is named.
    locked = Path(daemons[2].env["BACKUP_DIR"]) / "fleet_2"
    locked.chmod(0)
    try:
        unreadable = prometheus.until(lambda: prometheus.firing("BackupFolderUnreadable"), "BackupFolderUnreadable")
        assert [(labels["instance"], labels["folder"]) for labels in unreadable] == [(instance(daemons[2]),
                                                                                      "fleet_2")]
        assert query(prometheus.base, f'backupd_backup_last_success_timestamp_seconds{{instance='
                                      f'"{instance(daemons[2])}",database="fleet_2"}}')
        assert not prometheus.firing("BackupSeriesDisappeared")
    finally:
        locked.chmod(0o700)
    assert time.monotonic() - started < 90
