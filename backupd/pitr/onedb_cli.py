"""What ``backupd pitr restore --database NAME`` takes from the command line and prints."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from backupd.errors import UsageError
from backupd.repository import iso

if TYPE_CHECKING:
    from backupd.settings import Settings


def restore_one_database(settings: Settings, args: argparse.Namespace) -> int:
    """``--to`` builds a whole data directory, ``--database`` restores one database into
    the running server: exactly one of them."""
    from backupd.pitr.moment import parse_target
    from backupd.pitr.onedb import restore_database

    if args.database is None:
        raise UsageError("pitr restore needs --to DIR (a whole data directory) or --database NAME with --into NEWDB "
                         "or --over NAME (one database, into the running server)")
    if args.to is not None:
        raise UsageError("--to builds a whole data directory and --database restores one database into the running "
                         "server: give one of them")
    target = parse_target(args.time)
    print(f"restoring database {args.database} as of {iso(target) or 'the end of the WAL received'} (UTC)",
          flush=True)
    done = restore_database(settings, target, args.database, args.into, args.over, args.yes, args.cluster)
    for note in done.notes:
        print(f"note: {note}")
    result = done.result
    if result.roles_created:
        print(f"roles created: {', '.join(result.roles_created)}")
    print(f"restored {done.database} as of {iso(target) or 'the end of the WAL received'} (base backup {done.base}) "
          f"into {result.database} in {result.seconds:.1f}s ({result.mode})", flush=True)
    if result.previous:
        print(f"the replaced database is kept as {result.previous}")
    return 0
