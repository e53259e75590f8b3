"""The layout of a shared target and the origin of a manifest: pure logic."""

from __future__ import annotations

import pytest

from backupd.documents import InvalidDocument, parse
from backupd.manifests import DumpManifest
from backupd.origin import check_instance, instance_of
from backupd.targets.base import RemoteFile
from backupd.targets.layout import remote_backups, split_instance


def listing(*paths: str) -> dict[str, RemoteFile]:
    return {p: RemoteFile(p, 10) for p in paths}


def test_instance_folders_and_the_older_top_level_never_mix_up():
    remote = listing(
        "app/app-20261201T020000Z.json", "app/app-20261201T020000Z.dump.zst",  # from before instances
        "site-a/app/app-20261201T020000Z.json", "site-a/app/app-20261201T020000Z.dump.zst",
        "site-b/app/app-20261201T020000Z.json", "site-b/app/app-20261201T020000Z.dump.zst",
        "site-b/_globals/globals@20261201T020000Z.json", "site-b/_globals/globals@20261201T020000Z.sql.zst",
        "site-b/_volumes/up/up-20261201T020000Z.json", "site-b/_volumes/up/up-20261201T020000Z.tar.zst",
        "_pitr/7715551443048802812/cluster.json", "x/y/app/app-20261201T020000Z.json", "loose.json")
    found = {(b.instance, b.kind, b.id): b for b in remote_backups(remote)}
    assert set(found) == {
        (None, "database", "app-20261201T020000Z"), ("site-a", "database", "app-20261201T020000Z"),
        ("site-b", "database", "app-20261201T020000Z"), ("site-b", "globals", "globals@20261201T020000Z"),
        ("site-b", "volume", "up-20261201T020000Z")}
    assert found["site-a", "database", "app-20261201T020000Z"].data == ["site-a/app/app-20261201T020000Z.dump.zst"]
    old = found[None, "database", "app-20261201T020000Z"]
    assert old.data == ["app/app-20261201T020000Z.dump.zst"]
    assert old.in_space("site-a", "site-a") and not old.in_space("site-b", "site-a")
    assert split_instance("_volumes/up/up-20261201T020000Z.json") == (None, "_volumes/up/up-20261201T020000Z.json")


@pytest.mark.parametrize("name", ["", ".", "..", "_pitr", "_globals", "a/b", "a b", "é", "x" * 64, "-a"])
def test_an_instance_name_is_one_safe_path_component(name):
    with pytest.raises(ValueError):
        check_instance(name)


def _manifest(**fields):
    return parse(DumpManifest, {"id": "a-20261201T020000Z", "database": "a", "file": "a-20261201T020000Z.dump",
                                "size_bytes": 1, "sha256": "0" * 64, "format": "custom", **fields})


def test_an_origin_missing_reads_as_the_reader_and_a_malformed_one_is_invalid():
    assert instance_of(_manifest(), "me") == "me"
    assert instance_of(_manifest(origin={"instance": "site-b", "system_identifier": "1"}), "me") == "site-b"
    malformed = ("site-b", ["site-b"], {"instance": 3}, {"instance": "../x"},
                 {"instance": "ok", "system_identifier": 7})
    for origin in malformed:
        with pytest.raises(InvalidDocument):
            _manifest(origin=origin)
