"""The command line's grammar: every verb, its flags and its help, and nothing it does.

``cli.py`` runs what this parses. Only argparse is imported here: ``--help`` and the
Docker health check load nothing else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backupd import __version__

CLUSTER_HELP = ("the cluster (system identifier, a folder under BACKUP_DIR/_pitr); default: the connected "
                "server's, or the only one")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backupd", description="PostgreSQL backups for docker compose stacks.")
    parser.add_argument("--version", action="version", version=f"backupd {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for add in (_add_backup_verbs, _add_restore_verbs, _add_volume_verbs, _add_pitr_verbs, _add_service_verbs):
        add(verbs)
    return parser


def _add_backup_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """backup, pin, unpin, prune, list."""
    backup = verbs.add_parser("backup", help="back up now; prints the new backup ids")
    backup.add_argument("--database", action="append", metavar="NAME", help="only this database (repeatable)")
    backup.add_argument("--label", metavar="TEXT", help="stored in the manifest, e.g. pre-deploy")
    backup.add_argument("--pin", action="store_true", help="keep the new backups whatever retention says")

    for verb, text in (("pin", "keep a backup whatever retention says"), ("unpin", "let retention decide again")):
        pinning = verbs.add_parser(verb, help=text)
        pinning.add_argument("id", metavar="ID", help="a backup id, or a base backup's (base-YYYYmmddTHHMMSSZ)")
        pinning.add_argument("--cluster", metavar="ID", help="the cluster of a base backup, when several hold it")

    prune = verbs.add_parser("prune", help="apply retention now; prints every backup with its decision")
    prune.add_argument("--dry-run", action="store_true", help="delete nothing, say what would go and why")
    prune.add_argument("--database", metavar="NAME")

    listing = verbs.add_parser("list", help="list backups, newest first")
    listing.add_argument("--database", metavar="NAME")
    listing.add_argument("--target", metavar="URL", help="the backups on a replication target")
    listing.add_argument("--instance", metavar="NAME", type=_instance_name,
                         help="only the backups this instance (BACKUP_INSTANCE) made")
    listing.add_argument("--json", action="store_true", help="a JSON document on stdout")


def _add_restore_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """restore, verify."""
    restore = verbs.add_parser(
        "restore", help="restore a backup into its own database, a new one, or one you name",
        description="Restore a backup. It goes to the backup's own database (created when it is gone), to a new "
                    "database with --into, or over another existing database only with --over NAME. Replacing "
                    "an existing database needs --yes (or FORCE_RESTORE=true, or a yes at a terminal).")
    restore.add_argument("source", metavar="ID|latest|PATH|URL")
    restore.add_argument("--database", metavar="NAME",
                         help="selects backups: whose backup 'latest' means; never where the restore goes")
    restore.add_argument("--into", metavar="NEWDB", help="create this new database and restore into it")
    restore.add_argument("--over", metavar="NAME",
                         help="replace this existing database with the backup's data, even when the backup is "
                              "of another database (with --yes)")
    restore.add_argument("--instance", metavar="NAME", type=_instance_name,
                         help="another instance's backups on a shared target (by default only this instance's)")
    restore.add_argument("--jobs", type=_positive, default=1, metavar="N", help="pg_restore workers")
    restore.add_argument("--yes", action="store_true", help="restore over an existing database (FORCE_RESTORE=true)")
    restore.add_argument("--drop-old", action="store_true", help="drop the replaced database after the swap")
    restore.add_argument("--in-place", action="store_true",
                         help="drop, recreate, restore: for disks without room for two copies")

    verify = verbs.add_parser("verify", help="restore backups into a scratch database and compare them")
    verify.add_argument("source", nargs="?", metavar="ID|latest|PATH", help="default: the newest of each database")
    verify.add_argument("--database", metavar="NAME")


def _add_volume_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """volumes backup|list|restore, replicate."""
    volumes = verbs.add_parser("volumes", help="archive, list and restore Docker volumes (VOLUME_PATHS)")
    volume_verbs = volumes.add_subparsers(dest="volume_verb", required=True, metavar="COMMAND")
    volume_backup = volume_verbs.add_parser("backup", help="archive volumes now")
    volume_backup.add_argument("--volume", action="append", metavar="NAME")
    volume_list = volume_verbs.add_parser("list", help="volume archives, newest first")
    volume_list.add_argument("--volume", metavar="NAME")
    volume_list.add_argument("--json", action="store_true")
    volume_restore = volume_verbs.add_parser("restore", help="make a volume identical to an archive")
    volume_restore.add_argument("source", metavar="ID|latest")
    volume_restore.add_argument("--volume", metavar="NAME")
    volume_restore.add_argument("--to", type=Path, metavar="PATH", help="restore here instead of the volume's path")
    volume_restore.add_argument("--yes", action="store_true", help="a non-empty destination is replaced")

    replicate = verbs.add_parser("replicate", help="copy backups to the replication targets now")
    replicate.add_argument("--target", metavar="URL", help="only this target")


def _add_pitr_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """pitr base|status|restore|verify."""
    pitr = verbs.add_parser("pitr", help="point-in-time recovery: base backups, the recovery window, restores")
    pitr_verbs = pitr.add_subparsers(dest="pitr_verb", required=True, metavar="COMMAND")
    pitr_verbs.add_parser("base", help="a base backup now")
    pitr_status = pitr_verbs.add_parser("status", help="the recovery window, the slot, the lag, the base backups")
    pitr_status.add_argument("--json", action="store_true")
    pitr_status.add_argument("--cluster", metavar="ID", help=CLUSTER_HELP)
    pitr_restore = pitr_verbs.add_parser(
        "restore", help="build a data directory that PostgreSQL recovers to a moment, then promotes")
    pitr_restore.add_argument("--time", required=True, metavar="TIME|latest",
                              help="the moment to recover to: latest, '10 minutes ago' (seconds, minutes, hours, "
                                   "days), or ISO 8601 (local time in the zone TZ names unless it has an offset)")
    pitr_restore.add_argument("--to", metavar="DIR",
                              help="the data directory to build (the database server must be stopped)")
    pitr_restore.add_argument("--database", metavar="NAME", help="one database as of TIME, into the running "
                              "server (--into NEWDB or --over NAME), instead of --to")
    pitr_restore.add_argument("--into", metavar="NEWDB", help="with --database: create this new database")
    pitr_restore.add_argument("--over", metavar="NAME", help="with --database: replace this database (safe swap)")
    pitr_restore.add_argument("--yes", action="store_true",
                              help="a non-empty DIR is emptied first: its content is moved aside inside it, kept")
    pitr_restore.add_argument("--cluster", metavar="ID", help=CLUSTER_HELP)
    pitr_restore.add_argument("--dry-run", action="store_true",
                              help="print the plan (base backup, WAL, last commit, room, duration); touch nothing")
    pitr_verify = pitr_verbs.add_parser(
        "verify", help="the PITR drill now: recover the newest base backup and WAL, check, remove")
    pitr_verify.add_argument("--cluster", metavar="ID", help=CLUSTER_HELP)


def _add_service_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """run, health, config, notify test."""
    verbs.add_parser("run", help="the daemon: scheduled jobs, /metrics, /healthz and /status")
    verbs.add_parser("health", help="exit 0 when the daemon is healthy, 1 when not (Docker HEALTHCHECK)")
    verbs.add_parser("config", help="print the effective configuration, secrets masked")
    notify = verbs.add_parser("notify", help="notification channels (NOTIFICATION_URLS, e-mail, webhook)")
    notify_verbs = notify.add_subparsers(dest="notify_verb", required=True, metavar="COMMAND")
    notify_verbs.add_parser("test", help="send a test message to every channel; one line per channel")


def _instance_name(text: str) -> str:
    from backupd.origin import check_instance

    try:
        return check_instance(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def ids_as_positionals(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """A database may be called "-" or "--x", so an id may start with a dash, and argparse
    would take it for an option: such an id (never the value of an option) goes after "--"."""
    actions = _all_actions(parser)
    options = {option for action in actions for option in action.option_strings}
    if "--" in argv or not any(arg.startswith("-") and arg.split("=", 1)[0] not in options for arg in argv):
        return argv  # nothing but options: no need to load the repository's id rules
    from backupd.repository import looks_like_id

    takes_value = {option for action in actions if action.nargs != 0 for option in action.option_strings}
    dashed = [i for i, arg in enumerate(argv) if arg.startswith("-") and looks_like_id(arg)
              and not (i and argv[i - 1] in takes_value)]
    if not dashed or "--" in argv:
        return argv
    return [a for i, a in enumerate(argv) if i not in dashed] + ["--"] + [argv[i] for i in dashed]


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _all_actions(sub)
    return found
