"""The command line: argparse verbs -> actions. The only place that exits.

Results (ids, tables, JSON) go to stdout; logs go to stderr. Heavy modules (psycopg,
pydantic, structlog) are imported only once a command needs them: ``--help`` and the
Docker health check (``health``, every 30 s) start in a fraction of the time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from backupd import cancel
from backupd.cli_health import health_check
from backupd.cli_parser import build_parser, ids_as_positionals
from backupd.errors import BackupdError, ConfigError
from backupd.progress import TerminalProgress, human_bytes, print_table

if TYPE_CHECKING:
    from backupd.repository import Backup, Problem
    from backupd.settings import Settings


class _Log:
    """backupd.cli's logger, made on first use (structlog's import is the slow part)."""

    def __getattr__(self, name: str) -> Any:
        from backupd.logging import get_logger

        return getattr(get_logger("backupd.cli"), name)


log = _Log()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(ids_as_positionals(parser, sys.argv[1:] if argv is None else argv))
    os.umask(0o077)  # every file backupd writes is private
    if args.verb == "health":
        return health_check(os.environ)
    from backupd.logging import configure_logging
    from backupd.settings import load_settings

    try:
        settings = load_settings()
    except ConfigError as err:
        for problem in err.problems:
            print(f"backupd: configuration error: {problem}", file=sys.stderr)
        return err.exit_code
    if args.verb == "backup":
        from backupd import pgtools

        pgtools.warm(settings.pg_bindir)
    configure_logging(settings.log_level, settings.log_format)
    if args.verb != "run":  # the daemon has its own graceful stop
        cancel.abort_on_signals()
    try:
        code = COMMANDS[args.verb](settings, args)
    except BackupdError as err:
        log.error(f"{args.verb} failed", error=str(err))
        code = err.exit_code
    except OSError as err:  # a disk, a folder or a file: one clear line, never a traceback
        where = f"{err.filename}: " if err.filename else ""
        log.error(f"{args.verb} failed", error=f"{where}{err.strerror or err}")
        code = 1
    except Exception as err:
        if not _is_database_error(err):
            raise
        # A server that went away mid-way is a failure, not a crash.
        log.error(f"{args.verb} failed", error=f"the database connection failed: {str(err).strip()}")
        code = 1
    if signum := cancel.interrupted_by():
        return _interrupted(args, signum, code)
    if args.verb in REPORTED:
        _report(settings)
    return code


def _is_database_error(err: Exception) -> bool:
    """psycopg's errors, told apart without importing psycopg: a command that never
    imported it (most do not need it before their work starts) cannot have raised one."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(err, psycopg.Error)


REPORTED = {"backup", "verify", "replicate", "volumes"}


def _interrupted(args: argparse.Namespace, signum: int, code: int) -> int:
    """Said last, after what did finish (ids on stdout, failures above): what really
    happened. A command whose work all finished before the signal took effect keeps its
    own exit code; otherwise the exit code is 128 + the signal (130 SIGINT, 143 SIGTERM)."""
    name = signal.Signals(signum).name
    unfinished = getattr(args, "unfinished", None)
    if code == 0 and not unfinished:
        log.warning(f"{args.verb} interrupted by {name} only as it ended: everything it did had finished")
        return code
    log.warning(f"{args.verb} interrupted by {name}: its child processes were stopped; {_what_was_left(args)}")
    return 128 + signum


