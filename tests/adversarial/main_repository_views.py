"""What backupd shows of a repository, gathered in one process: ``list --json``, ``volumes
list --json``, ``prune --dry-run``, ``pitr status --json`` and the daemon's ``/status``.
Run by the fixture's generator under the release that wrote the fixture (its answers are
kept beside it), and by the test under this code: both must read the fixture the same.
Only what depends on the clock at the time of reading is left out."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any
from unittest import mock

# Fields whose value is the reader's clock, or a daemon that has only just been made
# (nothing scheduled has run in it): not what the repository holds.
VOLATILE = {"age_seconds", "now", "uptime_seconds", "next", "next_run", "next_runs", "started", "scheduler",
            "jobs", "running", "version", "backupd_version", "clients", "lag_seconds", "checked", "receiver",
            "slot", "server", "generated", "postgresql"}


def _cli(*argv: str) -> tuple[int, str]:
    from backupd import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(list(argv))
    return code, out.getvalue()


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def views(backup_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """Each view of ``backup_dir`` as (exit code, what it printed, decoded when JSON)."""
    from backupd.daemon import Daemon
    from backupd.settings import load_settings

    shown: dict[str, Any] = {}
    with mock.patch.dict(os.environ, {**env, "BACKUP_DIR": str(backup_dir)}), \
            mock.patch("backupd.pgtools.summary", return_value={"installed": [], "servers": []}):
        for name, argv in {"list": ("list", "--json"), "volumes": ("volumes", "list", "--json"),
                           "prune": ("prune", "--dry-run"), "pitr status": ("pitr", "status", "--json")}.items():
            code, out = _cli(*argv)
            shown[name] = [code, _decoded(out)]
        shown["/status"] = [0, Daemon(load_settings()).status()]
    # Where the copy being read lies is no part of what it holds.
    return json.loads(json.dumps(without_volatile(shown), default=str).replace(str(backup_dir), "$BACKUP_DIR"))
