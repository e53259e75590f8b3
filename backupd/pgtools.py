"""Which PostgreSQL client tools serve which server.

One image carries the client tools of several majors side by side, in Debian's layout
``<PG_BINDIR>/<major>/bin``. For each server backupd takes the tools of the server's own
major; where those are missing, the nearest newer major, because pg_dump, pg_dumpall,
pg_restore and psql all work with servers older than themselves (never newer ones: an
older pg_dump refuses a newer server, and an older pg_restore cannot read the archive of
a newer pg_dump). Tools on ``PATH`` count too, so a non-Debian layout still works.

Newer is not always safe, though: the script that restores a dump starts by setting a few
parameters, and a newer major sets parameters an older server lacks (17 sets
``transaction_timeout``; a PostgreSQL 16 server rejects it, so a dump of a 16 server made
by pg_dump 17 cannot be restored into a 16 server). Newer tools are taken only when the
server knows every parameter they set; the caller asks the server which it knows.

A server newer than every installed pg_dump is refused before anything is written.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd.errors import BackupdError, DumpError
from backupd.process import run

if TYPE_CHECKING:
    import psycopg

    from backupd.settings import Settings

# The parameters that the restore scripts of a major (and every later one) set at their
# start, that servers before that major lack (pg_backup_archiver.c, _doSetFixedOutputState).
RESTORE_SETTINGS_SINCE: dict[int, tuple[str, ...]] = {17: ("transaction_timeout",)}

_VERSION = re.compile(r"(\d+)(?:\.\d+)?")


@dataclass(frozen=True)
class Tools:
    """The client tools of one major, all from one folder."""

    major: int
    bindir: Path
    version: str  # what pg_dump --version printed, e.g. "pg_dump (PostgreSQL) 17.11"

    def path(self, tool: str) -> str:
        return str(self.bindir / tool)

    def describe(self) -> dict[str, object]:
        """How the manifest, ``config`` and ``/status`` name them."""
        return {"major": self.major, "bindir": str(self.bindir), "version": self.version}


class ToolsMissing(DumpError):
    """No installed client tools can serve this server (or read this archive)."""


def version_major(text: str) -> int | None:
    """``pg_dump (PostgreSQL) 17.11 (Debian 17.11-1)`` -> 17; ``9.6.24`` -> 9."""
    match = _VERSION.search(text.rsplit(")", 1)[-1]) or _VERSION.search(text)
    return int(match.group(1)) if match else None


_PROBED: dict[tuple[Path, float], Tools] = {}
_PROBED_LOCK = threading.Lock()


def _probe(bindir: Path, mtime: float) -> Tools | None:
    """The tools in ``bindir``, by what their pg_dump says of itself (a folder's name can lie).
    Only an answer is remembered (per folder and pg_dump's mtime): a probe that failed once,
    on a busy machine, is tried again next time."""
    with _PROBED_LOCK:
        if (known := _PROBED.get((bindir, mtime))) is not None:
            return known
    try:
        code, out, _ = run("pg_dump", [str(bindir / "pg_dump"), "--version"], timeout=30)
    except (OSError, BackupdError):
        return None
    major = version_major(text := out.decode("utf-8", "replace").strip()) if code == 0 else None
    if major is None:
        return None
    with _PROBED_LOCK:
        _PROBED[(bindir, mtime)] = tools = Tools(major, bindir, text)
    return tools


def _tools_in(bindir: Path) -> Tools | None:
    tool = bindir / "pg_dump"
    try:
        if not os.access(tool, os.X_OK) or os.path.realpath(tool).endswith("/pg_wrapper"):
            # Debian's /usr/bin/pg_dump picks a major by itself on every call: not one folder of tools.
            return None
        mtime = tool.stat().st_mtime
    except OSError:
        return None
    return _probe(bindir.resolve(), mtime)


_warming: threading.Thread | None = None


def warm(pg_bindir: Path) -> None:
    """Start asking the installed tools their versions in the background. A one-shot
    ``backup`` calls this as soon as it has its settings: the ``pg_dump --version`` runs on
    another CPU while Python imports the rest, instead of between the connection and the dump."""
    global _warming
    _warming = threading.Thread(target=installed, args=(pg_bindir,), name="probe-tools", daemon=True)
    _warming.start()


def installed(pg_bindir: Path) -> list[Tools]:
    """Every major's tools under ``pg_bindir`` and on PATH, oldest first, one per major
    (the one in ``pg_bindir`` wins over PATH's)."""
    if (warming := _warming) is not None and warming is not threading.current_thread():
        warming.join()  # its answers are remembered: the probes are not run twice
    found: dict[int, Tools] = {}
    on_path = shutil.which("pg_dump")
    folders = []
    try:
        folders = sorted((entry for entry in pg_bindir.iterdir() if entry.name.isdigit()),
                         key=lambda entry: int(entry.name))
    except OSError:
        pass
    for bindir in [*(folder / "bin" for folder in folders), *([Path(on_path).parent] if on_path else [])]:
        tools = _tools_in(bindir)
        if tools is not None and tools.major not in found:
            found[tools.major] = tools
    return [found[major] for major in sorted(found)]


def settings_set_by(major: int) -> tuple[str, ...]:
    """The parameters the restore scripts of ``major`` set that some older servers lack."""
    return tuple(name for since, names in sorted(RESTORE_SETTINGS_SINCE.items()) if since <= major for name in names)


def settings_to_ask(pg_bindir: Path, server_major: int) -> tuple[str, ...]:
    """The parameters a server must be asked about before newer tools could serve it."""
    newer = [tools.major for tools in installed(pg_bindir) if tools.major > server_major]
    return settings_set_by(max(newer)) if newer else ()


def for_connection(pg_bindir: Path, conn: psycopg.Connection, archive_major: int = 0) -> Tools:
    """``for_server`` for the server behind ``conn``, asked for its version and parameters."""
    from backupd.postgres import server_version

    number, text = server_version(conn)
    ask = settings_to_ask(pg_bindir, number // 10000)
    known = frozenset(name for (name,) in conn.execute("SELECT name FROM pg_settings WHERE name = ANY(%s)",
                                                        (list(ask),)).fetchall()) if ask else frozenset()
    return for_server(pg_bindir, number // 10000, text, archive_major, known)


def for_server(pg_bindir: Path, server_major: int, server_text: str = "", archive_major: int = 0,
               server_knows: frozenset[str] = frozenset()) -> Tools:
    """The tools for a server of ``server_major``: its own major, else the nearest newer one
    whose restore scripts set only parameters the server knows (``server_knows``: those of
    ``settings_to_ask`` that it has). ``archive_major`` (the pg_dump that wrote an archive
    being restored) raises the floor: pg_restore reads archives of its own major and older."""
    floor = max(server_major, archive_major)
    available = installed(pg_bindir)
    unsafe: list[str] = []
    for tools in available:
        if tools.major < floor:
            continue
        missing = [name for name in settings_set_by(tools.major) if name not in server_knows]
        if tools.major == server_major or not missing:
            return tools
        unsafe.append(f"{tools.major} (its restore scripts set {', '.join(missing)}, "
                      f"which this server does not have)")
    server = f"PostgreSQL {server_major} server" + (f" ({server_text})" if server_text else "")
    if archive_major > server_major:
        need = f"a restore of a dump made by pg_dump {archive_major} into a {server}"
    else:
        need = f"a {server}"
    if unsafe:
        found = "unusable: " + "; ".join(unsafe)
    elif available:
        found = f"the newest is {available[-1].major} ({available[-1].bindir})"
    else:
        found = "none was found"
    raise ToolsMissing(f"no PostgreSQL client tools of major {floor} or a safe newer one for {need}: {found} "
                       f"under PG_BINDIR={pg_bindir} or on PATH. Install postgresql-client-{floor} "
                       f"(or use a backupd image that has it)")


def servers_and_their_tools(settings: Settings) -> list[dict[str, Any]]:
    """For ``config`` and ``/status``: each configured server (DB_*, and VERIFY_DB_* where it
    differs) with its version and the tools it gets, or why that cannot be told now. One
    connection attempt each, never a wait: a server that is down is reported, not awaited."""
    import psycopg

    from backupd.postgres import Server, server_version

    servers = {"database": Server.from_settings(settings), "verification": Server.for_verification(settings)}
    if (servers["verification"].host, servers["verification"].port) == (servers["database"].host,
                                                                         servers["database"].port):
        del servers["verification"]
    found: list[dict[str, Any]] = []
    for role, server in servers.items():
        entry: dict[str, Any] = {"role": role, "server": f"{server.host}:{server.port}"}
        try:
            with server.connect("postgres") as conn:
                entry["version"] = server_version(conn)[1]
                entry["tools"] = for_connection(settings.pg_bindir, conn).describe()
        except ToolsMissing as err:
            entry["error"] = str(err)
        except psycopg.Error as err:
            text = str(err).strip()
            entry["error"] = f"cannot be asked now: {text.splitlines()[0] if text else type(err).__name__}"
        except Exception as err:  # a tool that cannot start, a shutdown: this server only
            entry["error"] = f"cannot be told now: {err}"
        found.append(entry)
    return found


def summary(settings: Settings) -> dict[str, Any]:
    return {"installed": [tools.describe() for tools in installed(settings.pg_bindir)],
            "servers": servers_and_their_tools(settings)}
