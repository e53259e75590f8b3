"""People hear about trouble: a real SMTP server (STARTTLS) and a real HTTP endpoint
receive the failure and then the recovery; warnings; a failing notifier fails nothing;
a real Prometheus fires the "backup too old" alert."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import REPO
from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import make_database
from tests.pg import free_port


@pytest.fixture(scope="module")
def notify_db(cluster):
    make_database(cluster, "notify_db", rows=500)
    return "notify_db"


@pytest.fixture
def smtp(tmp_path):
    """aiosmtpd with STARTTLS required, and a certificate the client trusts via SSL_CERT_FILE."""
    import ssl

    from aiosmtpd.controller import Controller

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append((envelope.rcpt_tos, envelope.content.decode("utf-8", "replace")))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    controller.start()
    yield {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "NOTIFICATION_EMAIL": "ops@example.com",
           "SMTP_FROM": "backupd@example.com", "SSL_CERT_FILE": str(cert)}, received
    controller.stop()


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            length = int(self.headers["Content-Length"])
            received.append((self.path, json.loads(self.rfile.read(length))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/secret-token-123", received
    server.shutdown()


def test_failure_then_recovery_by_mail_with_starttls_and_by_webhook(backupd, cluster, notify_db, smtp, webhook):
    mail_env, mails = smtp
    url, posts = webhook
    env = {**mail_env, "NOTIFY_WEBHOOK_URL": url, "DB_NAME": notify_db}
    failed = backupd("backup", extra_env={**env, "DB_PORT": str(free_port()), "DB_WAIT_TIMEOUT": "1s"})
    assert failed.returncode == 1
    assert len(mails) == 1 and len(posts) == 1
    recipients, content = mails[0]
    assert recipients == ["ops@example.com"] and "Subject: [backupd] failure:" in content
    assert posts[0][0] == "/hooks/secret-token-123"
    assert posts[0][1]["severity"] == "failure" and "text" in posts[0][1]
    assert cluster.password not in content and cluster.password not in json.dumps(posts)
    assert "secret-token-123" not in failed.stdout + failed.stderr

    backupd.ok("backup", extra_env=env)
    assert len(mails) == 2 and "Subject: [backupd] recovery:" in mails[1][1]
    assert posts[1][1]["severity"] == "recovery"
    backupd.ok("backup", extra_env=env)
    assert len(mails) == 2  # nothing changed: nothing sent


def test_warnings_are_sent_once_size_drop_disk_and_min_keep(cluster, backupd, notify_db, webhook):
    url, posts = webhook
    env = {"NOTIFY_WEBHOOK_URL": url, "DB_NAME": notify_db, "BACKUP_MIN_KEEP": "3", "DISK_MIN_FREE_PERCENT": "100",
           "BACKUP_RETENTION_DAYS": "0"}
    backupd.ok("backup", extra_env=env)
    with cluster.connect(notify_db) as conn:
        conn.execute("DELETE FROM items WHERE id > 10")
    backupd.ok("backup", extra_env=env)
    keys = {event["key"] for _, post in posts for event in post["events"]}
    assert {"disk", f"min-keep:{notify_db}", f"size-drop:{notify_db}"} <= keys
    assert all(post["severity"] == "warning" for _, post in posts)


def test_a_failing_notifier_never_fails_a_backup(backupd, notify_db):
    started = time.monotonic()
    result = backupd("backup", extra_env={"DB_NAME": notify_db, "NOTIFICATION_EMAIL": "ops@example.com",
                                          "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(free_port()),
                                          "BACKUP_MIN_KEEP": "5"})
    assert result.returncode == 0
    assert "notification failed" in result.stderr
    assert time.monotonic() - started < 60  # bounded retries


def test_a_backup_that_cannot_fit_is_refused_early(cluster, env, notify_db, tmp_path):
    from tests.conftest import Backupd

    make_database(cluster, "notify_big", rows=4000, payload=1024)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(tiny)], check=True)
    try:
        result = Backupd({**env, "BACKUP_DIR": str(tiny / "b")})("backup", extra_env={"DB_NAME": "notify_big"})
        assert result.returncode == 1 and "not enough free space" in result.stderr
        assert "pg_dump exited" not in result.stderr and "pg_dump:" not in result.stderr  # refused before dumping
    finally:
        subprocess.run(["umount", "-l", str(tiny)])


def test_the_dashboard_is_valid_and_names_only_metrics_backupd_serves(env, backupd, notify_db):
    backupd.ok("backup", extra_env={"DB_NAME": notify_db})
    backupd.ok("verify")
    dashboard = json.loads((REPO / "deploy/grafana/backupd.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    import re

    named = {m for expr in exprs for m in re.findall(r"backupd_[a-z_]+", expr)}
    daemon = RunningDaemon(env, DB_NAME=notify_db, REPLICATION_TARGETS="file:///tmp", VOLUME_PATHS="v=/tmp")
    try:
        text = daemon.get("/metrics")[1]
    finally:
        daemon.stop()
    # Every family has a TYPE line, samples or not; a counter's samples end in _total.
    families = re.findall(r"^# TYPE (backupd_[a-z_]+) (\w+)", text, flags=re.MULTILINE)
    served = {name + "_total" if kind == "counter" and not name.endswith("_total") else name
              for name, kind in families}
    # PITR's gauges are served only with PITR_ENABLED; test_fleet checks them against the code.
    assert named and {n for n in named if not n.startswith("backupd_pitr_")} <= served, named - served


def test_alert_rules_pass_their_unit_tests():
    result = subprocess.run(["promtool", "test", "rules", "alerts.test.yml"], cwd=REPO / "deploy/prometheus",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_fires_backup_too_old_for_an_old_backup(env, backupd, notify_db, tmp_path):
    backupd.at("-3d", "backup", extra_env={"DB_NAME": notify_db})
    daemon = RunningDaemon(env, DB_NAME=notify_db)
    rules = tmp_path / "alerts.yml"
    rules.write_text((REPO / "deploy/prometheus/alerts.yml").read_text().replace("for: 10m", "for: 0s"))
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{rules}']\n"
                      f"scrape_configs:\n  - job_name: backupd\n    static_configs:\n"
                      f"      - targets: ['127.0.0.1:{daemon.port}']\n")
    prometheus = subprocess.Popen([shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={config}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, firing = time.monotonic() + 90, []
        while time.monotonic() < deadline and not firing:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as response:
                    alerts = json.loads(response.read())["data"]["alerts"]
                firing = [a for a in alerts if a["labels"]["alertname"] == "BackupTooOld" and a["state"] == "firing"]
            except OSError:
                pass
            time.sleep(1)
        assert firing and firing[0]["labels"]["database"] == notify_db
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        daemon.stop()


def test_the_daemon_reports_a_failed_scheduled_job(env, notify_db, webhook):
    url, posts = webhook
    daemon = RunningDaemon(env, DB_NAME=notify_db, BACKUP_ON_START="true", DB_PORT=str(free_port()),
                           DB_WAIT_TIMEOUT="1s", NOTIFY_WEBHOOK_URL=url)
    try:
        daemon.wait_until(lambda: posts, what="the failure notification")
        assert posts[0][1]["severity"] == "failure"
        assert any(e["key"] == f"backup:{notify_db}" or e["key"] == "run" for e in posts[0][1]["events"])
    finally:
        daemon.stop()
