"""Copies off the machine, each confirmed by checksum, against real servers on 127.0.0.1."""

from __future__ import annotations

import shutil
import time
import uuid

import pytest
from psycopg import sql

from tests.content import AWKWARD_DB, create_awkward_database, fingerprint
from tests.integration.helpers import flip_a_byte


@pytest.fixture(scope="module", autouse=True)
def content(cluster):
    create_awkward_database(cluster)
    return fingerprint(cluster, AWKWARD_DB)


def new_bucket(s3) -> str:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["file", "s3", "ssh"])
def target(request, tmp_path, s3, sshd) -> dict[str, str]:
    """Environment for one target of each kind."""
    if request.param == "file":
        (tmp_path / "offsite").mkdir()
        return {"REPLICATION_TARGETS": (tmp_path / "offsite").as_uri()}
    if request.param == "s3":  # the older form: a bucket and a prefix instead of a URL
        return {**s3.env("unused"), "REPLICATION_TARGETS": "", "AWS_S3_BUCKET": new_bucket(s3),
                "AWS_S3_PREFIX": "legacy/form"}
    return sshd.env(tmp_path / "over ssh")


def drop(cluster, name):
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_backup_replicate_lose_the_machine_and_restore_from_the_target(cluster, backupd, backup_dir, content, target):
    backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB, **target})
    first = backupd.ok("replicate", extra_env=target)
    assert "sent 2" in first.stdout  # the backup and its roles dump
    assert "sent 0" in backupd.ok("replicate", extra_env=target).stdout  # nothing twice
    url = first.stdout.splitlines()[0].split(": ok;")[0]
    assert [b["database"] for b in backupd.listing_with(target, "--target", url)] == [AWKWARD_DB]
    shutil.rmtree(backup_dir)  # the machine is gone; a new one has an empty BACKUP_DIR
    backupd.ok("restore", "latest", "--database", AWKWARD_DB, "--into", "from_offsite", extra_env=target)
    try:
        assert fingerprint(cluster, "from_offsite") == content
    finally:
        drop(cluster, "from_offsite")


def test_a_copy_changed_on_the_target_is_detected_and_sent_again(backupd, backup_dir, tmp_path, content):
    offsite = tmp_path / "offsite"
    offsite.mkdir()
    env = {"REPLICATION_TARGETS": offsite.as_uri(), "DB_NAME": AWKWARD_DB}
    backupd.ok("backup", extra_env=env)
    backupd.ok("replicate", extra_env=env)
    (copy,) = offsite.rglob("*.dump.zst")
    original = copy.read_bytes()
    time.sleep(1.1)
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    copy.write_bytes(bytes(damaged))
    again = backupd.ok("replicate", extra_env=env)
    assert "sent 1" in again.stdout and "changed; sending it again" in again.stderr
    assert copy.read_bytes() == original


def test_an_s3_object_overwritten_by_hand_is_sent_again(backupd, s3):
    env = {**s3.env(new_bucket(s3)), "DB_NAME": AWKWARD_DB}
    backupd.ok("backup", extra_env=env)
    backupd.ok("replicate", extra_env=env)
    bucket = env["REPLICATION_TARGETS"].split("/")[2]
    (key,) = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith(".dump.zst")]
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.client().put_object(Bucket=bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))
    assert "sent 1" in backupd.ok("replicate", extra_env=env).stdout
    assert s3.client().get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_a_local_file_that_no_longer_matches_its_manifest_is_never_sent(backupd, tmp_path):
    offsite = tmp_path / "offsite"
    offsite.mkdir()
    env = {"REPLICATION_TARGETS": offsite.as_uri(), "DB_NAME": AWKWARD_DB, "BACKUP_GLOBALS": "false"}
    backupd.ok("backup", extra_env=env)
    (backup,) = backupd.listing()
    flip_a_byte(backup["file"])
    result = backupd("replicate", extra_env=env)
    assert result.returncode == 1 and "no longer matches its manifest" in result.stdout
    assert not list(offsite.rglob("*.dump.zst"))


