"""What a one-shot command loads before its work starts: ``backupd backup`` loads the
settings before its dump, so loading them must not import what only other jobs use (the
daemon's scheduler, the targets, Apprise, age, the actions). Checked by the modules a
fresh interpreter holds afterwards, which is deterministic; the time it takes is measured
by bench/startup.py, not here."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

# Everything the settings themselves are made of; nothing else of backupd's.
SETTINGS_MODULES = {"backupd", "backupd.errors", "backupd.redact", "backupd.settings", "backupd.settings_checks",
                    "backupd.settings_source"}
NOT_BEFORE_THE_DUMP = ("apscheduler", "psycopg", "apprise", "boto3", "structlog")


def loaded_after(code: str, environ: dict[str, str]) -> set[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO,
                         env={"PATH": "/usr/bin:/bin", **environ}, timeout=60).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_loading_the_default_settings_imports_only_the_settings():
    loaded = loaded_after("from backupd.settings import load_settings\nload_settings({'BACKUP_DIR': '/b'})", {})
    assert {m for m in loaded if m.split(".")[0] == "backupd"} == SETTINGS_MODULES
    assert not {m for m in loaded if m.split(".")[0] in NOT_BEFORE_THE_DUMP}


def test_settings_a_backup_does_not_use_are_checked_without_loading_the_actions():
    environ = {"BACKUP_DIR": "/b", "VOLUME_PATHS": "data=/srv/data", "REPLICATION_TARGETS": "file:///mnt/copy"}
    loaded = loaded_after(f"from backupd.settings import load_settings\nload_settings({environ!r})", {})
    assert not {m for m in loaded if m.startswith("backupd.actions")}
    assert not {m for m in loaded if m.split(".")[0] in ("psycopg", "apprise", "boto3")}


def test_the_command_line_is_parsed_before_anything_heavy_is_imported():
    code = ("from backupd.cli_parser import build_parser, ids_as_positionals\n"
            "parser = build_parser()\n"
            "parser.parse_args(ids_as_positionals(parser, ['backup', '--database', 'app', '--label', 'x']))")
    loaded = loaded_after(code, {})
    assert not {m for m in loaded if m.split(".")[0] in ("pydantic", "pydantic_settings", *NOT_BEFORE_THE_DUMP)}
