"""Settings: defaults, libpq fallbacks, *_FILE, and every problem reported at once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from backupd.errors import ConfigError
from backupd.settings import load_settings, parse_duration


def test_defaults_follow_the_interface():
    s = load_settings({})
    assert (s.db_host, s.db_port, s.db_user, s.db_name, s.db_sslmode) == ("localhost", 5432, "postgres", "all", "prefer")
    assert s.databases is None
    assert (s.backup_format, s.backup_compression, s.backup_schedule) == ("custom", "zstd", "0 2 * * *")
    assert s.backup_lock_wait_timeout == 300 and s.backup_timeout == 6 * 3600 and s.db_wait_timeout == 60
    assert s.backup_globals is True and s.backup_row_counts == "exact"
    assert str(s.pg_bindir) == "/usr/lib/postgresql"


@pytest.mark.parametrize("value", ["", "usr/lib/postgresql", "./pg"])
def test_the_tools_folder_must_be_an_absolute_path(value):
    with pytest.raises(ConfigError) as err:
        load_settings({"PG_BINDIR": value})
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("PG_BINDIR")


def test_libpq_variables_are_fallbacks_and_db_variables_win():
    s = load_settings({"PGHOST": "pg", "PGPORT": "6543", "PGUSER": "u", "PGPASSWORD": "p", "PGDATABASE": "a,b",
                       "DB_HOST": "db"})
    assert (s.db_host, s.db_port, s.db_user, s.password) == ("db", 6543, "u", "p")
    assert s.databases == ("a", "b")


def test_file_variants_are_read_and_stripped(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert load_settings({"DB_PASSWORD_FILE": str(secret)}).password == "s3cret"
    assert load_settings({"PGPASSWORD_FILE": str(secret)}).password == "s3cret"


def test_both_a_variable_and_its_file_is_an_error(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("x")
    with pytest.raises(ConfigError) as err:
        load_settings({"DB_PASSWORD": "x", "DB_PASSWORD_FILE": str(secret)})
    assert err.value.problems == ["DB_PASSWORD: both DB_PASSWORD and DB_PASSWORD_FILE are set; give only one"]


def test_every_problem_is_reported_at_once_naming_its_variable():
    with pytest.raises(ConfigError) as err:
        load_settings({"BACKUP_FORMAT": "zip", "DB_PORT": "0", "BACKUP_TIMEOUT": "soon", "BACKUP_SCHEDULE": "* *",
                       "BACKUP_TIMEZONE": "Mars/Base", "DB_PASSWORD_FILE": "/does/not/exist",
                       "BACKUP_EXTRA_OPTS": "--file=/tmp/x"})
    problems = err.value.problems
    assert len(problems) == 7
    for name in ("BACKUP_FORMAT", "DB_PORT", "BACKUP_TIMEOUT", "BACKUP_SCHEDULE", "BACKUP_TIMEZONE",
                 "DB_PASSWORD_FILE", "BACKUP_EXTRA_OPTS"):
        assert any(p.startswith(name) for p in problems), name


def test_compression_level_is_checked_against_the_compressor():
    assert load_settings({"BACKUP_COMPRESSION": "zstd", "BACKUP_COMPRESSION_LEVEL": "19"}).backup_compression_level == 19
    with pytest.raises(ConfigError) as err:
        load_settings({"BACKUP_COMPRESSION": "gzip", "BACKUP_COMPRESSION_LEVEL": "12"})
    assert "BACKUP_COMPRESSION_LEVEL" in err.value.problems[0]


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("15m", 900), ("26h", 93600), ("7d", 604800), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("opts", ["-f x", "--file=x", "-Fp", "--format=plain", "-Z9", "--jobs=3", "--snapshot=x", "-d other", "'unterminated"])
def test_extra_options_may_not_change_the_output(opts):
    with pytest.raises(ConfigError) as err:
        load_settings({"BACKUP_EXTRA_OPTS": opts})
    assert err.value.problems[0].startswith("BACKUP_EXTRA_OPTS")


def test_harmless_extra_options_are_split_without_a_shell():
    s = load_settings({"BACKUP_EXTRA_OPTS": "--exclude-table-data='big table' --no-comments"})
    assert s.extra_dump_args == ["--exclude-table-data=big table", "--no-comments"]


def test_secrets_are_masked_in_errors_and_in_the_effective_configuration():
    shown = load_settings({"DB_PASSWORD": "hunter2"}).effective()
    assert shown["DB_PASSWORD"] == "********"
    assert "hunter2" not in repr(shown)


@hsettings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["DB_PORT", "BACKUP_FORMAT", "BACKUP_TIMEOUT", "BACKUP_JOBS", "DB_NAME",
                                        "BACKUP_COMPRESSION_LEVEL", "BACKUP_SCHEDULE", "BACKUP_TIMEZONE",
                                        "BACKUP_EXTRA_OPTS", "BACKUP_ON_START", "LOG_LEVEL", "NOTIFICATION_URLS"]),
                       st.text(max_size=20)))
def test_any_environment_either_loads_or_raises_a_config_error(environ):
    try:
        load_settings(environ)
    except ConfigError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)


@pytest.mark.parametrize("environ, variable", [
    ({"BACKUP_DIR": "/"}, "BACKUP_DIR"),
    ({"BACKUP_DIR": "/tmp/.."}, "BACKUP_DIR"),
    ({"BACKUP_TIMEOUT": "0"}, "BACKUP_TIMEOUT"),
    ({"BACKUP_TIMEOUT": "9999999999999d"}, "BACKUP_TIMEOUT"),
    ({"DB_WAIT_TIMEOUT": "99999999999999999999"}, "DB_WAIT_TIMEOUT"),
    ({"BACKUP_RETENTION_DAYS": "99999999999"}, "BACKUP_RETENTION_DAYS"),
    ({"DB_PASSWORD_FILE": "/dev/zero"}, "DB_PASSWORD_FILE"),
    ({"NOTIFICATION_URLS": "tgram://not-a-bot-token"}, "NOTIFICATION_URLS"),
    ({"NOTIFICATION_EMAIL": "ops", "SMTP_HOST": "mail.example.com"}, "NOTIFICATION_EMAIL"),
    ({"NOTIFICATION_EMAIL": "ops@example.com", "SMTP_HOST": "mail.example.com", "SMTP_FROM": "me"}, "SMTP_FROM"),
])
def test_values_that_would_overflow_hang_or_fail_every_run_stop_the_start(environ, variable):
    with pytest.raises(ConfigError) as err:
        load_settings(environ)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(variable)
