"""A manifest's origin is read through its model like every other field: one that is not
well-formed makes that one manifest invalid (listed as such, never followed), and never
takes down the listing of the others."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest

from backupd import cli

FIXTURE = Path(__file__).parent / "fixtures" / "main_repository"
BAD_ORIGINS = ["fixture", [], {"instance": "../x"}, {"instance": ""}, {"host": "h"},
               {"instance": "fixture", "system_identifier": 5}]


@pytest.mark.parametrize("origin", BAD_ORIGINS, ids=[json.dumps(o) for o in BAD_ORIGINS])
def test_a_malformed_origin_makes_one_manifest_invalid_and_the_rest_list(tmp_path, capsys, origin):
    folder = tmp_path / "backups"
    shutil.copytree(FIXTURE, folder)
    damaged, kept = sorted((folder / "shop").glob("shop-*Z.json"))
    manifest = json.loads(damaged.read_text())
    manifest["origin"] = origin
    damaged.write_text(json.dumps(manifest))
    env = {"BACKUP_DIR": str(folder), "DB_HOST": "127.0.0.1", "DB_PORT": "1", "DB_WAIT_TIMEOUT": "1s",
           "BACKUP_INSTANCE": "fixture", "LOG_FORMAT": "json"}
    with mock.patch.dict(os.environ, env):
        code = cli.main(["list", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
    listed = {entry.get("id") or entry["file"]: entry for entry in json.loads(out)}
    assert listed[str(damaged)]["status"] == "invalid" and "origin" in listed[str(damaged)]["problem"]
    assert listed[kept.name.removesuffix(".json")]["status"] == "ok"
