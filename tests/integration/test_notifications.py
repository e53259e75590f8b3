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
from tests.receivers import http_recorder, smtp_sink


@pytest.fixture(scope="module")
def notify_db(cluster):
    make_database(cluster, "notify_db", rows=500)
    return "notify_db"


@pytest.fixture
def smtp(tmp_path):
    with smtp_sink(tmp_path) as sink:
        yield sink


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
    assert recipients == ["ops@example.com"] and "Subject: [backupd] failure on " in content
    assert posts[0][0] == "/hooks/secret-token-123"
    assert posts[0][1]["severity"] == "failure" and "text" in posts[0][1]
    assert cluster.password not in content and cluster.password not in json.dumps(posts)
    assert "secret-token-123" not in failed.stdout + failed.stderr

    backupd.ok("backup", extra_env=env)
    assert len(mails) == 2 and "Subject: [backupd] recovery on " in mails[1][1]
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


def test_notify_test_reaches_every_kind_of_receiver(tmp_path, smtp):
    """Apprise's json://, form://, ntfy:// and gotify:// to a local server, the webhook and
    the e-mail settings: one line per channel, and each receiver got the test message."""
    from tests.conftest import Backupd

    mail_env, mails = smtp
    with http_recorder() as http:
        host = f"127.0.0.1:{http.port}"
        urls = (f"json://{host}/json-tok-111, form://{host}/form-tok-222 "
                f"ntfy://{host}/topic-tok-333,gotify://{host}/GotifyTok444")
        result = Backupd({"BACKUP_DIR": str(tmp_path / "b"), "LOG_FORMAT": "json"})(
            "notify", "test", timeout=60, extra_env={**mail_env, "NOTIFICATION_URLS": urls,
                                                     "NOTIFY_WEBHOOK_URL": f"http://{host}/hooks/hook-tok-555"})
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            "mailto://127.0.0.1: ok", "http://127.0.0.1: ok", "json://127.0.0.1: ok", "form://127.0.0.1: ok",
            "ntfy://127.0.0.1: ok", "gotify://127.0.0.1: ok"]
        (json_post,), (form_post,) = http.at("/json-tok-111"), http.at("/form-tok-222")
        (ntfy_post,), (gotify_post,), (hook_post,) = http.at("/"), http.at("/message"), http.at("/hooks/hook-tok-555")
    assert json_post.json()["title"].startswith("[backupd] success on ") and json_post.json()["type"] == "success"
    assert "a test message" in json_post.json()["message"]
    assert "a test message" in form_post.form()["message"]
    assert ntfy_post.json()["topic"] == "topic-tok-333" and "a test message" in ntfy_post.json()["message"]
    assert gotify_post.headers["X-Gotify-Key"] == "GotifyTok444" and "a test message" in gotify_post.json()["message"]
    assert hook_post.json()["severity"] == "success" and "a test message" in hook_post.json()["text"]
    assert len(mails) == 1 and mails[0][0] == ["ops@example.com"] and "a test message" in mails[0][1]
    for token in ("tok-111", "tok-222", "tok-333", "Tok444", "tok-555"):
        assert token not in result.stdout + result.stderr


def test_notify_test_without_channels_is_a_usage_error(tmp_path):
    from tests.conftest import Backupd

    result = Backupd({"BACKUP_DIR": str(tmp_path / "b")})("notify", "test", timeout=60)
    assert result.returncode == 2 and "no notification channel is configured" in result.stderr
    assert "Traceback" not in result.stderr


def test_failure_names_instance_database_since_and_command_then_recovery_says_how_long(
        backupd, notify_db, tmp_path):
    with http_recorder() as http:
        env = {"NOTIFICATION_URLS": f"json://127.0.0.1:{http.port}/tok", "DB_NAME": notify_db,
               "BACKUP_INSTANCE": "shop-stack"}
        backupd.at("-2h", "backup", check=False,
                   extra_env={**env, "DB_PORT": str(free_port()), "DB_WAIT_TIMEOUT": "1s"})
        backupd.ok("backup", extra_env=env)
        failure, recovery = (r.json() for r in http.at("/tok"))
    import socket

    instance = "shop-stack" if "shop-stack" in failure["title"] else socket.gethostname()
    assert failure["title"].startswith(f"[backupd] failure on {instance}: ") and failure["type"] == "failure"
    assert notify_db in failure["message"] and "FAILURE since " in failure["message"]
    assert f"more: backupd list --database={notify_db}" in failure["message"]
    assert recovery["type"] == "success" and "RECOVERED after 2.0h" in recovery["message"]


def test_a_refused_channel_stops_nothing_and_is_counted(tmp_path):
    """The daemon's first backup fails: ntfy is refused (nothing listens), json:// and the
    webhook still get the failure, and the refusal is counted by scheme."""
    with http_recorder() as http:
        daemon = RunningDaemon({"BACKUP_DIR": str(tmp_path / "b"), "LOG_FORMAT": "json"}, BACKUP_ON_START="true",
                               DB_PORT=str(free_port()), DB_WAIT_TIMEOUT="1s", DB_NAME="shop",
                               NOTIFICATION_URLS=f"ntfy://127.0.0.1:{free_port()}/t json://127.0.0.1:{http.port}/j",
                               NOTIFY_WEBHOOK_URL=f"http://127.0.0.1:{http.port}/w")
        try:
            daemon.wait_until(lambda: http.at("/j") and http.at("/w"), what="the failure on json:// and the webhook")
            counted = 'backupd_notifications_failed_total{channel="ntfy"} 1.0'
            metrics = daemon.wait_until(lambda: counted in (text := daemon.get("/metrics")[1]) and text,
                                        timeout=30, what="the refusal counted")
        finally:
            daemon.stop()
    assert 'backupd_notifications_failed_total{channel="json"} 0.0' in metrics
    assert 'backupd_notifications_failed_total{channel="http"} 0.0' in metrics
    assert http.at("/j")[0].json()["type"] == "failure"
    assert '"notification failed"' in daemon.stderr and "ntfy://127.0.0.1" in daemon.stderr
