"""The error tree. The CLI maps each class to an exit code in one place."""


class BackupdError(Exception):
    """Base class: an operation failed (exit 1)."""

    exit_code = 1


class UsageError(BackupdError):
    """Bad usage, bad configuration or refused for safety (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(problems))


class RefusedError(UsageError):
    """Refused for safety: nothing was touched."""


class NotFoundError(UsageError):
    """The named backup, database or file does not exist."""


class ConnectionFailed(BackupdError):
    """The PostgreSQL server could not be reached or refused us."""


class DumpError(BackupdError):
    """pg_dump, a pipeline stage or the archive check failed."""


class RestoreError(BackupdError):
    """A restore failed; the target database is left as it was."""


class IntegrityError(BackupdError):
    """A stored file does not match its manifest."""


class Aborted(BackupdError):
    """The operation was aborted (timeout or shutdown)."""


class StorageError(BackupdError):
    """BACKUP_DIR cannot be written (a full disk, a read-only mount, no permission)."""


class RepositoryUnreadable(BackupdError):
    """BACKUP_DIR (or a folder in it) exists but cannot be read: never the same as "no backups"."""