def _what_was_left(args: argparse.Namespace) -> str:
    if args.verb == "backup":
        finished = ", ".join(getattr(args, "finished", [])) or "none"
        names = ", ".join(repr(n) for n in getattr(args, "unfinished", [])) or "the run"
        return (f"not finished, so neither kept nor listed: {names}; "
                f"finished before the signal (printed above): {finished}")
    if args.verb == "restore" and args.in_place:
        return ("nothing was restored; --in-place drops the database it replaces before it restores, "
                "so if the restore had begun that database is gone now: check, and run the restore again")
    if args.verb == "restore":
        return "nothing was restored; the database it was building was dropped, the existing one is as it was"
    if args.verb == "verify":
        return ("the check that was running was stopped, its scratch database dropped, and nothing recorded "
                "for it; checks that had finished before the signal are recorded (backupd list)")
    if args.verb == "replicate":
        return "copies it had not confirmed do not count, and the next run sends them again"
    if args.verb == "pitr" and args.pitr_verb == "restore" and args.database is not None:
        return ("nothing was restored: the private server was stopped, its scratch folder removed, and a database "
                "it was building dropped; the live databases are as they were")
    if args.verb == "pitr" and args.pitr_verb == "restore":
        return f"nothing was built: what it had begun was removed, and {args.to} is as it was"
    return "what it had not finished was not kept"


def _report(settings: Settings) -> None:
    """One-shot runs change health too: tell people what changed, as the daemon would."""
    from backupd.health import evaluate
    from backupd.notify import channels_configured, report_changes
    from backupd.repository import Repository, utc_now

    if not channels_configured(settings):
        return
    try:
        now = utc_now()
        report_changes(settings, evaluate(settings, Repository(settings.backup_dir), now, now))
    except Exception as err:  # notifications never change the command's result
        log.error("could not send notifications", error=str(err))


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.coordinator import backup

    progress = lambda name: TerminalProgress(f"backing up {name}")  # noqa: E731
    result = backup(settings, databases=args.database, label=args.label, progress=progress, pin=args.pin)
    for outcome in result.outcomes:
        if outcome.ok and outcome.backup_id:
            print(outcome.backup_id, flush=True)
    # For the last line when a signal interrupted the run (``_interrupted``).
    args.finished = [str(o.backup_id) for o in result.outcomes if o.ok and o.backup_id]
    args.unfinished = [o.database for o in [*result.outcomes, *([result.globals] if result.globals else [])]
                       if not o.ok]
    return 0 if result.ok else 1