def test_wrong_credentials_fail_clearly_and_quickly(backupd, s3, sshd, tmp_path):
    env = {**s3.env(new_bucket(s3)), "AWS_SECRET_ACCESS_KEY": "not-the-secret", "DB_NAME": AWKWARD_DB}
    backupd.ok("backup", extra_env=env)
    started = time.monotonic()
    result = backupd("replicate", extra_env=env)
    assert result.returncode == 1 and "SignatureDoesNotMatch" in result.stdout
    assert "not-the-secret" not in result.stdout + result.stderr
    assert time.monotonic() - started < 20  # refused credentials are not retried
    wrong_key = tmp_path / "wrong_key"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)
    ssh_env = {**sshd.env(tmp_path / "x"), "SSH_KEY_FILE": str(wrong_key)}
    result = backupd("replicate", extra_env=ssh_env)
    assert result.returncode == 1 and "Permission denied" in result.stdout


def test_a_target_that_is_down_fails_alone_and_its_backlog_follows(backupd, s3, tmp_path):
    offsite = tmp_path / "offsite"
    offsite.mkdir()
    bucket = new_bucket(s3)
    s3_url = s3.env(bucket)["REPLICATION_TARGETS"]
    env = {**s3.env(bucket), "REPLICATION_TARGETS": f"{offsite.as_uri()},{s3_url}", "DB_NAME": AWKWARD_DB}
    backupd.ok("backup", extra_env=env)
    s3.stop()
    try:
        started = time.monotonic()
        result = backupd("replicate", extra_env=env, timeout=180)
        assert time.monotonic() - started < 120
        assert result.returncode == 1
        assert f"{offsite.as_uri()}: ok; sent 2" in result.stdout  # the folder did not wait for S3
        assert f"{s3_url}: FAILED" in result.stdout
    finally:
        s3.start_again()
    time.sleep(1)
    backlog = backupd.ok("replicate", extra_env=env)
    assert f"{s3_url}: ok; sent 2" in backlog.stdout
    assert f"{offsite.as_uri()}: ok; sent 0" in backlog.stdout


def test_target_retention_replaces_only_the_age_rule(backupd, tmp_path, content):
    offsite = tmp_path / "offsite"
    offsite.mkdir()
    env = {"REPLICATION_TARGETS": offsite.as_uri(), "DB_NAME": AWKWARD_DB, "BACKUP_GLOBALS": "false",
           "BACKUP_RETENTION_DAYS": "0"}
    for when in ("2026-07-15 02:00:00", "2026-08-15 02:00:00", "2026-08-20 02:00:00", "2026-11-20 02:00:00"):
        backupd.at(when, "backup", extra_env=env)
    policy = {**env, "REPLICATION_RETENTION_DAYS": "7", "BACKUP_KEEP_MONTHLY": "2"}
    result = backupd.at("2026-11-21 12:00:00", "replicate", extra_env=policy)
    assert "sent 4, deleted 2" in result.stdout, result.stdout + result.stderr
    remote_days = sorted(p.name.split("-")[-1][:8] for p in offsite.rglob("*.dump.zst"))
    assert remote_days == ["20260820", "20261120"]  # the newest of August survives off site
    assert len(backupd.listing()) == 4  # the local repository keeps its own rules


def test_a_custom_command_copies_unconfirmed_and_only_once(backupd, tmp_path):
    destination = tmp_path / "custom"
    env = {"REPLICATION_ENABLED": "true", "REPLICATION_TYPE": "custom", "REPLICATION_COMMAND": "install -D -m 600",
           "REPLICATION_TARGET": str(destination), "DB_NAME": AWKWARD_DB, "BACKUP_GLOBALS": "false"}
    backupd.ok("backup", extra_env=env)
    first = backupd.ok("replicate", extra_env=env)
    assert "sent 1" in first.stdout and "unconfirmed" in first.stdout
    assert len(list(destination.rglob("*.dump.zst"))) == 1
    assert "sent 0" in backupd.ok("replicate", extra_env=env).stdout


