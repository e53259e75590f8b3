"""Class 4, every field: any JSON value in any field of a base manifest, cluster.json,
gaps.json, verify.json, a WAL record, received.json, a job's failure record or the
replication state gives no exception in what
``pitr status [--json]``, ``prune --dry-run``, ``health`` and the endpoints (/healthz,
/status, /metrics, /) compute. In-process, on a repository laid out as backupd writes it;
the process-level paths are the same functions (test_pitr_stored_files runs them for real)."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from backupd.metrics import Guard, PitrCollector
from backupd.pitr import status
from backupd.pitr.pruning import prune
from backupd.pitr.replicate import _load_state
from backupd.pitr.store import Store
from backupd.repository import Repository
from backupd.settings import load_settings
from backupd.statuspage import _pitr
from backupd.view import Live, build

SYSID = "7400000000000000001"
SHA = "0" * 64
SEGMENT = "000000010000000000000002"
DOCUMENTS = {
    "base/base-20261201T000000Z.json": {
        "kind": "pitr-base", "id": "base-20261201T000000Z", "file": "base-20261201T000000Z.tar",
        "system_identifier": SYSID, "server_major": 17, "wal_segment_size": 16777216, "timeline": 1,
        "start_lsn": "0/2000028", "stop_lsn": "0/2000120", "start_time": "2026-12-01T00:00:00Z",
        "stop_time": "2026-12-01T00:00:05Z", "size": 4, "sha256": SHA, "server_manifest": None},
    "cluster.json": {"system_identifier": SYSID, "wal_segment_size": 16777216, "server_major": 17},
    "gaps.json": [{"time": "2026-11-30T00:00:00Z", "reason": "slot dropped"}],
    "verify.json": {"time": "2026-12-01T01:00:00Z", "ok": True, "last_success": "2026-12-01T01:00:00Z"},
    f"wal/{SEGMENT}.json": {"name": SEGMENT, "end_lsn": "0/3000000", "last_commit": "2026-12-01T00:10:00Z",
                            "size": 4, "sha256": SHA, "recorded": "2026-12-01T00:10:01Z"},
    "received.json": {"name": "000000010000000000000003.partial", "end_lsn": "0/3000100",
                      "last_commit": "2026-12-01T00:20:00Z", "recorded": "2026-12-01T00:20:01Z",
                      "caught_up": "2026-12-01T00:30:00Z"},
    "../.last-failure-base.json": {"job": "base", "time": "2026-12-01T02:00:00Z", "error": "disk full"},
    ".last-failure-verify.json": {"job": "verify", "time": "2026-12-01T02:00:00Z", "error": "no intact base"},
    ".replicated.json": {"file:///mnt/copy": {f"wal/{SEGMENT}": {"sha256": SHA, "size": 4, "mtime": 1.5,
                                                                 "record": {}}}},
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=30)
    | st.sampled_from(["../../../etc/passwd", "/etc/passwd", "", ".", "0/0", "9999-12-31T23:59:59-01:00",
                       "0001-01-01T00:00:00+01:00", "2026-12-01T00:00:00", "FFFFFFFF/FFFFFFFF"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


def _fields(document):
    return list(document[0]) if isinstance(document, list) else list(document)


edits = st.sampled_from(sorted(DOCUMENTS)).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from(_fields(DOCUMENTS[name]) + [None]), json_values))


def _repository(root: Path) -> Path:
    store = root / "_pitr" / SYSID
    for folder in ("base", "wal", ".receiving"):
        (store / folder).mkdir(parents=True)
    (store / "base" / "base-20261201T000000Z.tar").write_bytes(b"data")
    (store / "wal" / SEGMENT).write_bytes(b"wal!")
    (store / ".receiving" / "000000010000000000000003.partial").write_bytes(b"")
    for name, document in DOCUMENTS.items():
        (store / name).write_text(json.dumps(document))
    return store


def _edit(store: Path, name: str, field: str | None, value) -> None:
    document = json.loads(json.dumps(DOCUMENTS[name]))
    if field is None:
        document = value  # the whole document is something else
    elif isinstance(document, list):
        document[0][field] = value
    else:
        document[field] = value
    (store / name).write_text(json.dumps(document))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_any_json_in_any_field_is_never_an_exception(edit):
    root = Path(tempfile.mkdtemp(prefix="backupd-pitr-prop-"))
    try:
        store_dir = _repository(root)
        _edit(store_dir, *edit)
        config = load_settings({"BACKUP_DIR": str(root), "PITR_ENABLED": "true"})
        now = datetime(2026, 12, 2, tzinfo=UTC)
        report = status.describe(config, None)
        json.dumps(report)  # what --json and /status print
        _pitr(report, now)  # the status page's section
        receiver = {"down_since": None, "lag_seconds": 0.0, "slot": {"wal_status": "reserved"},
                    "system_identifier": SYSID}  # the daemon's: its stream is this cluster's
        status.problems(config, receiver, now)
        status.problems(config, None, now)  # a one-shot command's
        guard = Guard(Counter("errors", "", ["part"], registry=CollectorRegistry()))
        reading = build(config, Repository(root), Live(now, receiver=receiver),
                        attempt=lambda part, produce: produce())  # unguarded: an exception shows
        list(PitrCollector(lambda: reading, guard)._collect())
        for store in Store.all(root):
            prune(config, store, now, dry_run=True)
        _load_state(store_dir / ".replicated.json")
    finally:
        shutil.rmtree(root, ignore_errors=True)
