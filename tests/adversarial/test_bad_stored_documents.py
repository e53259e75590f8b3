"""Class 4 (issue 22), dump side: bad stored data is an error for that one item, never a
traceback.

``"tables": "x"`` or ``"globals_id": 5`` in a dump manifest used to crash ``verify`` and
``restore``. Every field of every stored dump-side document is validated where it is read:
any JSON value in any field of a dump, roles or volume manifest, a state file, the run
history or a failure record leaves ``list``, ``verify``, ``restore``, ``prune --dry-run``,
health and the endpoints answering. Run in-process (a subprocess per command would be too
slow for a property test), against the session's real server.

The repository is the one the code before this change wrote (tests/adversarial/fixtures):
its documents must keep reading.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import sql

from backupd import cli, statuspage
from backupd.daemon import Daemon
from backupd.settings import load_settings

FIXTURE = Path(__file__).parent / "fixtures" / "main_backup_dir"
DUMP_ID, ROLES_ID = "shop-20261204T203810Z", "globals@20261204T203810Z"
SCRATCH = "bad_docs_scratch"
DOCUMENTS = {  # what each kind is, in the fixture
    "dump manifest": f"shop/{DUMP_ID}.json",
    "roles manifest": f"_globals/{ROLES_ID}.json",
    "volume manifest": "_volumes/media/media-20261204T203900Z.json",
    "state file": f"shop/{DUMP_ID}.state.json",
    "run history": ".replication.json",
    "failure record": "nosuchdb/.last-failure.json",
}
# What a restore or a verification reads; the others are read by listings and views only.
RESTORED = {"dump manifest", "roles manifest", "state file"}

TIMES = st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-12-04T20:38:10Z",
                         "2026-12-04T20:38:10", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00+14:00"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**80, max_value=2**80)
           | st.floats(allow_nan=False) | st.text(max_size=12) | TIMES
           | st.sampled_from(["", "..", "../x", "/etc/passwd", "x" * 300, DUMP_ID, ROLES_ID, "CONNECT", "custom"]))
# Empty values first among equals: a null where an object is read is the likeliest slip.
JSON = st.sampled_from([None, {}, [], "", 0, False]) | st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document a value can be put: the document itself, each field
    at any depth, and one new field in each object."""
    found = [prefix]
    if isinstance(value, dict):
        found.append((*prefix, "unexpected"))
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += paths(inner, (*prefix, index))
    return found


def put(document: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    changed = copy.deepcopy(document)
    holder = changed
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return changed


ORIGINALS = {kind: json.loads((FIXTURE / rel).read_text()) for kind, rel in DOCUMENTS.items()}
CHANGES = st.sampled_from(sorted(DOCUMENTS)).flatmap(
    lambda kind: st.tuples(st.just(kind), st.sampled_from(paths(ORIGINALS[kind])), JSON))


@pytest.fixture(scope="module")
def scene(cluster, tmp_path_factory):
    """The environment, and a copy of the fixture repository for each example."""
    base = tmp_path_factory.mktemp("bad-docs")
    env = {**cluster.env(), "LOG_FORMAT": "json", "DB_WAIT_TIMEOUT": "5s", "DB_NAME": "shop"}
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SCRATCH)))
    yield base, env
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SCRATCH)))


def fresh_repository(base: Path, kind: str | None = None, document: Any = None) -> Path:
    folder = base / "backups"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(FIXTURE, folder)
    if kind is not None:
        (folder / DOCUMENTS[kind]).write_text(json.dumps(document))
    return folder


def run(*argv: str) -> int:
    """backupd in this process: any exception but SystemExit escaping main is a traceback."""
    code = cli.main(list(argv))
    assert isinstance(code, int)
    return code


