"""Time backupd's default backup against bare pg_dump and the common recipes, in one run.

    python bench/backup.py DBNAME [--runs 3]      (connection from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD)

Each pipeline runs --runs times, interleaved, and the minimum counts. Prints a
table of times, ratios against bare ``pg_dump -Fc -Z0 > /dev/null`` (the
extraction limit) and sizes, plus the peak RSS of backupd and its children.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def libpq_env(dbname: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PGHOST=os.environ.get("DB_HOST", "localhost"), PGPORT=os.environ.get("DB_PORT", "5432"),
               PGUSER=os.environ.get("DB_USER", "postgres"), PGPASSWORD=os.environ.get("DB_PASSWORD", ""),
               PGDATABASE=dbname)
    return env


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(seconds, peak RSS in KiB of the process tree's largest member)"""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return seconds, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="backupd-bench-", dir=os.environ.get("BENCH_DIR")))
    env = libpq_env(args.database)
    shell = lambda script: ["bash", "-o", "pipefail", "-c", script]  # noqa: E731
    out = lambda name: str(work / name)  # noqa: E731
    backupd_env = {**env, "DB_NAME": args.database, "BACKUP_DIR": str(work / "repo"), "LOG_LEVEL": "warning"}
    pipelines = {
        "bare pg_dump -Fc -Z0 > /dev/null": (shell("pg_dump -Fc -Z0 > /dev/null"), env, None),
        "backupd backup (default: custom, zstd, exact row counts)": ([sys.executable, "-m", "backupd", "backup"], backupd_env, "repo"),
        "backupd backup, BACKUP_ROW_COUNTS=off": ([sys.executable, "-m", "backupd", "backup"], {**backupd_env, "BACKUP_ROW_COUNTS": "off"}, "repo"),
        "seeds' recipe: pg_dump -Fc | gzip -9": (shell(f"pg_dump -Fc | gzip -9 > {out('seeds.gz')}"), env, "seeds.gz"),
        f"best peer: pg_dump | zstd -3 -T{cpus}": (shell(f"pg_dump | zstd -q -3 -T{cpus} > {out('peer.zst')}"), env, "peer.zst"),
        "pg_dump -Fc": (shell(f"pg_dump -Fc > {out('fc.dump')}"), env, "fc.dump"),
    }
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    sizes: dict[str, int] = {}
    rss: dict[str, int] = {}
    try:
        for _ in range(args.runs):
            for name, (argv, run_env, output) in pipelines.items():
                seconds, peak = timed(argv, run_env)
                times[name].append(seconds)
                rss[name] = max(rss.get(name, 0), peak)
                if output:
                    path = work / output
                    sizes[name] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() \
                        else path.stat().st_size
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bare = min(times["bare pg_dump -Fc -Z0 > /dev/null"])
    print(f"database {args.database}, {cpus} CPUs, minimum of {args.runs} interleaved runs\n")
    print("| pipeline | time | vs bare | size | peak RSS |")
    print("|---|---|---|---|---|")
    for name in pipelines:
        best = min(times[name])
        size = f"{sizes[name] / 1e6:.1f} MB" if name in sizes else "—"
        cell = name.replace("|", "\\|")
        print(f"| {cell} | {best:.2f} s | {best / bare:.2f}x | {size} | {rss[name] / 1024:.0f} MB |")


if __name__ == "__main__":
    main()
