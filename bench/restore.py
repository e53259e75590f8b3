"""Time backupd's restore and verify against a bare ``pg_restore -j2`` of the same data.

    python bench/restore.py DBNAME [--runs 3]      (connection from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import backupd, libpq_env, print_table, shell, timed  # noqa: E402


def measure(database: str, runs: int = 3) -> list[tuple]:
    work = Path(tempfile.mkdtemp(prefix="backupd-bench-", dir=os.environ.get("BENCH_DIR")))
    env = libpq_env(database)
    admin = libpq_env("postgres")
    repo_env = {**env, "DB_NAME": database, "BACKUP_DIR": str(work / "repo"), "LOG_LEVEL": "warning",
                "BACKUP_GLOBALS": "false"}
    subprocess.run(backupd("backup"), env=repo_env, check=True, stdout=subprocess.DEVNULL)
    plain = work / "plain.dump"
    subprocess.run(shell(f"pg_dump -Fc -Z0 > {plain}"), env=env, check=True)
    target = "bench_restored"
    pipelines = {
        "bare: createdb; pg_restore -j2 of an uncompressed dump": shell(f"createdb {target} && pg_restore -j2 -d {target} {plain}"),
        "backupd restore --into (one pg_restore, from the zstd file)": backupd("restore", "latest", "--into", target),
        "backupd restore --into --jobs 2 (unpacked to staging)": backupd("restore", "latest", "--into", target, "--jobs", "2"),
        "backupd verify (restore into scratch, count rows, drop)": backupd("verify", "latest"),
    }
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    rss: dict[str, int] = {}
    try:
        for _ in range(runs):
            for name, argv in pipelines.items():
                subprocess.run(["dropdb", "--if-exists", target], env=admin, check=True)
                seconds, peak = timed(argv, repo_env)
                times[name].append(seconds)
                rss[name] = max(rss.get(name, 0), peak)
        subprocess.run(["dropdb", "--if-exists", target], env=admin, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [(name, min(times[name]), None, rss[name]) for name in pipelines]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args.database, args.runs)
    print_table(f"restore of {args.database}, minimum of {args.runs} interleaved runs", rows, rows[0][1])


if __name__ == "__main__":
    main()
