"""Time backupd's default backup against bare pg_dump and the common recipes, in one run.

    python bench/backup.py DBNAME [--runs 3]      (connection from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD)

Each pipeline runs --runs times, interleaved, and the minimum counts. Prints a table of
times, ratios against bare ``pg_dump -Fc -Z0 > /dev/null`` (the extraction limit) and
sizes, plus the peak RSS of the largest process of each pipeline.

backupd is timed twice: as the daemon runs its scheduled backups (bench/scheduled.py: a
warm process, the code and settings loaded once), and as the one-shot ``backupd backup``
command. Two rows split what backupd adds to the dump itself: the per-backup overhead
(connections, the roles dump, the row counts' wait, the manifest, fsync, retention) and
the start-up of the one-shot command (Python, imports, settings).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Scheduled, backupd, libpq_env, print_table, shell, timed  # noqa: E402

DAEMON = "backupd's scheduled backup (default: custom, zstd, exact row counts)"
ONE_SHOT = "backupd backup, the one-shot command (process start included)"


def measure(database: str, runs: int = 3, quick: bool = False, directory_jobs: int = 0) -> list[tuple]:
    """Rows of (pipeline, best seconds, size, peak RSS KiB); the first row is the baseline.
    ``quick`` times only the baseline and backupd's scheduled backup (for very large databases).
    ``directory_jobs`` adds backupd with BACKUP_FORMAT=directory and that many BACKUP_JOBS."""
    cpus = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="backupd-bench-", dir=os.environ.get("BENCH_DIR")))
    env = libpq_env(database)
    out = lambda name: str(work / name)  # noqa: E731
    repo = {**env, "DB_NAME": database, "BACKUP_DIR": str(work / "repo"), "LOG_LEVEL": "warning"}
    command = lambda argv, run_env: lambda: timed(argv, run_env)  # noqa: E731
    scheduled = Scheduled(repo)
    no_counts = Scheduled({**repo, "BACKUP_ROW_COUNTS": "off"})
    pipelines: dict[str, tuple[Callable[[], tuple[float, int]], str | None]] = {
        "bare pg_dump -Fc -Z0 > /dev/null": (command(shell("pg_dump -Fc -Z0 > /dev/null"), env), None),
        DAEMON: (scheduled.run, "repo"),
        ONE_SHOT: (command(backupd("backup"), repo), "repo"),
        "backupd's scheduled backup, BACKUP_ROW_COUNTS=off": (no_counts.run, "repo"),
        "seeds' recipe: pg_dump -Fc | gzip -9": (command(shell(f"pg_dump -Fc | gzip -9 > {out('seeds.gz')}"), env),
                                                 "seeds.gz"),
        f"best peer: pg_dump | zstd -3 -T{cpus}": (
            command(shell(f"pg_dump | zstd -q -3 -T{cpus} > {out('peer.zst')}"), env), "peer.zst"),
        "pg_dump -Fc": (command(shell(f"pg_dump -Fc > {out('fc.dump')}"), env), "fc.dump"),
    }
    if quick:
        pipelines = dict(list(pipelines.items())[:2])
    directory = Scheduled({**repo, "BACKUP_FORMAT": "directory", "BACKUP_JOBS": str(max(directory_jobs, 1))})
    if directory_jobs:
        pipelines[f"backupd's scheduled backup, BACKUP_FORMAT=directory BACKUP_JOBS={directory_jobs}"] = (
            directory.run, "repo")
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    dump_times: list[float] = []
    sizes: dict[str, int] = {}
    rss: dict[str, int] = {}
    try:
        with scheduled, no_counts, directory:
            for _ in range(runs):
                for name, (run, output) in pipelines.items():
                    seconds, peak = run()
                    times[name].append(seconds)
                    rss[name] = max(rss.get(name, 0), peak)
                    if output:
                        size, dump_seconds = _output(work / output)
                        sizes[name] = size
                        if name == DAEMON:
                            dump_times.append(dump_seconds)
                    os.sync()  # the next pipeline must not wait for this one's writes to reach the disk
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [(name, min(times[name]), sizes.get(name), rss[name]) for name in pipelines]
    dump = min(dump_times)
    rows.insert(2, ("backupd: the dump itself (the manifest's duration)", dump, sizes.get(DAEMON), None))
    rows.insert(3, ("  overhead per backup (connections, roles dump, counts' wait, manifest, fsync, retention)",
                    min(times[DAEMON]) - dump, None, None))
    if ONE_SHOT in times:
        rows.insert(5, ("  overhead of the one-shot command's start (Python, imports, settings)",
                        min(times[ONE_SHOT]) - min(times[DAEMON]), None, None))
    return rows


def _output(path: Path) -> tuple[int, float | None]:
    """The size of what a pipeline wrote (and removes it); for a repository, of its database
    backup, and the duration its manifest records."""
    if not path.is_dir():
        size = path.stat().st_size
        path.unlink()
        return size, None
    manifests = [m for m in (json.loads(p.read_text()) for p in path.rglob("*.json")) if m.get("kind") == "database"]
    shutil.rmtree(path)
    return manifests[0]["size_bytes"], manifests[0]["duration_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--directory-jobs", type=int, default=0)
    args = parser.parse_args()
    rows = measure(args.database, args.runs, directory_jobs=args.directory_jobs)
    print_table(f"backup of {args.database}, {os.cpu_count()} CPUs, minimum of {args.runs} interleaved runs",
                rows, rows[0][1])


if __name__ == "__main__":
    main()
