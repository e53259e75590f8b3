"""Side databases that a killed restore left: found, reported and dropped.

A swap restore builds ``<db>__restoring_<time>`` beside the live database: a full copy.
When the restore is killed (``kill -9``, a lost container), nothing drops it. backupd marks
each side database when it creates it, with a database COMMENT naming the live database and
a token derived from both names. pg_restore into the database leaves the comment alone (a
dump made without ``--create`` carries no COMMENT ON DATABASE), and a database that merely
has the name's shape has no such comment: only marked ones are reported or dropped.

A running restore holds an advisory lock on its database, so the next restore of that
database drops the leftovers of killed ones and never the side database of a live one.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from backupd.dbnames import side_name
from backupd.logging import get_logger
from backupd.postgres import Server, drop_database

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.leftovers")

_MARK = re.compile(r"backupd: side database of a restore of (?P<live>.*) \[(?P<token>[0-9a-f]{16})\]", re.DOTALL)
_STAMP = re.compile(r"__restoring_(?P<stamp>\d{8}T\d{6})$")
VIEW_SECONDS = 60.0  # the daemon looks at most this often (a look costs a connection)


def _token(side: str, live: str) -> str:
    return hashlib.sha256(f"backupd-side\0{side}\0{live}".encode()).hexdigest()[:16]


def mark_text(side: str, live: str) -> str:
    return f"backupd: side database of a restore of {live} [{_token(side, live)}]"


def mark(admin: psycopg.Connection, side: str, live: str) -> None:
    """Mark a side database as backupd's own, at once after creating it."""
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(side),
                                                                 sql.Literal(mark_text(side, live))))


@dataclass(frozen=True)
class Leftover:
    name: str  # the side database
    live: str  # the database its restore was for

    @property
    def command(self) -> str:
        quoted = '"' + self.name.replace('"', '""') + '"'
        return f"DROP DATABASE {quoted};"

    @property
    def detail(self) -> str:
        return (f"database {self.name!r} was left by a restore of {self.live!r} that did not finish; it is a full "
                f"copy that nothing uses: the next restore of {self.live!r} drops it, or drop it now: "
                f"{self.command}")

    def summary(self) -> dict[str, str | None]:
        return {"status": "leftover", "database": self.name, "file": None, "problem": self.detail,
                "command": self.command}


def _marked(name: str, comment: str | None) -> Leftover | None:
    """The leftover ``name`` is, when its name and its mark are both backupd's."""
    stamp, found = _STAMP.search(name), _MARK.fullmatch(comment or "")
    if not stamp or not found:
        return None
    live = found.group("live")
    if found.group("token") != _token(name, live) or name != _side_name_at(live, stamp.group("stamp")):
        return None
    return Leftover(name, live)


def _side_name_at(live: str, stamp: str) -> str:
    return side_name(live, datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC))


def find(conn: psycopg.Connection) -> list[Leftover]:
    """Every marked side database on the server. A running restore's side database is one
    too while it runs: ``drop_for`` tells them apart by the restore's lock."""
    rows = conn.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                        "WHERE datname ~ '__restoring_[0-9]{8}T[0-9]{6}$' ORDER BY 1").fetchall()
    return [found for name, comment in rows if (found := _marked(name, comment))]


def drop_for(admin: psycopg.Connection, live: str) -> list[str]:
    """Drop the side databases that killed restores of ``live`` left. Only called while
    holding the restore lock of ``live``, so none of them belongs to a running restore."""
    dropped = []
    for leftover in find(admin):
        if leftover.live == live:
            log.warning("dropping a side database that an interrupted restore left", database=leftover.name)
            drop_database(admin, leftover.name)
            dropped.append(leftover.name)
    return dropped


def look(settings: Settings) -> list[Leftover]:
    """The leftovers on the configured server, for ``list``; none when it cannot be reached
    (list is about the repository, and says nothing false about the server)."""
    try:
        with Server.from_settings(settings).connect("postgres", connect_timeout=3) as conn:
            return find(conn)
    except psycopg.Error as err:
        log.info("could not look for databases left by interrupted restores", error=str(err).strip())
        return []


class LeftoverView:
    """The daemon's view for /healthz and /status: looked up in the background at most once
    a minute, so that an endpoint never waits for the server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._found: tuple[float, list[Leftover]] | None = None
        self._refreshing = False

    def current(self) -> list[Leftover]:
        with self._lock:
            stale = self._found is None or time.monotonic() - self._found[0] > VIEW_SECONDS
            if stale and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self.refresh, name="leftover view", daemon=True).start()
            return self._found[1] if self._found else []

    def refresh(self) -> None:
        found = look(self.settings)
        with self._lock:
            self._found, self._refreshing = (time.monotonic(), found), False
