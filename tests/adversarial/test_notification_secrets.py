"""Notification URLs carry tokens (a bot token, a topic, a password, a key in the path or
the query). However a URL is given (NOTIFICATION_URLS, its _FILE form), whether it cannot
be parsed, is refused or is sent to, only its scheme and host are ever shown: never in
the start-up error, the logs (at debug level too: Apprise and urllib3 log whole URLs),
`backupd config`, `backupd notify test`, /status or /metrics."""

from __future__ import annotations

from tests.conftest import Backupd
from tests.integration.daemon_helpers import RunningDaemon
from tests.pg import free_port
from tests.receivers import http_recorder

TOKENS = ("usr-tok-1", "pwd-tok-2", "path-tok-3", "query-tok-4", "gotify-tok-5", "topic-tok-6", "bad-tok-7",
          "bad-tok-8", "bad-tok-9")


def _backupd(tmp_path) -> Backupd:
    return Backupd({"BACKUP_DIR": str(tmp_path / "b"), "LOG_FORMAT": "json", "LOG_LEVEL": "debug"})


def test_a_url_apprise_cannot_use_stops_the_start_naming_only_its_scheme(tmp_path):
    urls = ("json://127.0.0.1/path-tok-3 tgram://bad-tok-7/chat, zzz://bad-tok-8@example.com "
            "bad-tok-9")
    secret_file = tmp_path / "urls"
    secret_file.write_text(urls + "\n")
    for given in ({"NOTIFICATION_URLS": urls}, {"NOTIFICATION_URLS_FILE": str(secret_file)}):
        for verb in (("config",), ("notify", "test"), ("run",)):
            result = _backupd(tmp_path)(*verb, extra_env=given, timeout=60)
            assert result.returncode == 2, (verb, result.stderr)
            assert "NOTIFICATION_URLS" in result.stderr and "entry 2 (tgram://)" in result.stderr
            assert "entry 3 (zzz://)" in result.stderr and "entry 4 is not a URL" in result.stderr
            assert "Traceback" not in result.stderr
            assert not [t for t in TOKENS if t in result.stdout + result.stderr], result.stderr


def test_no_token_reaches_logs_config_notify_test_status_or_metrics(tmp_path):
    refused = free_port()
    with http_recorder() as http:
        urls = (f"json://usr-tok-1:pwd-tok-2@127.0.0.1:{refused}/path-tok-3?x=query-tok-4 "
                f"gotify://127.0.0.1:{refused}/gotify-tok-5, ntfy://127.0.0.1:{http.port}/topic-tok-6")
        env = {"NOTIFICATION_URLS": urls}
        backupd = _backupd(tmp_path)
        config = backupd.ok("config", extra_env=env)
        assert "NOTIFICATION_URLS=********" in config.stdout
        assert "# notification channels: json://127.0.0.1, gotify://127.0.0.1, ntfy://127.0.0.1" in config.stdout
        tested = backupd("notify", "test", extra_env=env, timeout=120)
        assert tested.returncode == 1
        assert tested.stdout.splitlines()[2] == "ntfy://127.0.0.1: ok"
        assert "Connection refused" in tested.stdout.splitlines()[0]
        daemon = RunningDaemon(backupd.env, BACKUP_ON_START="true", DB_PORT=str(free_port()),
                               DB_WAIT_TIMEOUT="1s", DB_NAME="shop", **env)
        try:
            daemon.wait_until(lambda: len(http.requests) >= 2, what="the failure on ntfy")
            counted = 'backupd_notifications_failed_total{channel="gotify"} 1.0'
            metrics = daemon.wait_until(lambda: counted in (text := daemon.get("/metrics")[1]) and text,
                                        timeout=30, what="the refusals counted")
            status = daemon.get("/status")[1] + daemon.get("/")[1]
        finally:
            daemon.stop()
    shown = {"config": config.stdout + config.stderr, "notify test": tested.stdout + tested.stderr,
             "daemon log": daemon.stderr, "/status": status, "/metrics": metrics}
    leaks = {where: [t for t in TOKENS if t in text] for where, text in shown.items()}
    assert not any(leaks.values()), leaks
    assert "notification failed" in daemon.stderr and "gotify://127.0.0.1" in daemon.stderr