def _listed(settings: Settings, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(backups, problems) of the repository or of a target, each backup with its instance."""
    from backupd import leftovers, origin
    from backupd.repository import Repository

    if args.target:
        from backupd.targets.fetch import list_remote

        found = [(b, i) for b, i in list_remote(settings, args.target, args.instance) if b.kind == "database"]
        return [{**b.summary(), "instance": instance, "status": "ok", "problem": None,
                 "file": f"{args.target.rstrip('/')}/{b.folder.as_posix()}/{b.path.name}"}
                for b, instance in found if args.database is None or b.database == args.database], []
    me = origin.this_instance_or_none(settings) or "-"
    listed, found_problems = Repository(settings.backup_dir).inventory(args.database)
    backups = []
    for b in listed:
        instance = origin.instance_of(b.doc, me)
        if args.instance is None or instance == args.instance:
            backups.append({**b.summary(), "instance": instance})
    problems = [_problem_summary(p) for p in found_problems]
    problems += [left.summary() for left in leftovers.look(settings)
                 if args.database is None or left.live == args.database]
    return backups, problems


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    backups, problems = _listed(settings, args)
    if args.json:
        json.dump(backups + problems, sys.stdout, indent=2)
        print()
        return _unreadable_exit(problems)
    rows = [("ID", "DATABASE", "INSTANCE", "TIME", "SIZE", "FORMAT", "VERIFIED", "STATUS", "LABEL")]
    for b in backups:
        fmt = b["format"] + ("" if b["compression"] == "none" else f"+{b['compression']}")
        rows.append((b["id"], b["database"], b["instance"] or "-", b["time"], human_bytes(b["size_bytes"]), fmt,
                     b["verified"] or "-", b["status"], b["label"] or ""))
    print_table(rows)
    for b in backups:
        if b["problem"]:
            print(f"DAMAGED {b['id']}: {b['problem']}; `backupd verify {b['id']}` checks it in full")
    for problem in problems:
        hint = f"; restore it by path: backupd restore {problem['file']} --into NEWDB" \
            if problem["status"] == "unaccounted" else ""
        print(f"{problem['status'].upper()} {problem['file'] or problem['database']}: {problem['problem']}{hint}")
    return _unreadable_exit(problems)


def _unreadable_exit(problems: list[dict[str, Any]]) -> int:
    """A folder or file the system will not let us read: the listing is not the whole truth."""
    unreadable = [p["file"] for p in problems if p["status"] == "unreadable"]
    if unreadable:
        log.error("list failed", error=f"part of the repository cannot be read: {', '.join(unreadable)}")
        return 1
    return 0


def _problem_summary(problem: Problem) -> dict[str, Any]:
    """A problem as a row of ``list --json``: no id, since no manifest vouches for one."""
    from backupd.repository import own_file_id, parse_id

    own = own_file_id(problem.path.name)
    database = parse_id(own[0])[0] if own else None
    return {"id": None, "kind": None, "database": database, **problem.summary()}


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.actions.restore import run_restore

    try:
        result = run_restore(settings, args.source, database=args.database, into=args.into, over=args.over,
                             jobs=args.jobs, yes=args.yes, drop_old=args.drop_old, in_place=args.in_place,
                             confirm=_ask_at_terminal, instance=args.instance)
    finally:  # another instance's backup was fetched only for this restore
        from backupd.targets.fetch import forget_foreign

        forget_foreign(settings)
    print(f"restored {result.backup_id} into {result.database} in {result.seconds:.1f}s "
          f"({human_bytes(result.throughput)}/s of stored backup)")
    if result.previous:
        print(f"the database it replaced is kept as {result.previous}; when you no longer need it:\n"
              f"  psql -d postgres -c 'DROP DATABASE \"{result.previous}\"'")
    return 0


def _ask_at_terminal(backup: Backup, target: str) -> bool:
    """Only a person at a terminal can say yes; anything else is a no."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    origin = backup.database if backup.kind == "database" else None
    other = f" (a backup of database {origin!r})" if origin and origin != target else ""
    print(f"Restore {backup.id}{other} over the live database {target!r}? The current one is kept aside "
          f"unless --drop-old. Type the database name to confirm: ", end="", file=sys.stderr, flush=True)
    try:
        return input().strip() == target
    except EOFError:
        return False


def cmd_pin(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.pitr.pins import pin_base
    from backupd.repository import Repository

    store = pin_base(settings, args.id, args.cluster, args.verb == "pin")
    if store is None:  # not a base backup: a database backup, roles dump or volume archive
        repo = Repository(settings.backup_dir)
        repo.update_state(repo.find(args.id), "pinned", args.verb == "pin")
    where = f" (cluster {store.system_identifier})" if store else ""
    print(f"{args.id} {'pinned' if args.verb == 'pin' else 'unpinned'}{where}")
    return 0


def cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.coordinator import prune

    result = prune(settings, dry_run=args.dry_run, database=args.database)  # as the daemon's daily prune
    rows = [("ID", "DATABASE", "DECISION", "WHY")]
    for backup, decision in result.dumps.decisions + result.volumes.decisions:
        verdict = "keep" if decision.keep else ("would delete" if args.dry_run else "deleted")
        name = backup.database if backup.kind != "volume" else f"volume {backup.database}"
        rows.append((backup.id, name, verdict, "; ".join(decision.reasons) or "no rule keeps it"))
    for cluster, pitr in result.pitr:
        for base, decision in pitr.decisions:
            verdict = "keep" if decision.keep else ("would delete" if args.dry_run else "deleted")
            rows.append((base.id, f"(PITR {cluster})", verdict, "; ".join(decision.reasons) or "no rule keeps it"))
    print_table(rows)
    for cluster, pitr in result.pitr:
        verdict = "would delete" if args.dry_run else "deleted"
        print(f"point-in-time recovery ({cluster}): {verdict} {len(pitr.files)} files "
              f"(PITR_RETENTION_DAYS={settings.pitr_retention_days})")
    return 0


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.actions.verify import run_verify

    outcomes = run_verify(settings, args.source, database=args.database)
    for outcome in outcomes:
        line = f"{outcome.backup_id}: {outcome.result} in {outcome.seconds:.1f}s"
        line += f": {outcome.reason}" if outcome.reason else ""
        print(line + (f" (not recorded: {outcome.unrecorded})" if outcome.unrecorded else ""), flush=True)
    return 1 if any(o.failed or o.unrecorded for o in outcomes) else 0


def cmd_volumes(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.actions import volumes

    if args.volume_verb == "backup":
        from backupd.coordinator import volume_backup

        outcomes = volume_backup(settings, args.volume)
        for outcome in outcomes:
            if outcome.ok:
                print(outcome.backup_id, flush=True)
        return 0 if all(o.ok for o in outcomes) else 1
    if args.volume_verb == "list":
        found = [b.summary() | {"volume": b.database, **b.volume_counts}
                 for b in volumes.list_volume_backups(settings, args.volume)]
        if args.json:
            json.dump(found, sys.stdout, indent=2)
            print()
        else:
            print_table([("ID", "VOLUME", "TIME", "SIZE", "FILES")] + [
                (b["id"], b["volume"], b["time"], human_bytes(b["size_bytes"]), str(b["file_count"])) for b in found])
        return 0
    backup, destination = volumes.run_volume_restore(settings, args.source, args.volume, args.to, args.yes)
    print(f"restored {backup.id} into {destination}")
    return 0


def cmd_replicate(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.coordinator import replicate

    outcomes = replicate(settings, url=args.target)
    for outcome in outcomes:
        state = "ok" if outcome.ok else f"FAILED: {outcome.error}"
        note = "" if outcome.confirmed else " (unconfirmed: a custom command's copies cannot be checked)"
        print(f"{outcome.url}: {state}; sent {len(outcome.sent)}, deleted {len(outcome.deleted)}{note}", flush=True)
        for backup_id, why in outcome.refused:  # one line per backup that could not be sent
            print(f"{outcome.url}: {backup_id} not sent: {why}", flush=True)
    return 0 if all(o.ok for o in outcomes) else 1


def cmd_pitr(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.pitr.commands import run

    return run(settings, args)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.daemon import Daemon

    return Daemon(settings).run()


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    from backupd import pgtools

    for name, value in settings.effective().items():
        print(f"{name}={value}")
    if not settings.backup_instance:
        from backupd import origin

        instance = origin.this_instance_or_none(settings)
        print(f"# BACKUP_INSTANCE is not set: this instance is {instance!r} by default" if instance else
              "# BACKUP_INSTANCE is not set, and the default (compose project and service, else the server's "
              "system identifier) cannot be learnt now")
    # Only scheme and host of each channel: their URLs carry tokens.
    from backupd.channels import configured

    if channels := configured(settings):
        print(f"# notification channels: {', '.join(c.shown for c in channels)}")
    # Which PostgreSQL tools serve which server, as comments: the lines above stay a valid env file.
    found = pgtools.summary(settings)
    installed = ", ".join(f"{t['major']} ({t['bindir']})" for t in found["installed"]) or "none"
    print(f"# PostgreSQL client tools installed: {installed}")
    for server in found["servers"]:
        if "tools" in server:
            tools = server["tools"]
            print(f"# {server['role']} server {server['server']}: PostgreSQL {server['version']}, "
                  f"tools of {tools['major']} ({tools['bindir']})")
        else:
            print(f"# {server['role']} server {server['server']}: {server['error']}")
    return 0


def cmd_notify(settings: Settings, args: argparse.Namespace) -> int:
    from backupd.notify_test import send_test

    return send_test(settings)


COMMANDS = {"backup": cmd_backup, "list": cmd_list, "pin": cmd_pin, "unpin": cmd_pin, "prune": cmd_prune,
            "restore": cmd_restore, "verify": cmd_verify, "replicate": cmd_replicate, "volumes": cmd_volumes,
            "pitr": cmd_pitr, "run": cmd_run, "config": cmd_config, "notify": cmd_notify}
