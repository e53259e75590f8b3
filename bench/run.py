"""Every benchmark in one run: python bench/run.py [--sizes 0.5,2] [--runs 3] [--many 100]

Without DB_HOST it starts a throwaway PostgreSQL cluster (as the tests do). Databases
of about 0.5 and 2 GB are generated (and 10 GB when the disk has four times that
free), then backup, restore, verify and S3 upload are timed against their baselines;
the compression level on two kinds of data, the directory format with BACKUP_JOBS on
20 tables, and many small databases against a shell loop. The backup times per size
are drawn in a chart (``--chart``, docs/bench-backup.png by default).
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
import compression_level  # noqa: E402
import restore  # noqa: E402
import s3  # noqa: E402
from chart import write_chart  # noqa: E402
from common import ROOT, backupd, libpq_env, print_table, shell, timed  # noqa: E402

CHARTED = ("bare pg_dump -Fc -Z0 > /dev/null", backup.DAEMON, backup.ONE_SHOT, "seeds' recipe: pg_dump -Fc | gzip -9")


def database_size(name: str) -> int:
    out = subprocess.run(["psql", "-Atc", f"SELECT pg_database_size('{name}')"], env=libpq_env(),
                         capture_output=True, text=True)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else 0


def ensure_database(size_gb: float, kind: str = "app") -> str:
    name = f"bench_{'' if kind == 'app' else kind + '_'}{str(size_gb).replace('.', '_')}gb"
    if database_size(name) < size_gb * 0.9 * 1024 ** 3:
        subprocess.run([sys.executable, str(ROOT / "bench/generate.py"), name, str(int(size_gb * 1024)), kind],
                       check=True)
    return name


def many_databases(count: int, runs: int) -> list[tuple]:
    """``count`` small databases (named, so other databases on the server do not count):
    a shell loop of bare pg_dumps, then backupd with BACKUP_CONCURRENCY 1, 2 and 4."""
    names = [f"bench_many_{i:03d}" for i in range(count)]
    admin = libpq_env()
    for name in names:
        subprocess.run(["createdb", name], env=admin, capture_output=True)
        subprocess.run(["psql", "-qd", name, "-c", "CREATE TABLE IF NOT EXISTS t AS SELECT g, md5(g::text) "
                        "FROM generate_series(1, 2000) g"], env=admin, check=True)
    folder = Path(os.environ.get("BENCH_DIR", "/tmp")) / "backupd-bench-many"
    loop = f"mkdir -p {folder} && for db in {' '.join(names)}; do pg_dump -Fc -Z0 -d $db > {folder}/$db.dump; done"
    pipelines = {"shell loop: for db in ...; do pg_dump -Fc -Z0 -d $db > $db.dump; done": (shell(loop), admin)}
    for concurrency in (1, 2, 4):
        env = {**admin, "BACKUP_DIR": str(folder), "LOG_LEVEL": "warning", "DB_NAME": ",".join(names),
               "BACKUP_CONCURRENCY": str(concurrency)}
        pipelines[f"backupd backup, BACKUP_CONCURRENCY={concurrency}"] = (backupd("backup"), env)
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    rss: dict[str, int] = {}
    try:
        for _ in range(runs):
            for name, (argv, env) in pipelines.items():
                seconds, peak = timed(argv, env)
                times[name].append(seconds)
                rss[name] = max(rss.get(name, 0), peak)
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        for name in names:
            subprocess.run(["dropdb", "--if-exists", name], env=admin, capture_output=True)
    return [(name, min(times[name]), None, rss[name]) for name in pipelines]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0.5,2", help="database sizes in GB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--many", type=int, default=100, help="also back up this many small databases (0: skip)")
    parser.add_argument("--no-s3", dest="s3", action="store_false", help="skip the S3 upload comparison")
    parser.add_argument("--largest", type=float, default=10, help="add 10 GB only if this allows it (and the disk)")
    parser.add_argument("--quick", default="10", help="sizes (GB) timed only against the baseline, once, no restore")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="BACKUP_JOBS for the directory format on 20 tables (0: skip)")
    parser.add_argument("--levels", action=argparse.BooleanOptionalAction, default=True,
                        help="compare the zstd levels on two kinds of data")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs/bench-backup.png")
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
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
        machine = f"{os.cpu_count()} CPUs, {memory:.0f} GiB, {time.strftime('%Y-%m-%d')}"
        print(f"machine: {machine}", flush=True)
        quick = {float(s) for s in args.quick.split(",") if s}
        series: dict[str, list[tuple[float, float]]] = {name: [] for name in CHARTED}
        for size in sizes:
            name = ensure_database(size)
            gigabytes = database_size(name) / 1e9
            rows = backup.measure(name, 1 if size in quick else args.runs, quick=size in quick)
            print_table(f"backup of {name} ({gigabytes:.2f} GB on disk)", rows, rows[0][1])
            for row in rows:
                if row[0] in series:
                    series[row[0]].append((gigabytes, row[1]))
            if size not in quick:
                rows = restore.measure(name, args.runs)
                print_table(f"restore and verify of {name}", rows, rows[0][1])
        write_chart(series, args.chart, f"backup time against size, PostgreSQL {server_major()}, {machine}")
        print(f"\nchart: {args.chart}", flush=True)
        if args.levels:
            for kind in ("app", "metrics"):
                name = ensure_database(0.5, kind)
                rows = compression_level.measure(name, shutil.which("pg_dump") or "pg_dump", args.runs)
                print_table(f"compression levels on {name} ({kind} data)", rows, rows[0][1])
        if args.jobs:
            name = ensure_database(0.5, "tables")
            rows = backup.measure(name, args.runs, quick=True, directory_jobs=args.jobs)
            print_table(f"directory format with BACKUP_JOBS={args.jobs} on {name} (20 tables of similar size)",
                        rows, rows[0][1])
        if args.s3:
            rows = s3.measure(512, args.runs)
            print_table("S3 upload of 512 MB (SeaweedFS on 127.0.0.1)", rows, rows[0][1])
        if args.many:
            rows = many_databases(args.many, args.runs)
            print_table(f"{args.many} small databases", rows, rows[0][1])
    finally:
        if cluster:
            from tests.pg import remove_cluster

            remove_cluster(cluster)


def server_major() -> str:
    out = subprocess.run(["psql", "-Atc", "SHOW server_version_num"], env=libpq_env(), capture_output=True, text=True)
    return out.stdout.strip()[:-4] or "?"


if __name__ == "__main__":
    main()
