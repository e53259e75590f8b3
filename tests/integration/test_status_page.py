"""The status page at ``/``, in a real browser: Debian's Chromium, headless, loads it from a
daemon with real backups, a verification, a replica, one failure and a database whose name
is an HTML tag; the DOM it renders is checked, and screenshots at 375 px and 1280 px are
kept in test-artifacts/. The token flow and the security headers are checked over HTTP."""

from __future__ import annotations

import http.client
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from psycopg import sql

from tests.conftest import REPO
from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import make_database

SHOP = "page_shop"
TAGGED = "<script>alert(1)</script>"
ARTIFACTS = REPO / "test-artifacts"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars"]


def chromium(*args: str, timeout: float = 90) -> str:
    """Run the browser once, in a profile of its own; returns what it printed (the DOM)."""
    browser = shutil.which("chromium")
    assert browser, "chromium is installed by scripts/bootstrap"
    with tempfile.TemporaryDirectory(prefix="backupd-chromium-") as profile:
        result = subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
                                capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]


@pytest.fixture(scope="module")
def databases(cluster):
    make_database(cluster, SHOP, rows=500)
    make_database(cluster, TAGGED, rows=10)
    yield
    with cluster.connect() as admin:
        for name in (SHOP, TAGGED):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def repository(backupd, env, tmp_path, databases):
    """Two backups of the shop (one verified, both copied to a folder target), one of the
    tagged database, and a failed run for a database that does not exist."""
    offsite = tmp_path / "offsite"
    offsite.mkdir()
    setup = {"DB_NAME": f"{SHOP},{TAGGED}", "BACKUP_GLOBALS": "false", "REPLICATION_TARGETS": offsite.as_uri()}
    backupd.ok("backup", extra_env=setup)
    backupd.ok("backup", extra_env={**setup, "DB_NAME": SHOP})
    backupd.ok("verify", "latest", "--database", SHOP, extra_env=setup)
    backupd.ok("replicate", extra_env=setup)
    failed = backupd("backup", extra_env={**setup, "DB_NAME": "page_gone"})
    assert failed.returncode == 1
    return {**env, **setup}


def test_the_page_shows_backups_verification_copies_and_the_failure_in_a_real_browser(repository):
    daemon = RunningDaemon(repository)
    try:
        dom = chromium("--dump-dom", daemon.url("/"))
        # The headline answers the question first, in words as well as colour.
        assert "Backups need attention" in dom  # the failed run of page_gone
        assert "✖" in dom
        # At a glance: one row per database, failed ones marked.
        assert "At a glance" in dom and "✖ failed" in dom
        # Each database: its newest backup, the proof it restores, its copies, its history.
        assert f"Database <code>{SHOP}</code>" in dom
        assert "✔ passed" in dom and f"(backup {SHOP}-" in dom
        assert f"confirmed on {Path(repository['REPLICATION_TARGETS'][7:]).as_uri()}" in dom
        assert "Size and duration of the kept backups of page_shop" in dom
        assert "<svg" in dom and "<table>" in dom and "<h2" in dom
        # The failure: what, and what to run to see more.
        assert "Last run failed" in dom and "page_gone" in dom
        assert "docker compose logs backup" in dom
        assert "docker compose exec backup backupd list --database page_gone" in dom
        # A database name is data, never markup: shown as text, no script element anywhere.
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
        assert "<script" not in dom.lower()
        # Next runs and the page's own refresh.
        assert "Next backup" in dom and 'http-equiv="refresh"' in dom

        ARTIFACTS.mkdir(exist_ok=True)
        for width in (375, 1280):
            shot = ARTIFACTS / f"status-page-{width}.png"
            shot.unlink(missing_ok=True)
            chromium(f"--screenshot={shot}", f"--window-size={width},1800", daemon.url("/"))
            assert png_width(shot) == width and shot.stat().st_size > 10_000
    finally:
        daemon.stop()


def request(daemon: RunningDaemon, method: str, path: str, body: str | None = None,
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    response.read()
    return response


def test_with_a_token_the_page_needs_a_login_or_a_link_and_healthz_stays_open(env, tmp_path):
    token = "page-token-Zq8"
    daemon = RunningDaemon({**env, "HTTP_AUTH_TOKEN": token})
    try:
        assert request(daemon, "GET", "/").status == 401  # the login form
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert request(daemon, "POST", "/login", "token=wrong", form).status == 401
        signed_in = request(daemon, "POST", "/login", f"token={token}", form)
        assert signed_in.status == 303 and signed_in.getheader("Location") == "/"
        cookie = signed_in.getheader("Set-Cookie")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
        session = cookie.split(";")[0]
        assert request(daemon, "GET", "/", headers={"Cookie": session}).status == 200
        # Another app's cookie on the same host (JSON, unparsable for http.cookies) does not hide ours.
        assert request(daemon, "GET", "/", headers={"Cookie": f'app={{"x":1}}; {session}'}).status == 200
        assert request(daemon, "GET", "/status", headers={"Cookie": session}).status == 200  # the page's links
        assert request(daemon, "GET", "/", headers={"Cookie": session.split("=")[0] + "=forged"}).status == 401
        assert request(daemon, "GET", "/", headers={"Authorization": f"Bearer {token}"}).status == 200
        # A link with the token sets the cookie and sends the browser on without it in the address.
        linked = request(daemon, "GET", f"/?token={token}")
        assert linked.status == 303 and linked.getheader("Location") == "/"
        assert request(daemon, "GET", "/?token=wrong").status == 401
        assert request(daemon, "GET", "/healthz").status in (200, 503)  # open, whatever it says
        assert request(daemon, "GET", "/status").status == 401
        assert request(daemon, "POST", "/login", "x" * 10_000, form).status == 413
        # The same link in a real browser ends on the page itself.
        dom = chromium("--dump-dom", daemon.url(f"/?token={token}"))
        assert "backupd" in dom and ("All backups are fine" in dom or "Backups need attention" in dom
                                     or "Backups are fine, with warnings" in dom)
    finally:
        daemon.stop()


def test_the_page_is_read_only_and_sends_its_security_headers(env):
    daemon = RunningDaemon(env)
    try:
        page = request(daemon, "GET", "/")
        assert page.status == 200 and page.getheader("Content-Type") == "text/html; charset=utf-8"
        policy = page.getheader("Content-Security-Policy")
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert page.getheader("X-Content-Type-Options") == "nosniff"
        assert page.getheader("Referrer-Policy") == "no-referrer"
        assert request(daemon, "POST", "/").status == 404  # nothing to change through it
        assert request(daemon, "HEAD", "/").status == 200
    finally:
        daemon.stop()
