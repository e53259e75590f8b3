"""Every benchmark in one run: python bench/run.py [--sizes 0.5,2] [--runs 3] [--many 100]

Without DB_HOST it starts a throwaway PostgreSQL cluster (as the tests do). Databases
of about 0.5 and 2 GB are generated (and 10 GB when the disk has four times that
free), then backup, restore, verify and S3 upload are timed against their baselines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backup  # noqa: E402
import restore  # noqa: E402
import s3  # noqa: E402
from common import ROOT, backupd, libpq_env, print_table, timed  # noqa: E402


def database_size(name: str) -> int:
    out = subprocess.run(["psql", "-Atc", f"SELECT pg_database_size('{name}')"], env=libpq_env(),
                         capture_output=True, text=True)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else 0


def ensure_database(size_gb: float) -> str:
    name = f"bench_{str(size_gb).replace('.', '_')}gb"
    if database_size(name) < size_gb * 0.9 * 1024 ** 3:
        subprocess.run([sys.executable, str(ROOT / "bench/generate.py"), name, str(int(size_gb * 1024))], check=True)
    return name


def many_databases(count: int, runs: int) -> list[tuple]:
    """``count`` small databases in one run (named, so other databases on the server do not
    count), with concurrency 1 and 4."""
    names = [f"bench_many_{i:03d}" for i in range(count)]
    admin = libpq_env()
    for name in names:
        subprocess.run(["createdb", name], env=admin, capture_output=True)
        subprocess.run(["psql", "-qd", name, "-c", "CREATE TABLE IF NOT EXISTS t AS SELECT g, md5(g::text) "
                        "FROM generate_series(1, 2000) g"], env=admin, check=True)
    rows = []
    try:
        for concurrency in (1, 4):
            best = None
            for _ in range(runs):
                folder = Path(os.environ.get("BENCH_DIR", "/tmp")) / f"backupd-bench-many-{concurrency}"
                env = {**admin, "BACKUP_DIR": str(folder), "LOG_LEVEL": "warning", "DB_NAME": ",".join(names),
                       "BACKUP_CONCURRENCY": str(concurrency), "BACKUP_GLOBALS": "false"}
                seconds, rss = timed(backupd("backup"), env)
                shutil.rmtree(folder, ignore_errors=True)
                best = min(best or seconds, seconds)
            rows.append((f"{count} databases, BACKUP_CONCURRENCY={concurrency}", best, None, rss))
    finally:
        for name in names:
            subprocess.run(["dropdb", "--if-exists", name], env=admin, capture_output=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0.5,2", help="database sizes in GB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--many", type=int, default=100, help="also back up this many small databases (0: skip)")
    parser.add_argument("--no-s3", dest="s3", action="store_false", help="skip the S3 upload comparison")
    parser.add_argument("--largest", type=float, default=10, help="add 10 GB only if this allows it (and the disk)")
    parser.add_argument("--quick", default="10", help="sizes (GB) timed only against the baseline, once, no restore")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    cluster = None
    if not os.environ.get("DB_HOST"):
        from tests.pg import start_cluster

        cluster = start_cluster()
        os.environ.update(cluster.env())
        print(f"started a throwaway PostgreSQL on port {cluster.port}", flush=True)
    try:
        free = shutil.disk_usage(cluster.base if cluster else "/").free
        if 10 not in sizes and args.largest >= 10 and free >= 4 * 10 * 1024 ** 3:
            sizes.append(10)
        print(f"machine: {os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024 ** 3:.0f} GiB, "
              f"{time.strftime('%Y-%m-%d')}", flush=True)
        quick = {float(s) for s in args.quick.split(",") if s}
        for size in sizes:
            name = ensure_database(size)
            rows = backup.measure(name, 1 if size in quick else args.runs, quick=size in quick)
            print_table(f"backup of {name} ({database_size(name) / 1e9:.2f} GB on disk)", rows, rows[0][1])
            if size not in quick:
                rows = restore.measure(name, args.runs)
                print_table(f"restore and verify of {name}", rows, rows[0][1])
        if args.s3:
            rows = s3.measure(512, args.runs)
            print_table("S3 upload of 512 MB (SeaweedFS on 127.0.0.1)", rows, rows[0][1])
        if args.many:
            rows = many_databases(args.many, 1)
            print_table(f"{args.many} small databases under DB_NAME=all", rows, rows[0][1])
    finally:
        if cluster:
            from tests.pg import remove_cluster

            remove_cluster(cluster)


if __name__ == "__main__":
    main()
