from datetime import datetime, timedelta, timezone
from pathlib import Path

from backupd import failures
from backupd.health import describe_age, evaluate, max_age
from backupd.repository import Repository
from backupd.schedule import longest_gap, previous_run
from backupd.settings import load_settings

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


def test_gaps_of_even_and_uneven_schedules():
    assert longest_gap("0 2 * * *", "UTC", NOW) == timedelta(days=1)
    assert longest_gap("0 2 * * 1-5", "UTC", NOW) == timedelta(days=3)  # Friday to Monday
    assert longest_gap("*/15 * * * *", "UTC", NOW) == timedelta(minutes=15)
    # Monthly and yearly schedules: HEALTH_MAX_AGE is twice their real gap, not two days.
    assert longest_gap("0 2 1 * *", "UTC", NOW) == timedelta(days=31)
    assert longest_gap("0 2 31 * *", "UTC", NOW) == timedelta(days=61)  # only months with a 31st
    assert longest_gap("0 0 1 1 *", "UTC", NOW) in (timedelta(days=365), timedelta(days=366))


def test_previous_run_is_the_scheduled_time_whatever_the_clock_skew():
    for skew in (0, 1, 7, 59):
        assert previous_run("*/5 * * * *", "UTC", NOW + timedelta(seconds=skew), timedelta(hours=1)) == NOW
    assert previous_run("0 2 * * *", "UTC", NOW, timedelta(hours=1)) is None  # 02:00 is beyond the grace


def test_schedules_are_read_in_the_configured_timezone_across_dst():
    # 02:30 Europe/Berlin does not exist on 2026-03-29; the next day it is 00:30 UTC again.
    after = datetime(2026, 3, 27, 12, 0, tzinfo=timezone.utc)
    gap = longest_gap("30 2 * * *", "Europe/Berlin", after)
    assert timedelta(hours=23) <= gap <= timedelta(hours=48)


def test_health_max_age_defaults_to_twice_the_schedule_gap():
    assert max_age(load_settings({}), NOW) == timedelta(days=2)
    assert max_age(load_settings({"HEALTH_MAX_AGE": "26h"}), NOW) == timedelta(hours=26)


def test_an_empty_repository_is_healthy_until_the_first_backup_is_due_plus_the_margin(tmp_path: Path):
    settings = load_settings({"BACKUP_DIR": str(tmp_path)})
    repo = Repository(tmp_path)
    started = NOW
    assert evaluate(settings, repo, NOW + timedelta(days=2), started).healthy
    late = evaluate(settings, repo, NOW + timedelta(days=3, hours=1), started)
    assert not late.healthy and "no backup yet" in late.reasons[0]
    assert not evaluate(settings, repo, NOW, started, scheduler_running=False).healthy


def test_a_recorded_failure_is_unhealthy_until_cleared(tmp_path: Path):
    settings = load_settings({"BACKUP_DIR": str(tmp_path)})
    repo = Repository(tmp_path)
    failures.record(tmp_path, failures.database("shop"), "pg_dump exited with 1: boom")
    health = evaluate(settings, repo, NOW, NOW)
    assert health.reasons and "'shop'" in health.reasons[0] and "boom" in health.reasons[0]
    failures.clear(tmp_path, failures.database("shop"))
    assert evaluate(settings, repo, NOW, NOW).healthy


def test_ages_read_well():
    assert [describe_age(timedelta(seconds=s)) for s in (5, 600, 3 * 3600, 3 * 86400)] == ["5s", "10m", "3.0h", "3.0d"]
