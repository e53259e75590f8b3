"""``REPLICATION_TYPE=custom``: runs ``REPLICATION_COMMAND SRC DEST`` for each file
(argv, no shell). backupd cannot check such copies: they are shown as unconfirmed
and count for neither retention nor restore, and nothing is deleted there."""

from __future__ import annotations

import shlex
from pathlib import Path

from backupd.process import run
from backupd.targets.base import CopyRecord, LocalFile, RemoteFile, Target, TargetError, check_local_file


class CommandTarget(Target):
    confirms = False

    def __init__(self, command: str, destination: str):
        self.argv = shlex.split(command)
        self.destination = destination.rstrip("/")
        self.url = f"custom:{self.destination}"

    def list(self) -> dict[str, RemoteFile]:
        return {}

    def put(self, file: LocalFile, replace: bool = False) -> CopyRecord:  # the command decides
        check_local_file(file)
        code, _, err = run(self.argv[0], [*self.argv, str(file.path), f"{self.destination}/{file.relative}"],
                           timeout=3600, user_command=True)
        if code != 0:
            raise TargetError(f"REPLICATION_COMMAND failed for {file.relative}: {err or f'exit {code}'}")
        return {"unconfirmed": True}

    def get(self, relative: str, destination: Path) -> None:
        raise TargetError("copies made by REPLICATION_COMMAND cannot be fetched by backupd")

    def delete(self, relative: str) -> None:
        return None
