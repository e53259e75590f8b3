"""Child processes: argv lists (never a shell), secrets only through the environment,
stderr kept as a short tail for error messages, and children that die with us.

A child's environment is built up, never inherited whole: from backupd's own it gets
only what any tool needs (PATH, HOME, the locale, TZ, TMPDIR, the dynamic linker's
settings) plus what its kind of tool needs (libpq's non-secret ``PG*`` settings for
pg_dump and its siblings, the ssh agent for ssh and rsync). Whatever the caller passes
(the libpq environment) is added; a secret in it reaches the libpq tools only. So no
secret, whatever its name (``MY_APP_SECRET``), reaches a child by accident.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from backupd import cancel
from backupd.errors import Aborted
from backupd.redact import is_secret_variable, redact_text

STDERR_TAIL_BYTES = 4000

# setpriv (util-linux) makes the kernel kill the child when its parent thread dies,
# so a dump can never go on writing after backupd was killed with SIGKILL.
_SETPRIV = shutil.which("setpriv")


# The tools that connect to PostgreSQL: the only children that get the database password.
LIBPQ_TOOLS = frozenset({"pg_dump", "pg_dumpall", "pg_restore", "psql", "pg_isready", "pg_basebackup",
                         "pg_receivewal"})

# What every child inherits from backupd's environment (names, and name prefixes).
_INHERITED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TZDIR", "TMPDIR",
                        "LD_LIBRARY_PATH", "LD_PRELOAD"})
_INHERITED_PREFIXES = ("LC_", "NSS_WRAPPER_")  # nss_wrapper: a container running as an arbitrary uid
# What a kind of tool inherits besides: libpq's own settings (PGSSLROOTCERT, PGSERVICEFILE...),
# the ssh agent.
_TOOL_PREFIXES = {**{tool: ("PG",) for tool in LIBPQ_TOOLS}, "ssh": ("SSH_AUTH_SOCK",),
                  "rsync": ("SSH_AUTH_SOCK",)}


def program_of(argv: Sequence[str]) -> str:
    """``/usr/lib/postgresql/17/bin/pg_dump`` -> ``pg_dump``."""
    return os.path.basename(argv[0]) if argv else ""


def is_libpq_tool(argv: Sequence[str]) -> bool:
    return program_of(argv) in LIBPQ_TOOLS


def _inherited(name: str, program: str) -> bool:
    return (name in _INHERITED or name.startswith(_INHERITED_PREFIXES)
            or name.startswith(_TOOL_PREFIXES.get(program, ())))


def child_environment(argv: Sequence[str], env: Mapping[str, str] | None = None,
                      user_command: bool = False) -> dict[str, str]:
    """The environment ``argv`` runs with. ``user_command``: a command the user configured
    (REPLICATION_COMMAND) also gets every other variable that is not secret, because it may
    need its own settings (e.g. a config file's path); its credentials belong in that file."""
    program = program_of(argv)
    built = {name: value for name, value in os.environ.items()
             if (user_command or _inherited(name, program)) and not is_secret_variable(name, value)}
    for name, value in (env or {}).items():
        if program in LIBPQ_TOOLS or not is_secret_variable(name, value):
            built[name] = value  # the database password is for the tools that connect, and them only
    return built


def dies_with_parent(argv: Sequence[str]) -> list[str]:
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    return list(argv)


@dataclass
class Child:
    """A running child process whose stderr goes to an unnamed temporary file."""

    name: str
    popen: subprocess.Popen[bytes]
    stderr_file: IO[bytes]
    secrets: tuple[str, ...] = ()
    ok_codes: tuple[int, ...] = (0,)
    tail: str = ""  # the stderr tail, kept when the child is closed

    def stderr_tail(self) -> str:
        try:
            self.stderr_file.seek(0, os.SEEK_END)
            size = self.stderr_file.tell()
            self.stderr_file.seek(max(0, size - STDERR_TAIL_BYTES))
            text = self.stderr_file.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return redact_text(text, self.secrets)

    def describe_failure(self) -> str:
        """'pg_dump exited with 1: <stderr tail>' or 'pg_dump was killed by SIGKILL'."""
        code = self.popen.returncode
        if code is not None and code < 0:
            what = f"{self.name} was killed by {signal.Signals(-code).name}"
        else:
            what = f"{self.name} exited with {code}"
        tail = self.stderr_tail()
        return f"{what}: {tail}" if tail else what

    def kill(self) -> None:
        """Kill the child and whatever it started (a user's script, ssh under rsync): each
        child leads a process group of its own."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self.stderr_file.close()


def spawn(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
    secrets: Sequence[str] = (),
    cwd: str | None = None,
    pass_fds: Sequence[int] = (),
    user_command: bool = False,
) -> Child:
    """Start ``argv`` with ``env`` added to the environment ``child_environment`` builds.
    ``secrets`` are scrubbed from its stderr tail. ``pass_fds`` are inherited (e.g. a pipe
    that carries a key as /dev/fd/N)."""
    full_env = child_environment(argv, env, user_command)
    stderr_file = tempfile.TemporaryFile()
    popen = subprocess.Popen(
        dies_with_parent(argv), stdin=stdin, stdout=stdout, stderr=stderr_file, env=full_env, cwd=cwd, close_fds=True,
        pass_fds=tuple(pass_fds),
        # A group of its own: killed as a whole, and a Ctrl-C at the terminal reaches backupd
        # alone, which then stops its children itself (the daemon only after SHUTDOWN_GRACE).
        process_group=0,
    )
    return Child(name=name, popen=popen, stderr_file=stderr_file, secrets=tuple(s for s in secrets if s))


def run(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    input_file: IO[bytes] | None = None,
    secrets: Sequence[str] = (),
    timeout: float | None = None,
    user_command: bool = False,
) -> tuple[int, bytes, str]:
    """Run to completion; returns (exit code, stdout, redacted stderr tail)."""
    child = spawn(name, argv, env=env, stdin=input_file or subprocess.DEVNULL, secrets=secrets,
                  user_command=user_command)
    stopper = _KillOnAbort(child)
    cancel.register(stopper)  # a shutdown or an interrupted command stops it too
    try:
        out, _ = child.popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.popen.communicate()
    finally:
        cancel.unregister(stopper)
        tail = child.stderr_tail()
        child.close()
    if reason := stopper.reason:
        raise Aborted(reason)
    return child.popen.returncode, out, tail


class _KillOnAbort:
    def __init__(self, child: Child):
        self.child = child
        self.reason: str | None = None

    def abort(self, reason: str) -> None:
        self.reason = reason
        self.child.kill()
