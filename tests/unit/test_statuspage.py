"""The status page's HTML, as pure rendering: every value from the repository is escaped,
an empty repository still renders, and colour is never the only signal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backupd.statuspage import login_form, render

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
EVIL = '"><img src=x onerror=alert(1)>'


def view(**overrides):
    base = {"now": NOW, "health": {"status": "ok", "warnings": []}, "databases": [], "volumes": [],
            "targets": [], "jobs": {}, "title": "ok", "version": "0.1.0"}
    return {**base, **overrides}


def test_an_empty_repository_renders_with_a_green_headline():
    page = render(view())
    assert "✔ All backups are fine" in page and "No backups yet." in page
    assert "<script" not in page


def test_every_value_from_the_repository_is_escaped():
    database = {"name": EVIL, "anchor": "00", "count": 1, "targets": [f"s3://b/{EVIL}"],
                "newest": {"id": f"{EVIL}-20261123T020000Z", "time": NOW - timedelta(hours=10), "size": 10,
                           "duration": 1.0, "replicas": [], "damaged": EVIL},
                "verification": {"result": "failed", "time": NOW, "reason": EVIL, "id": EVIL},
                "failure": {"time": NOW, "error": EVIL},
                "history": [{"time": NOW - timedelta(hours=10), "size": 10, "duration": 1.0}]}
    page = render(view(health={"status": "unhealthy", "reasons": [EVIL], "warnings": [EVIL]},
                       databases=[database], volumes=[{"name": EVIL, "time": NOW, "size": 5}],
                       targets=[{"url": EVIL, "ok": False, "time": NOW, "error": EVIL,
                                 "refused": [{"id": EVIL, "reason": EVIL}]}],
                       jobs={"backup": {"schedule": EVIL, "next_run": NOW, "running": False}}))
    assert "<img" not in page and "onerror=alert(1)>" not in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "✖ Backups need attention" in page and "10 hours ago" in page


def test_warnings_turn_the_headline_amber_with_a_symbol():
    page = render(view(health={"status": "ok", "warnings": ["disk almost full"]}))
    assert "⚠ Backups are fine, with warnings" in page and "⚠ disk almost full" in page


def test_the_login_form_posts_the_token_and_says_when_it_was_wrong():
    assert 'action="/login"' in login_form() and "not right" not in login_form()
    assert "✖ That token is not right." in login_form(failed=True)


def test_a_repository_that_cannot_be_read_is_a_red_headline_not_an_error(tmp_path):
    from backupd.daemon import Daemon
    from backupd.settings import load_settings

    (tmp_path / "file").write_text("")
    daemon = Daemon(load_settings({"BACKUP_DIR": str(tmp_path / "file" / "backups"), "DB_PORT": "1"}))
    page = render(daemon.page_view())
    assert "✖ Backups need attention" in page and "the backup repository cannot be read" in page
    status = daemon.status()  # /status answers too (it was a 500), saying why in "health"
    assert status["databases"] == {} and any("cannot be read" in r for r in status["health"]["reasons"])


def test_target_credentials_never_reach_the_page_and_names_in_commands_are_quoted(tmp_path):
    from backupd.daemon import Daemon
    from backupd.settings import load_settings

    settings = load_settings({"BACKUP_DIR": str(tmp_path), "DB_PORT": "1",
                              "REPLICATION_TARGETS": "s3://AKIAEXAMPLE:topsecret@bucket/prefix"})
    page = render(Daemon(settings).page_view())
    assert "topsecret" not in page
    database = {"name": "x; curl evil|sh", "anchor": "01", "count": 0, "targets": [], "history": [],
                "failure": {"time": NOW, "error": "boom"}}
    page = render(view(databases=[database]))
    assert "backupd list --database &#x27;x; curl evil|sh&#x27;" in page


def test_times_are_shown_in_utc_whatever_the_schedule_timezone():
    from zoneinfo import ZoneInfo

    berlin = datetime(2026, 11, 24, 2, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    page = render(view(jobs={"backup": {"schedule": "0 2 * * *", "next_run": berlin}}))
    assert "2026-11-24 01:00 UTC" in page


def test_a_failed_verification_and_a_failed_volume_archive_say_what_to_run():
    database = {"name": "shop", "anchor": "02", "count": 1, "targets": [], "history": [],
                "newest": {"id": "shop-20261123T020000Z", "time": NOW, "size": 10, "duration": 1.0,
                           "replicas": [], "damaged": None},
                "verification": {"result": "failed", "time": NOW, "reason": "row counts differ"}}
    volume = {"name": "uploads", "time": None, "size": None, "failure": {"time": NOW, "error": "tar failed"}}
    page = render(view(databases=[database], volumes=[volume]))
    assert "✖ failed 2026-11-23 12:00 UTC" in page and "row counts differ" in page
    assert "backupd verify latest --database shop" in page
    assert "tar failed" in page and "backupd volumes backup --volume uploads" in page and "never" in page


def test_the_pitr_section_shows_the_window_the_stream_and_the_drill():
    from backupd.statuspage import _pitr

    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    html = _pitr({"window": {"start": "2026-11-22T03:00:41Z", "end": "2026-11-29T11:59:58Z"},
                  "receiver": {"streaming": False, "down_since": "2026-11-29T11:50:00Z", "lag_bytes": 16777216,
                               "error": "pg_receivewal ended: <no pg_hba.conf entry>"},
                  "base_backups": [{"stop_time": "2026-11-29T03:00:38Z", "size": 412_000_000}],
                  "last_drill": {"time": "2026-11-29T03:10:00Z", "ok": False, "reason": "WAL is missing"},
                  "gaps": []}, now)
    assert "2026-11-22 03:00 UTC to 2026-11-29 11:59 UTC" in html
    assert "down since 2026-11-29 11:50 UTC" in html and "16.8 MB behind" in html
    assert "&lt;no pg_hba.conf entry&gt;" in html  # escaped
    assert "8 hours ago" in html and "failed 2026-11-29 03:10 UTC: WAL is missing" in html
    assert _pitr(None, now) == ""
