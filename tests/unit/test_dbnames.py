"""backupd's own database names are recognised exactly, and nothing else is."""

from __future__ import annotations

import pytest

from backupd.dbnames import old_name, scratch_name, side_name
from backupd.postgres import is_scratch_database


@pytest.mark.parametrize("name", [side_name("shop"), old_name("shop"), scratch_name("shop"),
                                  side_name("x" * 80), old_name("ünïcødé " * 10), scratch_name("a" * 63)])
def test_the_names_backupd_makes_are_its_own(name):
    assert len(name.encode()) <= 63 and is_scratch_database(name)


@pytest.mark.parametrize("name", ["notes__restoring_plan", "a__before_restore_x", "backupd_verify_mine",
                                  "shop__restoring_20261123T123539_copy", "my_backupd_verify_8d9001d3_20261123T123539"])
def test_user_databases_that_only_look_alike_are_backed_up(name):
    assert not is_scratch_database(name)
