"""age encryption in the byte pipeline, with the standard ``age`` tool.

Backups are encrypted to public keys (``age1...`` or ssh public keys), so a
sidecar without BACKUP_ENCRYPTION_IDENTITY cannot read its own old backups. The
identity, needed only to verify and restore, reaches ``age -d`` through an
inherited pipe (``-i /dev/fd/N``): never in argv, never written to disk.
There is no passphrase mode: the age CLI reads passphrases only from a terminal.
"""

from __future__ import annotations

import os
import re

from backupd.errors import UsageError

SUFFIX = ".age"
_RECIPIENT = re.compile(r"^(age1[0-9a-z]{58}|ssh-(ed25519|rsa) [A-Za-z0-9+/=]+( .*)?)$")


def check_recipient(text: str) -> str:
    if not _RECIPIENT.match(text.strip()):
        raise ValueError(f"{text[:24]!r}... is not an age recipient (age1...) or an ssh-ed25519/ssh-rsa public key")
    return text.strip()


def check_identity(text: str) -> str:
    if "AGE-SECRET-KEY-1" not in text and "PRIVATE KEY-----" not in text:
        raise ValueError("is not an age identity (AGE-SECRET-KEY-1...) or an ssh private key")
    return text


def encrypt_stage(recipients: tuple[str, ...]) -> tuple[str, list[str]]:
    argv = ["age", "--encrypt"]
    for recipient in recipients:
        argv += ["--recipient", recipient]
    return "age", argv


def decrypt_stage(identity: str | None, what: str) -> tuple[str, list[str], tuple[int]]:
    """A stage that decrypts its stdin; the identity travels in a pipe the stage inherits."""
    if not identity:
        raise UsageError(f"{what} is encrypted: restoring or verifying it needs BACKUP_ENCRYPTION_IDENTITY")
    data = identity.encode("utf-8")
    if not data.endswith(b"\n"):
        data += b"\n"
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)  # an identity is far smaller than a pipe's buffer
    finally:
        os.close(write_end)
    return "age", ["age", "--decrypt", "--identity", f"/dev/fd/{read_end}"], (read_end,)
