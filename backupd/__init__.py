"""backupd: a PostgreSQL backup daemon for docker compose stacks."""

__version__ = "0.1.0"
