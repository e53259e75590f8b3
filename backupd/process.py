"""Child processes: argv lists (never a shell), secrets only through the environment,
stderr kept as a short tail for error messages, and children that die with us.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import IO, Mapping, Sequence

from backupd.redact import redact_text

STDERR_TAIL_BYTES = 4000

# setpriv (util-linux) makes the kernel kill the child when its parent thread dies,
# so a dump can never go on writing after backupd was killed with SIGKILL.
_SETPRIV = shutil.which("setpriv")


def _argv(argv: Sequence[str]) -> list[str]:
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    return list(argv)


@dataclass
class Child:
    """A running child process whose stderr goes to an unnamed temporary file."""

    name: str
    popen: subprocess.Popen
    stderr_file: IO[bytes]
    secrets: tuple[str, ...] = ()
    killed_by_us: bool = field(default=False)
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
        if self.popen.poll() is None:
            self.killed_by_us = True
            try:
                self.popen.kill()
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
) -> Child:
    """Start ``argv`` with ``env`` added to our environment. ``secrets`` are scrubbed from its
    stderr tail. ``pass_fds`` are inherited (e.g. a pipe that carries a key as /dev/fd/N)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    stderr_file = tempfile.TemporaryFile()
    popen = subprocess.Popen(
        _argv(argv), stdin=stdin, stdout=stdout, stderr=stderr_file, env=full_env, cwd=cwd, close_fds=True,
        pass_fds=tuple(pass_fds),
    )
    return Child(name=name, popen=popen, stderr_file=stderr_file, secrets=tuple(s for s in secrets if s))


def run(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    input_file: IO[bytes] | None = None,
    secrets: Sequence[str] = (),
    timeout: float | None = None,
) -> tuple[int, bytes, str]:
    """Run to completion; returns (exit code, stdout, redacted stderr tail)."""
    child = spawn(name, argv, env=env, stdin=input_file or subprocess.DEVNULL, secrets=secrets)
    try:
        out, _ = child.popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.popen.communicate()
    finally:
        tail = child.stderr_tail()
        child.close()
    return child.popen.returncode, out, tail
