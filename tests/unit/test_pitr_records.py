"""The PITR documents' pure parts: what a base manifest may name, stored times, the names
of records beside WAL files, damaged history lines, where pg_waldump says WAL ends, and the
first page that says which segment a file is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backupd.documents import InvalidDocument, parse
from backupd.pitr import wal, waldump
from backupd.pitr.records import BaseManifest, Gap
from backupd.pitr.store import Store
from backupd.pitr.walfiles import ARCHIVED as _ARCHIVED
from backupd.pitr.walrecords import _LONG_HEADER, check_identity

SYSID = "7400000000000000001"
MANIFEST = {"id": "base-20261201T000000Z", "file": "base-20261201T000000Z.tar.zst", "system_identifier": SYSID,
            "server_major": 17, "wal_segment_size": 16 << 20, "timeline": 1, "start_lsn": "0/2000028",
            "stop_lsn": "0/2000120", "start_time": "2026-12-01T00:00:00Z", "stop_time": "2026-12-01T00:00:05Z",
            "size": 10, "sha256": "a" * 64}


def test_a_valid_manifest_reads_and_keeps_fields_it_does_not_know():
    doc = parse(BaseManifest, {**MANIFEST, "compression": "zstd"})
    assert doc.file == MANIFEST["file"] and doc.model_extra == {"compression": "zstd"}


@pytest.mark.parametrize("field, value", [
    ("file", "../../etc/passwd"), ("file", "/etc/passwd"), ("file", "base-20261130T000000Z.tar.zst"), ("file", ""),
    ("id", "../x"), ("id", "base-1"), ("server_manifest", "../base-20261201T000000Z.backup_manifest"),
    ("start_time", "2026-12-01T00:00:00"), ("start_time", "0001-01-01T00:00:00+01:00"),
    ("stop_time", "9999-12-31T23:59:59-01:00"), ("size", "10"), ("size", True), ("timeline", 0),
    ("wal_segment_size", 1000), ("start_lsn", "zz/1"), ("sha256", "x")])
def test_a_manifest_names_only_its_own_files_and_holds_only_what_backupd_writes(field, value):
    with pytest.raises(InvalidDocument):
        parse(BaseManifest, {**MANIFEST, field: value})


def test_stored_times_are_utc():
    assert parse(Gap, {"time": "2026-12-01T01:00:00+01:00", "reason": "x"}).time.isoformat() == \
        "2026-12-01T00:00:00+00:00"


@pytest.mark.parametrize("name, archived", [
    ("000000010000000000000003.zst.age", "000000010000000000000003"),
    ("000000010000000000000003.partial.zst", "000000010000000000000003.partial"),
    ("00000002.history.zst", "00000002.history"), ("000000010000000000000003.json", None),
    ("000000010000000000000003.partial.json", None), ("00000002.history.json", None)])
def test_a_wal_file_record_is_never_taken_for_the_file(name, archived):
    match = _ARCHIVED.fullmatch(name)
    assert (match.group("name") if match else None) == archived


def test_damaged_history_lines_say_nothing():
    assert wal.parse_history("1\t0/3000000\tok\n2\tzz/ZZ\tdamaged\nx 0/1\n3 1/0 fine\n") == [(1, 0x3000000),
                                                                                           (3, 1 << 32)]


def test_where_pg_waldump_says_the_wal_of_a_partial_segment_ends():
    err = ("pg_waldump: error: error in WAL record at 0/26DBC88: invalid record length at 0/26DBD00: "
           "expected at least 24, got 0")
    match = waldump._ENDS_AT.search(err)
    assert match and match.group(2) == "0/26DBD00"


def _segment(path: Path, sysid: int, timeline: int, address: int) -> Path:
    path.write_bytes(_LONG_HEADER.pack(0xD116, 2, timeline, address, 0, sysid, 16 << 20, 8192) + b"\0" * 100)
    return path


def test_a_segment_is_what_its_first_page_says(tmp_path):
    store = Store(tmp_path, SYSID)
    store.ensure()
    (store.root / "cluster.json").write_text(json.dumps({"system_identifier": SYSID, "wal_segment_size": 16 << 20,
                                                         "server_major": 17}))
    name = "000000010000000000000003"
    check_identity(store, _segment(tmp_path / "a", int(SYSID), 1, 3 << 24), name)
    check_identity(store, tmp_path / "a", name + ".partial")
    (tmp_path / "zeros").write_bytes(b"\0" * 8192)  # preallocated, nothing written yet
    check_identity(store, tmp_path / "zeros", name + ".partial")
    for sysid, timeline, address in ((int(SYSID) + 1, 1, 3 << 24), (int(SYSID), 2, 3 << 24), (int(SYSID), 1, 2 << 24)):
        with pytest.raises(ValueError, match="not this cluster's segment"):
            check_identity(store, _segment(tmp_path / "b", sysid, timeline, address), name)


def test_an_invalid_document_backupd_writes_afresh_is_kept_aside(tmp_path):
    from datetime import UTC, datetime

    store = Store(tmp_path, SYSID)
    store.ensure()
    (store.root / "gaps.json").write_text('{"time": "not a list"}')
    assert [item.file for item in store.invalid()] == ["gaps.json"]
    store.record_gap("slot dropped", datetime(2026, 12, 1, tzinfo=UTC))
    assert [gap.reason for gap in store.gaps()] == ["slot dropped"]
    (aside,) = store.root.glob("gaps.json.invalid-*")
    assert aside.read_text() == '{"time": "not a list"}'
    assert store.invalid() == []