def test_the_daemon_replicates_after_each_backup_and_reports_it(env, tmp_path, content):
    from tests.integration.daemon_helpers import RunningDaemon
    from tests.integration.test_daemon import metric_samples

    offsite = tmp_path / "offsite"
    offsite.mkdir()
    daemon = RunningDaemon(env, DB_NAME=AWKWARD_DB, BACKUP_ON_START="true", REPLICATION_TARGETS=offsite.as_uri())
    try:
        runs = daemon.wait_until(lambda: daemon.json("/status")[1]["targets"].get(offsite.as_uri()),
                                 what="a replication run")
        assert runs["ok"] and runs["sent"] == 2
        samples = metric_samples(daemon.get("/metrics")[1])
        (last,) = [s for s in samples["backupd_replication_last_success_timestamp_seconds"]
                   if s.labels["target"] == offsite.as_uri()]
        assert abs(last.value - time.time()) < 120
        stored = {(s.labels["target"], s.labels["database"]): s.value for s in samples["backupd_stored_backups"]}
        assert stored[(offsite.as_uri(), AWKWARD_DB)] == 1
        (total,) = [s for s in samples["backupd_replication_total"] if s.labels["target"] == offsite.as_uri()]
        assert total.labels["result"] == "success"
        assert daemon.json("/status")[1]["jobs"]["replicate"]["schedule"] == "every 3600s"
    finally:
        daemon.stop()
    assert len(list(offsite.rglob("*.dump.zst"))) == 1


def test_multipart_uploads_are_confirmed_by_their_composite_etag(s3, tmp_path):
    import hashlib
    import os

    from backupd.settings import load_settings
    from backupd.targets import make_target
    from backupd.targets.base import LocalFile
    from backupd.targets.s3 import MIN_PART

    env = s3.env(new_bucket(s3))
    target = make_target(env["REPLICATION_TARGETS"], load_settings(env))
    big = tmp_path / "big.dump.zst"
    big.write_bytes(os.urandom(2 * MIN_PART + 12345))  # three parts
    sha = hashlib.sha256(big.read_bytes()).hexdigest()
    record = target.put(LocalFile(big, "db/big.dump.zst", sha, big.stat().st_size))
    assert record["etag"].endswith("-3")
    remote = target.list()["db/big.dump.zst"]
    assert target.is_intact(LocalFile(big, "db/big.dump.zst", sha, big.stat().st_size), remote, record)


def test_a_damaged_local_file_leaves_nothing_on_s3(backupd, s3):
    env = {**s3.env(new_bucket(s3)), "DB_NAME": AWKWARD_DB, "BACKUP_GLOBALS": "false"}
    backupd.ok("backup", extra_env=env)
    (backup,) = backupd.listing()
    flip_a_byte(backup["file"])
    result = backupd("replicate", extra_env=env)
    assert result.returncode == 1 and "no longer matches its manifest" in result.stdout
    bucket = env["REPLICATION_TARGETS"].split("/")[2]
    assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_volume_archives_replicate_and_restore_on_a_new_machine(backupd, backup_dir, tmp_path, content):
    folder = tmp_path / "uploads"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "photo.jpg").write_bytes(b"\xff\xd8" + bytes(range(256)) * 100)
    (folder / "notes.txt").write_text("ünïcødé notes")
    offsite = tmp_path / "offsite"
    offsite.mkdir()
    env = {"VOLUME_PATHS": f"uploads={folder}", "REPLICATION_TARGETS": offsite.as_uri(), "DB_NAME": AWKWARD_DB}
    backupd.ok("volumes", "backup", extra_env=env)
    backupd.ok("backup", extra_env=env)  # a database backup beside it, to keep the kinds apart
    assert "sent 3" in backupd.ok("replicate", extra_env=env).stdout
    assert "sent 0" in backupd.ok("replicate", extra_env=env).stdout
    shutil.rmtree(backup_dir)  # a new machine
    restored = tmp_path / "restored"
    backupd.ok("volumes", "restore", "latest", "--volume", "uploads", "--to", str(restored), extra_env=env)
    assert (restored / "a" / "photo.jpg").read_bytes() == (folder / "a" / "photo.jpg").read_bytes()
    assert (restored / "notes.txt").read_text() == "ünïcødé notes"
