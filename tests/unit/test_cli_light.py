"""The light paths of the command line: --help and the health check load neither psycopg,
pydantic nor structlog (the Docker health check runs every 30 s)."""

from __future__ import annotations

import json
import subprocess
import sys

from backupd.cli import health_check
from tests.pg import free_port


def test_help_and_health_import_no_heavy_module():
    probe = ("import sys\nfrom backupd import cli\n"
             "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('psycopg', 'pydantic', 'structlog') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_health_asks_the_daemon_and_says_when_it_does_not_answer(capsys):
    port = free_port()
    assert health_check({"HTTP_HOST": "0.0.0.0", "HTTP_PORT": str(port)}) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "unhealthy" and f"127.0.0.1:{port}" in answer["reasons"][0]


def test_health_with_a_bad_port_is_a_configuration_error(capsys):
    assert health_check({"HTTP_PORT": "http"}) == 2
    assert "HTTP_PORT='http'" in capsys.readouterr().err
