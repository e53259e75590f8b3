"""age encryption at rest, and no secret in any process's arguments."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from psycopg import sql

from tests.content import AWKWARD_DB, create_awkward_database, fingerprint
from tests.integration.helpers import make_database, start_backupd, table_locked
from tests.servers import start_sshd


@pytest.fixture(scope="module")
def content(cluster):
    create_awkward_database(cluster)
    return fingerprint(cluster, AWKWARD_DB)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """kind -> (recipient, identity)"""
    folder = tmp_path_factory.mktemp("keys")
    subprocess.run(["age-keygen", "-o", str(folder / "age.txt")], check=True, capture_output=True)
    age_identity = (folder / "age.txt").read_text()
    age_recipient = subprocess.run(["age-keygen", "-y", str(folder / "age.txt")], check=True, capture_output=True,
                                   text=True).stdout.strip()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "backup key", "-f", str(folder / "ssh")],
                   check=True)
    return {"x25519": (age_recipient, age_identity),
            "ssh": ((folder / "ssh.pub").read_text().strip(), (folder / "ssh").read_text())}


def drop(cluster, name):
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.parametrize("kind", ["x25519", "ssh"])
@pytest.mark.parametrize("fmt", ["custom", "directory", "tar", "plain"])
def test_encrypted_round_trip(cluster, backupd, backup_dir, tmp_path, content, keys, fmt, kind):
    recipient, identity = keys[kind]
    backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB, "BACKUP_FORMAT": fmt,
                                    "BACKUP_ENCRYPTION_RECIPIENTS": recipient})
    stored = [p for p in backup_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
              and not p.name.endswith(".json")]
    assert stored and all(p.name.endswith(".zst.age") for p in stored)  # the roles dump too
    (manifest_path,) = (backup_dir / AWKWARD_DB).glob("*Z.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["encryption"] == {"tool": "age", "recipients": [recipient]}
    assert identity.strip() not in manifest_path.read_text()
    assert any(t["rows"] == 2000 for t in manifest["tables"])  # read before encryption
    key_file = tmp_path / "identity"
    key_file.write_text(identity)
    backupd.ok("restore", "latest", "--database", AWKWARD_DB, "--into", "decrypted",
               extra_env={"BACKUP_ENCRYPTION_IDENTITY_FILE": str(key_file)})
    try:
        assert fingerprint(cluster, "decrypted") == content
    finally:
        drop(cluster, "decrypted")


def test_without_the_identity_verify_checks_the_checksum_only(backupd, content, keys):
    recipient, identity = keys["x25519"]
    backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB, "BACKUP_ENCRYPTION_RECIPIENTS": recipient})
    result = backupd.ok("verify")
    assert result.stdout.count("unverifiable") == 2  # the backup and its roles dump: a warning, exit 0
    assert "passed" in backupd.ok("verify", extra_env={"BACKUP_ENCRYPTION_IDENTITY": identity}).stdout


def test_a_missing_or_wrong_identity_fails_clearly(cluster, backupd, content, keys):
    recipient, _ = keys["x25519"]
    backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB, "BACKUP_ENCRYPTION_RECIPIENTS": recipient})
    missing = backupd("restore", "latest", "--database", AWKWARD_DB, "--into", "never")
    assert missing.returncode == 2 and "needs BACKUP_ENCRYPTION_IDENTITY" in missing.stderr
    wrong = backupd("restore", "latest", "--database", AWKWARD_DB, "--into", "never",
                    extra_env={"BACKUP_ENCRYPTION_IDENTITY": keys["ssh"][1]})
    assert wrong.returncode == 1 and "no identity matched" in wrong.stderr
    assert keys["ssh"][1].strip().splitlines()[1] not in wrong.stderr
    with cluster.connect() as admin:
        assert not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'never'").fetchone()


def test_manual_decryption_with_the_standard_tools(cluster, backupd, backup_dir, tmp_path, content, keys):
    """The recipe of docs/storage-layout.md: age -d -i key.txt X.dump.zst.age | zstd -d | pg_restore -d mydb"""
    recipient, identity = keys["x25519"]
    backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB, "BACKUP_ENCRYPTION_RECIPIENTS": recipient,
                                    "BACKUP_GLOBALS": "false"})
    (stored,) = backup_dir.rglob("*.dump.zst.age")
    (tmp_path / "key.txt").write_text(identity)
    with cluster.connect() as admin:
        admin.execute('CREATE DATABASE "mydb"')
    try:
        subprocess.run(f"age -d -i key.txt '{stored}' | zstd -d | pg_restore --exit-on-error -h {cluster.host} "
                       f"-p {cluster.port} -U {cluster.user} -d mydb", shell=True, check=True, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "PGPASSWORD": cluster.password})
        assert fingerprint(cluster, "mydb")["data"] == content["data"]
    finally:
        drop(cluster, "mydb")


def test_no_secret_reaches_any_process_arguments(cluster, env, backupd, backup_dir, tmp_path, keys):
    """While a backup, an rsync replication and an encrypted restore run, no argv holds a secret."""
    recipient, identity = keys["x25519"]
    make_database(cluster, "secret_db", rows=40000, payload=512)
    sshd = start_sshd()
    try:
        encrypted = {**env, "DB_NAME": "secret_db", "BACKUP_ENCRYPTION_RECIPIENTS": recipient,
                     "BACKUP_ENCRYPTION_IDENTITY": identity, **sshd.env(tmp_path / "offsite"),
                     "AWS_SECRET_ACCESS_KEY": "aws-secret-never-shown", "HTTP_AUTH_TOKEN": "token-never-shown"}
        backupd.ok("backup", extra_env=encrypted)
        secrets = [cluster.password, "aws-secret-never-shown", "token-never-shown",
                   *[line for line in identity.splitlines() if line.startswith("AGE-SECRET-KEY")]]
        seen: set[str] = set()
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                for entry in Path("/proc").iterdir():
                    if entry.name.isdigit():
                        try:
                            seen.add((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
                        except OSError:
                            pass
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with table_locked(cluster, "secret_db"):
                backup = start_backupd(encrypted, "backup")
                time.sleep(1.5)
            replicate = start_backupd(encrypted, "replicate")
            restore = start_backupd(encrypted, "restore", "latest", "--database", "secret_db", "--into", "secret_copy")
            outputs = [p.communicate(timeout=300) for p in (backup, replicate, restore)]
        finally:
            stop.set()
            watcher.join()
        assert [p.returncode for p in (backup, replicate, restore)] == [0, 0, 0], outputs
        commands = " ".join(seen)
        for tool in ("pg_dump", "age --encrypt", "age --decrypt", "rsync", "pg_restore"):
            assert tool in commands, f"{tool} was never seen running"
        leaked = [cmd for cmd in seen for secret in secrets if secret in cmd]
        assert leaked == []
        for stdout, stderr in outputs:
            assert not [s for s in secrets if s in stdout + stderr]
    finally:
        sshd.stop()
        drop(cluster, "secret_copy")


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=30),
                max_size=5))
def test_restore_arguments_never_cause_a_traceback(monkeypatch, tmp_path, args):
    from backupd.cli import main
    from tests.pg import free_port

    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("DB_HOST", "127.0.0.1")
    monkeypatch.setenv("DB_PORT", str(free_port()))
    monkeypatch.setenv("DB_WAIT_TIMEOUT", "0")
    try:
        code = main(["restore", *args])
    except SystemExit as err:  # argparse's own usage errors
        code = err.code
    assert code == 2
