"""A BACKUP_DIR written by the previous release (fixtures/main_repository: dumps, roles
dumps, a volume archive, state files with a pin, a verification and replicas, run history,
a failure record, and a PITR cluster with a base backup and archived WAL with records) is
read by this code exactly as that release read it: ``list``, ``volumes list``, ``prune
--dry-run``, ``pitr status`` and ``/status``, field by field against what it showed
(fixtures/main_repository.views.json, written by fixtures/make_main_repository.py); and
its dump still verifies."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from unittest import mock

from backupd import cli
from tests.adversarial.main_repository_views import views

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = json.loads((FIXTURES / "main_repository.views.json").read_text())


def differences(expected: Any, found: Any, where: str = "") -> list[str]:
    """Every place where ``found`` is not ``expected``, by its path in the document. A key
    the previous release did not show is a new field, added beside the old ones: not a
    difference (an old field gone, or changed, is)."""
    if isinstance(expected, dict) and isinstance(found, dict):
        return [diff for key in sorted(expected.keys())
                for diff in differences(expected.get(key, "<absent>"), found.get(key, "<absent>"), f"{where}/{key}")]
    if isinstance(expected, list) and isinstance(found, list) and len(expected) == len(found):
        return [diff for index, (e, f) in enumerate(zip(expected, found, strict=True))
                for diff in differences(e, f, f"{where}[{index}]")]
    return [] if expected == found else [f"{where}: was {expected!r}, now {found!r}"]


def copy_of_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "backups"
    shutil.copytree(FIXTURES / "main_repository", folder)
    return folder


# ``prune`` lists more than that release did: volume archives, and each base backup with the
# rules that keep it (one retention engine). Every row it showed is shown as it was.
ADDED_ROWS = ("  volume ", "  (PITR ")


def _prune_rows(view: list[Any], added: bool = False) -> list[Any]:
    code, table = view
    return [code, [line.split() for line in table.splitlines() if any(t in line for t in ADDED_ROWS) == added]]


def test_every_view_of_the_previous_releases_repository_is_as_it_was(tmp_path):
    found = views(copy_of_fixture(tmp_path), RECORDED["env"])
    expected = {**RECORDED["views"], "prune": _prune_rows(RECORDED["views"]["prune"])}
    assert differences(expected, {**found, "prune": _prune_rows(found["prune"])}) == []
    (base,) = [row for row in _prune_rows(found["prune"], added=True)[1] if row[0].startswith("base-")]
    assert base[3:7] == ["keep", "younger", "than", "36500"]


def test_the_previous_releases_dump_verifies_and_its_pin_holds(cluster, tmp_path, capsys):
    folder = copy_of_fixture(tmp_path)
    (pinned,) = [entry for entry in RECORDED["views"]["list"][1] if entry["pinned"]]
    env = {**RECORDED["env"], **cluster.env(), "BACKUP_DIR": str(folder)}
    with mock.patch.dict(os.environ, env):
        assert cli.main(["verify", pinned["id"]]) == 0, capsys.readouterr().err
        capsys.readouterr()
        assert cli.main(["list", "--json"]) == 0
    listed = {entry["id"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listed[pinned["id"]]["verified"] == "passed" and listed[pinned["id"]]["pinned"]
