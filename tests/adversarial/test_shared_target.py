"""Several sidecars on one target: two real servers, each with a database ``app``, two
sidecars (two BACKUP_DIRs, two instances), one folder target and then one S3 bucket and
prefix, over several faked days with pins and backups of the same second. Nothing either
side should keep is lost, nothing is overwritten, and a new machine restores its own
server's rows; another instance's only when it is named."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Backupd
from tests.pg import remove_cluster, start_cluster

POLICY = {"BACKUP_RETENTION_DAYS": "2", "REPLICATION_RETENTION_DAYS": "2", "BACKUP_MIN_KEEP": "1",
          "DB_NAME": "app", "LOG_FORMAT": "json", "DB_WAIT_TIMEOUT": "5s"}
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "legacy_target"


def _server(marker: str):
    cluster = start_cluster()
    with cluster.connect() as admin:
        admin.execute("CREATE DATABASE app")
    with cluster.connect("app") as conn:
        conn.execute("CREATE TABLE marker (who text)")
        conn.execute("INSERT INTO marker VALUES (%s)", (marker,))
    with cluster.connect() as conn:
        identifier = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    return cluster, identifier


@pytest.fixture(scope="module")
def servers():
    """Server A and server B, each with its own ``app``: (cluster, system identifier) each."""
    a, b = _server("A"), _server("B")
    yield {"A": a, "B": b}
    remove_cluster(a[0])
    remove_cluster(b[0])


class FolderTarget:
    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.env = root, {"REPLICATION_TARGETS": root.as_uri()}
        self.url = root.as_uri()

    def files(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def write(self, relative: str, data: bytes) -> None:
        (self.root / relative).write_bytes(data)


class BucketTarget:
    def __init__(self, s3):
        self.client, self.bucket, self.prefix = s3.client(), f"shared-{uuid.uuid4().hex[:10]}", "fleet/backups"
        self.client.create_bucket(Bucket=self.bucket)
        self.env = s3.env(self.bucket, self.prefix)
        self.url = f"s3://{self.bucket}/{self.prefix}"

    def files(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + "/")
        return sorted(o["Key"][len(self.prefix) + 1:] for page in pages for o in page.get("Contents", []))

    def read(self, relative: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{relative}")["Body"].read()

    def write(self, relative: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{relative}", Body=data)


@pytest.fixture(params=["folder", "s3"])
def target(request, tmp_path, s3):
    return FolderTarget(tmp_path / "shared") if request.param == "folder" else BucketTarget(s3)


def sidecar(servers, side: str, backup_dir: Path, target, instance: str | None) -> Backupd:
    cluster, _ = servers[side]
    env = {**cluster.env(), **POLICY, **target.env, "BACKUP_DIR": str(backup_dir)}
    if instance:
        env["BACKUP_INSTANCE"] = instance
    return Backupd(env)


def marker(cluster, database: str) -> list[str]:
    with cluster.connect(database) as conn:
        return [who for (who,) in conn.execute("SELECT who FROM marker")]


def drop(cluster, database: str) -> None:
    with cluster.connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


class Moment:
    """``days`` days and an hour ago, to the second. Backups are made there, on a faked clock
    that runs five times slower: two started there get the id of that same second, however
    long Python takes to start on a busy machine. Replication runs at the real time (S3
    refuses requests signed at another), so retention on the target judges these ages."""

    def __init__(self, days: int):
        self.when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days, hours=1)

    @property
    def clock(self) -> str:
        return f"{self.when:%Y-%m-%d %H:%M:%S} x0.2"

    @property
    def id(self) -> str:
        return f"app-{self.when:%Y%m%dT%H%M%SZ}"


def listed(side: Backupd, target, *args: str) -> set[tuple[str, str]]:
    return {(b["instance"], b["id"]) for b in side.listing("--target", target.url, *args)}


def test_two_sidecars_share_a_target_over_days_and_nothing_is_lost(servers, target, tmp_path):
    a = sidecar(servers, "A", tmp_path / "a", target, "site-a")
    b = sidecar(servers, "B", tmp_path / "b", target, "site-b")
    days = [Moment(d) for d in (3, 2, 1, 0)]
    for number, day in enumerate(days):  # both at the same second, every day; A pins the first, B the second
        a.at(day.clock, "backup", *(["--pin"] if number == 0 else []))
        b.at(day.clock, "backup", *(["--pin"] if number == 1 else []))
        a.ok("replicate")
        b.ok("replicate")
    # Retention on the target (2 days) kept each side's own pin, deleted only its own copies.
    kept_a = {("site-a", days[n].id) for n in (0, 2, 3)}
    kept_b = {("site-b", days[n].id) for n in (1, 2, 3)}
    assert listed(a, target) == kept_a | kept_b
    assert listed(a, target, "--instance", "site-b") == kept_b
    # Same ids, never the same object: each copy is its own server's, by its manifest.
    for instance, backup_id in kept_a | kept_b:
        manifest = json.loads(target.read(f"{instance}/app/{backup_id}.json"))
        side = "A" if instance == "site-a" else "B"
        assert manifest["origin"]["instance"] == instance
        assert manifest["origin"]["system_identifier"] == servers[side][1]
        if backup_id in (days[2].id, days[3].id):  # each side's roles dump, beside its own
            assert f"{instance}/_globals/{manifest['globals_id']}.json" in target.files()
    assert not [f for f in target.files() if not f.startswith(("site-a/", "site-b/"))]

    # A new machine with A's settings restores A's rows; B's only when named.
    cluster_a = servers["A"][0]
    fresh = sidecar(servers, "A", tmp_path / "new-machine", target, "site-a")
    try:
        fresh.ok("restore", "latest", "--database", "app", "--into", "mine")
        assert marker(cluster_a, "mine") == ["A"]
        fresh.ok("restore", "latest", "--database", "app", "--instance", "site-b", "--into", "theirs")
        assert marker(cluster_a, "theirs") == ["B"]
        assert not list((tmp_path / "new-machine").glob(".instances/*"))  # fetched for that restore only
        assert {b["instance"] for b in fresh.listing()} == {"site-a"}  # never among A's own
        refused = fresh("restore", days[1].id, "--into", "nope")  # B's pin: not A's backup
        assert refused.returncode == 2 and "site-b" in refused.stderr and "--instance" in refused.stderr
    finally:
        for name in ("mine", "theirs", "nope"):
            drop(cluster_a, name)


def test_a_manifest_of_another_origin_is_refused(servers, target, tmp_path):
    a = sidecar(servers, "A", tmp_path / "a", target, "site-a")
    b = sidecar(servers, "B", tmp_path / "b", target, "site-b")
    day = Moment(0)
    for side in (a, b):
        side.at(day.clock, "backup")
        side.ok("replicate")
    backup_id = day.id
    # Something puts B's backup where A's is (a hand, a buggy tool): A's restore refuses it.
    for name in (f"app/{backup_id}.json", f"app/{backup_id}.dump.zst"):
        target.write(f"site-a/{name}", target.read(f"site-b/{name}"))
    fresh = sidecar(servers, "A", tmp_path / "new-machine", target, "site-a")
    refused = fresh("restore", backup_id, "--into", "wrong_origin")
    assert refused.returncode == 2, refused.stderr
    assert "'site-b'" in refused.stderr and "'site-a'" in refused.stderr
    assert not list((tmp_path / "new-machine").rglob("*.dump.zst"))  # nothing of it kept


def test_default_instances_keep_two_servers_apart(servers, tmp_path):
    target = FolderTarget(tmp_path / "shared")
    a = sidecar(servers, "A", tmp_path / "a", target, None)
    b = sidecar(servers, "B", tmp_path / "b", target, None)
    for side in (a, b):
        side.at(Moment(0).clock, "backup")
        side.ok("replicate")
    sid_a, sid_b = servers["A"][1], servers["B"][1]
    assert {i for i, _ in listed(a, target)} == {sid_a, sid_b}  # never the host name: the cluster
    assert f"BACKUP_INSTANCE is not set: this instance is '{sid_a}'" in a.ok("config").stdout
    fresh = sidecar(servers, "A", tmp_path / "new-machine", target, None)
    try:
        fresh.ok("restore", "latest", "--database", "app", "--into", "by_default")
        assert marker(servers["A"][0], "by_default") == ["A"]
    finally:
        drop(servers["A"][0], "by_default")


def test_one_instance_name_on_two_servers_never_overwrites(servers, tmp_path):
    """A misconfiguration (the same compose project and service on two hosts): the second
    upload of a name is refused, the first copy stays, and neither retention deletes the
    other server's copies."""
    target = FolderTarget(tmp_path / "shared")
    a = sidecar(servers, "A", tmp_path / "a", target, "same")
    b = sidecar(servers, "B", tmp_path / "b", target, "same")
    week_ago = Moment(7)
    a.at(week_ago.clock, "backup")
    a.ok("replicate")
    b.at(week_ago.clock, "backup")
    original = target.read(f"same/app/{week_ago.id}.dump.zst")
    clash = b("replicate")
    assert clash.returncode == 1 and "is not replaced" in clash.stderr
    assert target.read(f"same/app/{week_ago.id}.dump.zst") == original
    b.at(Moment(0).clock, "backup")  # B's retention on the target: A's copy is past the 2 days
    b("replicate")
    manifest = json.loads(target.read(f"same/app/{week_ago.id}.json"))
    assert manifest["origin"]["system_identifier"] == servers["A"][1]  # A's copy is still there


def test_a_target_written_before_origins_reads_as_this_instances(servers, tmp_path):
    """The folder target in tests/fixtures was written by the version before: it lists,
    restores and is pruned as this instance's."""
    target = FolderTarget(tmp_path / "old")
    shutil.copytree(FIXTURE, target.root, dirs_exist_ok=True)
    a = sidecar(servers, "A", tmp_path / "a", target, "site-a")
    old_ids = {f"app-202611{d:02d}T020000Z" for d in (1, 2, 3)}
    assert listed(a, target) == {("site-a", i) for i in old_ids}
    cluster_a = servers["A"][0]
    try:
        a.ok("restore", "latest", "--database", "app", "--into", "from_old_target")
        assert marker(cluster_a, "from_old_target") == ["legacy"]
    finally:
        drop(cluster_a, "from_old_target")
    now = Moment(0)
    a.at(now.clock, "backup")
    a.ok("replicate")  # the old copies are past the 2 days: pruned as A's
    assert listed(a, target) == {("site-a", now.id)}
    assert not [f for f in target.files() if f.startswith(("app/", "_globals/"))]
