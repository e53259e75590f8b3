"""``ssh://user@host[:port]/path``: rsync over SSH.

rsync writes each file under a temporary name and renames it when complete, so a
half-sent file never looks like a copy. The copy is confirmed by running
``sha256sum`` on the remote host. ``BatchMode`` means a missing key or an unknown
host key fails at once instead of waiting for a password prompt.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.process import run
from backupd.targets.base import CopyRecord, LocalFile, NotReplaced, RemoteFile, Target, TargetError, check_local_file

if TYPE_CHECKING:
    from backupd.settings import Settings

TIMEOUT = 3600.0


class SshTarget(Target):
    def __init__(self, url: str, user: str | None, host: str, port: int | None, path: str, settings: Settings):
        self.url, self.host, self.path = url, host, path.rstrip("/") or "/"
        self.login = f"{user}@{host}" if user else host
        options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
                   "-o", "ServerAliveCountMax=3"]
        if port:
            options += ["-p", str(port)]
        if settings.ssh_key_file:
            options += ["-i", str(settings.ssh_key_file), "-o", "IdentitiesOnly=yes"]
        if settings.ssh_known_hosts_file:
            options += ["-o", f"UserKnownHostsFile={settings.ssh_known_hosts_file}", "-o", "StrictHostKeyChecking=yes"]
        self.ssh = ["ssh", *options]

    def _remote(self, relative: str) -> str:
        return f"{self.path}/{relative}"

    def _run_remote(self, what: str, command: str, timeout: float = 120) -> str:
        code, out, err = run("ssh", [*self.ssh, self.login, "--", command], timeout=timeout)
        if code != 0:
            error = TargetError(f"{what} at {self.url} failed: {err or f'ssh exited with {code}'}")
            error.permanent = code == 255 and ("Permission denied" in err or "Host key verification failed" in err)
            raise error
        return out.decode("utf-8", "replace")

    def list(self) -> dict[str, RemoteFile]:
        quoted = shlex.quote(self.path)
        out = self._run_remote("listing", f"mkdir -p {quoted} && find {quoted} -type f ! -name '.*' "
                                          "-printf '%P\\t%s\\t%T@\\n'")
        found = {}
        for line in out.splitlines():
            relative, size, mtime = line.rsplit("\t", 2)
            found[relative] = RemoteFile(relative, int(size), float(mtime))
        return found

    def _rsync(self, what: str, source: str, destination: str, options: tuple[str, ...] = ()) -> None:
        argv = ["rsync", "--protect-args", "--times", "--chmod=D700,F600", "--mkpath", *options,
                "-e", shlex.join(self.ssh), source, destination]
        code, _, err = run("rsync", argv, timeout=TIMEOUT)
        if code != 0:
            raise TargetError(f"{what} {self.url} failed: {err or f'rsync exited with {code}'}")

    def _remote_facts(self, relative: str) -> tuple[str, float]:
        quoted = shlex.quote(self._remote(relative))
        out = self._run_remote("checking a copy", f"sha256sum {quoted} && stat -c %Y {quoted}").split()
        return out[0], float(out[-1])

    def _existing_sha256(self, relative: str) -> str | None:
        quoted = shlex.quote(self._remote(relative))
        out = self._run_remote("checking a copy", f"if [ -e {quoted} ]; then sha256sum {quoted}; fi").split()
        return out[0] if out else None

    def put(self, file: LocalFile, replace: bool = False) -> CopyRecord:
        check_local_file(file)  # rsync would replace a good copy there with a damaged one
        if not replace and (existing := self._existing_sha256(file.relative)) is not None:
            if existing != file.sha256:
                raise NotReplaced(file.relative, self.url)
            return {"mtime": self._remote_facts(file.relative)[1]}
        # rsync has no exclusive create: the check above, then --ignore-existing, leaves only
        # the moment between rsync's own check and its rename; the checksum below catches that.
        self._rsync("sending to", str(file.path), f"{self.login}:{self._remote(file.relative)}",
                    () if replace else ("--ignore-existing",))
        remote_sha, mtime = self._remote_facts(file.relative)
        if remote_sha != file.sha256:
            raise TargetError(f"the copy of {file.relative} at {self.url} does not match its checksum")
        return {"mtime": mtime}

    def get(self, relative: str, destination: Path) -> None:
        self._rsync("fetching from", f"{self.login}:{self._remote(relative)}", str(destination))

    def delete(self, relative: str) -> None:
        self._run_remote("deleting", f"rm -f {shlex.quote(self._remote(relative))}")
