"""Class 5, one bad file never stops the rest: a backup whose stored file no longer matches
its manifest is not sent, every other backup is, retention still runs on the targets (and
keeps the good copy there of a backup that is damaged here), the run fails naming it, and
a damaged newest backup makes /healthz unhealthy. Against a folder and SeaweedFS's S3."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from backupd.health import evaluate
from backupd.repository import Repository, utc_now
from backupd.settings import load_settings
from tests.integration.helpers import flip_a_byte, make_database

DB = "bad_file_db"


@pytest.fixture(scope="module", autouse=True)
def database(cluster):
    make_database(cluster, DB, rows=200)


def backup_now(backupd, env) -> dict:
    time.sleep(1.05)  # ids carry the second: each backup gets its own
    backupd.ok("backup", extra_env=env)
    return backupd.listing()[0]


def s3_body(s3, bucket: str, key: str) -> bytes:
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def s3_keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_a_damaged_backup_fails_alone_and_the_rest_is_replicated_and_pruned(backupd, backup_dir, tmp_path, s3, env):
    offsite = tmp_path / "offsite"
    offsite.mkdir()
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    s3_url = f"s3://{bucket}/offsite"
    targets = {**s3.env(bucket), "REPLICATION_TARGETS": f"{offsite.as_uri()},{s3_url}", "DB_NAME": DB,
               "BACKUP_GLOBALS": "false", "BACKUP_INSTANCE": "here"}  # on the targets: under here/
    first, second = backup_now(backupd, targets), backup_now(backupd, targets)
    backupd.ok("replicate", extra_env=targets)  # both are off site, confirmed
    third, newest = backup_now(backupd, targets), backup_now(backupd, targets)
    relative = "here/" + Path(second["file"]).relative_to(backup_dir).as_posix()
    good_second = Path(second["file"]).read_bytes()

    flip_a_byte(newest["file"])  # never sent yet
    flip_a_byte(second["file"])  # sent already: its good copies off site must survive
    state = Path(second["file"]).parent / f"{Path(second['file']).name.split('.')[0]}.state.json"
    state.unlink()  # the record of its copies is lost, so replication tries to send it again

    policy = {**targets, "BACKUP_RETENTION_DAYS": "0", "BACKUP_KEEP_LAST": "1"}
    result = backupd("replicate", extra_env=policy, timeout=180)

    # The run fails, with a line naming each damaged backup, for each target.
    assert result.returncode == 1, result.stdout + result.stderr
    for url in (offsite.as_uri(), s3_url):
        lines = [line for line in result.stdout.splitlines() if line.startswith(f"{url}: ")]
        for damaged in (newest["id"], second["id"]):
            assert any(line.startswith(f"{url}: {damaged} not sent: ") for line in lines), lines
    assert "no longer matches its manifest" in result.stdout  # why, in words
    errors = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {e.get("id") for e in errors if e.get("level") == "error"} >= {newest["id"], second["id"]}
    assert "Traceback" not in result.stderr

    # Every other backup arrived and is confirmed; the damaged newest one did not arrive.
    listed = {b["id"]: b for b in backupd.listing()}
    assert set(listed[third["id"]]["replicated_to"]) == {offsite.as_uri(), s3_url}
    remote_files = {p.relative_to(offsite).as_posix() for p in offsite.rglob("*") if p.is_file()}
    newest_rel = "here/" + Path(newest["file"]).relative_to(backup_dir).as_posix()
    third_rel = "here/" + Path(third["file"]).relative_to(backup_dir).as_posix()
    assert third_rel in remote_files and f"offsite/{third_rel}" in s3_keys(s3, bucket)
    assert newest_rel not in remote_files and f"offsite/{newest_rel}" not in s3_keys(s3, bucket)

    # Retention ran on both targets (keep the newest one there: the oldest went) ...
    first_rel = "here/" + Path(first["file"]).relative_to(backup_dir).as_posix()
    assert first_rel not in remote_files and f"offsite/{first_rel}" not in s3_keys(s3, bucket)
    assert "deleted 1" in result.stdout
    # ... but the good copies of the backup damaged here were neither overwritten nor deleted.
    assert (offsite / relative).read_bytes() == good_second
    assert s3_body(s3, bucket, f"offsite/{relative}") == good_second

    # The damaged newest backup makes the service unhealthy, naming it; list shows it damaged.
    health = evaluate(load_settings(env), Repository(backup_dir), utc_now(), utc_now())
    assert not health.healthy
    assert any(newest["id"] in reason and "damaged" in reason for reason in health.reasons), health.reasons
    assert listed[newest["id"]]["status"] == "damaged"

    # A run record says which backups were not sent (read by /status and metrics).
    runs = json.loads((backup_dir / ".replication.json").read_text())
    assert not runs[offsite.as_uri()]["ok"]
    assert {r["id"] for r in runs[offsite.as_uri()]["refused"]} == {newest["id"], second["id"]}


def test_a_file_that_vanishes_between_listing_and_sending_fails_alone(backupd, backup_dir, tmp_path, env):
    """The race itself, in process: the repository is listed, then the newest file goes."""
    from backupd.actions.replicate import TargetOutcome, _replicate_guarded
    from backupd.origin import this_origin
    from backupd.retention import Policy
    from backupd.targets import make_target

    offsite = tmp_path / "offsite"
    offsite.mkdir()
    targets = {"REPLICATION_TARGETS": offsite.as_uri(), "DB_NAME": DB, "BACKUP_GLOBALS": "false",
               "BACKUP_INSTANCE": "here"}
    older, newest = backup_now(backupd, targets), backup_now(backupd, targets)
    listed = Repository(backup_dir).backups(kind=None)

    class ListedBeforeTheFileWent(Repository):
        def backups(self, database=None, kind="database"):
            return listed if kind is None else super().backups(database, kind)

    Path(newest["file"]).unlink()
    settings = load_settings({**env, **targets})
    target, outcome = make_target(offsite.as_uri(), settings), TargetOutcome(offsite.as_uri())
    _replicate_guarded(target, outcome, ListedBeforeTheFileWent(backup_dir), Policy.from_settings(settings),
                       this_origin(settings))
    assert not outcome.ok and outcome.sent == [older["id"]]
    assert [(backup_id, "is missing") for backup_id, why in outcome.refused if why.endswith("is missing")] == \
        [(newest["id"], "is missing")], outcome.refused
    assert (offsite / "here" / Path(older["file"]).relative_to(backup_dir)).exists()
    assert outcome.counted and outcome.stored == {DB: 1}  # retention and the count still ran
