"""Time backupd's default backup against bare pg_dump and the common recipes, in one run.

    python bench/backup.py DBNAME [--runs 3]      (connection from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD)

Each pipeline runs --runs times, interleaved, and the minimum counts. Prints a
table of times, ratios against bare ``pg_dump -Fc -Z0 > /dev/null`` (the
extraction limit) and sizes, plus the peak RSS of backupd and its children.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import backupd, libpq_env, print_table, shell, timed  # noqa: E402


def measure(database: str, runs: int = 3, quick: bool = False) -> list[tuple]:
    """Rows of (pipeline, best seconds, size, peak RSS KiB); the first row is the baseline.
    ``quick`` times only the baseline and backupd's default backup (for very large databases)."""
    cpus = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="backupd-bench-", dir=os.environ.get("BENCH_DIR")))
    env = libpq_env(database)
    out = lambda name: str(work / name)  # noqa: E731
    backupd_env = {**env, "DB_NAME": database, "BACKUP_DIR": str(work / "repo"), "LOG_LEVEL": "warning"}
    pipelines = {
        "bare pg_dump -Fc -Z0 > /dev/null": (shell("pg_dump -Fc -Z0 > /dev/null"), env, None),
        "backupd backup (default: custom, zstd, exact row counts)": (backupd("backup"), backupd_env, "repo"),
        "backupd backup, BACKUP_ROW_COUNTS=off": (backupd("backup"), {**backupd_env, "BACKUP_ROW_COUNTS": "off"}, "repo"),
        "seeds' recipe: pg_dump -Fc | gzip -9": (shell(f"pg_dump -Fc | gzip -9 > {out('seeds.gz')}"), env, "seeds.gz"),
        f"best peer: pg_dump | zstd -3 -T{cpus}": (shell(f"pg_dump | zstd -q -3 -T{cpus} > {out('peer.zst')}"), env, "peer.zst"),
        "pg_dump -Fc": (shell(f"pg_dump -Fc > {out('fc.dump')}"), env, "fc.dump"),
    }
    if quick:
        pipelines = dict(list(pipelines.items())[:2])
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    dump_times: list[float] = []
    sizes: dict[str, int] = {}
    rss: dict[str, int] = {}
    try:
        for _ in range(runs):
            for name, (argv, run_env, output) in pipelines.items():
                seconds, peak = timed(argv, run_env)
                times[name].append(seconds)
                rss[name] = max(rss.get(name, 0), peak)
                if not output:
                    continue
                path = work / output
                if path.is_dir():
                    manifests = [json.loads(p.read_text()) for p in path.rglob("*.json")
                                 if json.loads(p.read_text()).get("kind") == "database"]
                    if name.startswith("backupd backup (default"):
                        dump_times.append(manifests[0]["duration_seconds"])
                    sizes[name] = manifests[0]["size_bytes"]
                    shutil.rmtree(path)
                else:
                    sizes[name] = path.stat().st_size
                    path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [(name, min(times[name]), sizes.get(name), rss[name]) for name in pipelines]
    rows.insert(2, ("backupd: the dump itself (manifest duration, no process start)", min(dump_times),
                    sizes.get("backupd backup (default: custom, zstd, exact row counts)"), None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args.database, args.runs)
    print_table(f"backup of {args.database}, {os.cpu_count()} CPUs, minimum of {args.runs} interleaved runs",
                rows, rows[0][1])


if __name__ == "__main__":
    main()
