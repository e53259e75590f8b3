"""The choice of client tools for a server, as pure logic (the real servers and tools of
every major are in tests/matrix/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupd import pgtools
from backupd.pgtools import Tools, ToolsMissing, for_server, version_major


def tools(*majors: int) -> list[Tools]:
    return [Tools(m, Path(f"/usr/lib/postgresql/{m}/bin"), f"pg_dump (PostgreSQL) {m}.1") for m in majors]


@pytest.fixture
def installed(monkeypatch):
    def having(*majors: int) -> None:
        monkeypatch.setattr(pgtools, "installed", lambda _bindir: tools(*majors))
    return having


@pytest.mark.parametrize("text, major", [
    ("pg_dump (PostgreSQL) 17.11", 17),
    ("pg_dump (PostgreSQL) 17.11 (Debian 17.11-1.pgdg120+1)", 17),
    ("pg_dump (PostgreSQL) 18beta1", 18),
    ("pg_restore (PostgreSQL) 9.6.24", 9),
    ("no version here", None),
])
def test_versions_are_read_as_tools_print_them(text, major):
    assert version_major(text) == major


def test_the_servers_own_major_wins(installed):
    installed(14, 15, 16, 17, 18)
    assert for_server(Path("/x"), 16).major == 16
    assert for_server(Path("/x"), 18).major == 18


def test_the_nearest_newer_major_serves_a_server_without_its_own(installed):
    installed(13, 15, 16)
    assert for_server(Path("/x"), 14).major == 15
    assert for_server(Path("/x"), 12).major == 13


def test_newer_tools_that_set_a_parameter_the_server_lacks_are_skipped(installed):
    installed(15, 17, 18)
    with pytest.raises(ToolsMissing, match="transaction_timeout"):
        for_server(Path("/x"), 16)
    assert for_server(Path("/x"), 16, server_knows=frozenset({"transaction_timeout"})).major == 17


def test_a_restore_needs_tools_at_least_as_new_as_the_archive(installed):
    installed(14, 15, 16)
    assert for_server(Path("/x"), 14, archive_major=15).major == 15
    with pytest.raises(ToolsMissing, match="dump made by pg_dump 17"):
        for_server(Path("/x"), 14, archive_major=17)


def test_a_server_newer_than_every_client_names_both_versions(installed):
    installed(14, 15)
    with pytest.raises(ToolsMissing) as refused:
        for_server(Path("/usr/lib/postgresql"), 19, "19.0")
    message = str(refused.value)
    assert "PostgreSQL 19 server (19.0)" in message and "the newest is 15" in message
    assert "postgresql-client-19" in message and "PG_BINDIR=/usr/lib/postgresql" in message
    installed()
    with pytest.raises(ToolsMissing, match="none was found"):
        for_server(Path("/x"), 17)


def test_only_the_parameters_of_newer_majors_are_asked(installed):
    installed(15, 16)
    assert pgtools.settings_to_ask(Path("/x"), 15) == ()
    installed(15, 16, 18)
    assert pgtools.settings_to_ask(Path("/x"), 16) == ("transaction_timeout",)