def every_view(cluster, folder: Path, env: dict[str, str], restore: bool | None) -> dict[str, int]:
    """Every command and view over ``folder``; ``restore`` True: verify and restore too,
    None: the quickest set (no text listing). The client tools' view (a --version run per
    installed major, in the background) does not read the repository: left out."""
    with mock.patch.dict(os.environ, {**env, "BACKUP_DIR": str(folder)}), \
            mock.patch("backupd.pgtools.summary", return_value={"installed": [], "servers": []}):
        codes = {"list --json": run("list", "--json"), "prune": run("prune", "--dry-run")}
        if restore is not None:  # the table shows what --json does; left out of the sweep, for time
            codes["list"] = run("list")
        if restore:
            codes["verify"] = run("verify", DUMP_ID)
            codes["restore"] = run("restore", DUMP_ID, "--into", SCRATCH)
            with cluster.connect() as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SCRATCH)))
        daemon = Daemon(load_settings())
        healthy, health = daemon.health()
        assert isinstance(health, dict)
        assert isinstance(daemon.status(), dict)
        assert daemon.metrics.render()
        assert "<html" in statuspage.render(daemon.page_view()).lower()
    return codes


def test_the_repository_the_previous_release_wrote_still_reads(cluster, scene, capsys):
    base, env = scene
    folder = fresh_repository(base)
    codes = every_view(cluster, folder, env, restore=True)
    assert codes == {"list": 0, "list --json": 0, "prune": 0, "verify": 0, "restore": 0}, capsys.readouterr()
    out = capsys.readouterr()
    assert "did not record the database's grants" in out.err  # restored as before, and said
    with mock.patch.dict(os.environ, {**env, "BACKUP_DIR": str(folder)}):
        assert run("list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e.get("id"), e["status"]) for e in listed] == [(DUMP_ID, "ok")]


@pytest.mark.parametrize("field, value", [("tables", "x"), ("globals_id", 5), ("tables", [{"schema": 1}]),
                                          ("database_info", {"owner": []}), ("size_bytes", "788")])
def test_the_fields_that_crashed_verify_and_restore(cluster, scene, capsys, field, value):
    base, env = scene
    folder = fresh_repository(base, "dump manifest", put(ORIGINALS["dump manifest"], (field,), value))
    codes = every_view(cluster, folder, env, restore=True)
    assert codes["verify"] == codes["restore"] == 2 and codes["list --json"] == 0, codes  # not found: invalid
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "the manifest is invalid" in err


@hypothesis_settings(max_examples=45, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(change=CHANGES)
def test_any_json_in_any_field_never_gives_a_traceback(cluster, scene, change):
    started = time.monotonic()
    kind, path, value = change
    base, env = scene
    folder = fresh_repository(base, kind, put(ORIGINALS[kind], path, value))
    every_view(cluster, folder, env, restore=kind in RESTORED)
    assert time.monotonic() - started < 10


EMPTY = (None, "")  # null, and a string where a list or an object is read


def test_an_empty_value_in_every_field_never_gives_a_traceback(cluster, scene):
    """The slip most likely by hand or by a half-written file, everywhere at once: each field
    of each document in turn, null or empty (the listings and views; restore and verify
    for the documents they read)."""
    base, env = scene
    for kind in sorted(DOCUMENTS):
        for path in paths(ORIGINALS[kind])[1:]:
            for value in EMPTY:
                folder = fresh_repository(base, kind, put(ORIGINALS[kind], path, value))
                every_view(cluster, folder, env, restore=None)


def test_an_invalid_state_file_is_listed_kept_and_never_written_over(cluster, scene, capsys):
    base, env = scene
    state = put(ORIGINALS["state file"], ("pinned",), "yes")
    folder = fresh_repository(base, "state file", state)
    codes = every_view(cluster, folder, env, restore=True)
    assert codes["verify"] == 1 and codes["restore"] == 0, codes  # verified, but not recorded over the file
    assert json.loads((folder / DOCUMENTS["state file"]).read_text()) == state
    capsys.readouterr()
    with mock.patch.dict(os.environ, {**env, "BACKUP_DIR": str(folder)}):
        assert run("list", "--json") == 0
    listed = {entry.get("id") or entry["file"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listed[DUMP_ID]["status"] == "ok"
    assert listed[str(folder / DOCUMENTS["state file"])]["status"] == "invalid"
