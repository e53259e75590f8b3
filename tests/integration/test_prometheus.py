"""A real Prometheus (Debian's package, on 127.0.0.1) scrapes the daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import make_database
from tests.pg import free_port


@pytest.fixture
def prometheus(tmp_path):
    def start(target_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: backupd\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n")
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        return f"http://127.0.0.1:{port}"

    started: list[subprocess.Popen] = []
    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=30)


def query(base: str, expression: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]["result"]
    except OSError:
        return []


def test_prometheus_scrapes_the_last_success_timestamp(cluster, env, prometheus):
    make_database(cluster, "scraped_db", rows=100)
    daemon = RunningDaemon(env, DB_NAME="scraped_db", BACKUP_ON_START="true")
    try:
        daemon.wait_until(lambda: daemon.newest_backup("scraped_db"), what="the first backup")
        base = prometheus(daemon.port)
        deadline = time.monotonic() + 90
        result = []
        while time.monotonic() < deadline and not result:
            result = query(base, 'backupd_backup_last_success_timestamp_seconds{database="scraped_db"}')
            time.sleep(1)
        assert result, "Prometheus never returned the metric"
        assert abs(float(result[0]["value"][1]) - time.time()) < 300
    finally:
        daemon.stop()
