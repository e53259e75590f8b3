"""pg_dump's own zstd (16 and newer) against backupd's external zstd stage, in one run.

    python bench/dump_compression.py [--major 17] [--size-mb 500] [--runs 3] [--level 3]

Starts a throwaway server of ``--major`` from the test matrix (scripts/bootstrap installs
14 to 18 in /opt/backupd-test/postgresql), fills a database with bench/generate.py, then
times, interleaved, the minimum of ``--runs``:

- bare ``pg_dump -Fc -Z0 > /dev/null`` (the extraction limit, the baseline);
- the external stage: ``pg_dump -Fc -Z0 | zstd -<level> -T<cpus>``;
- pg_dump's own: ``pg_dump -Fc --compress=zstd:<level>`` (one thread, inside pg_dump);
- pg_dump's own with long-distance matching (``zstd:level=<level>,long``).

backupd keeps whichever is faster at no larger size; the figures are in bench/README.md.
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
from common import ROOT, interleaved, print_table, shell, timed  # noqa: E402


def restores(pipelines: dict, bindir: Path, libpq: dict, work: Path, jobs: int, runs: int) -> tuple[list, float]:
    """pg_restore -j needs a seekable file: a stream-compressed archive is decompressed to a
    staging file first (what backupd does), pg_dump's own compressed archive is read in place."""
    external, inside = list(pipelines.values())[1][0], list(pipelines.values())[2][0]
    subprocess.run(shell(external), env=libpq, check=True)
    subprocess.run(shell(inside), env=libpq, check=True)
    restore = f"{bindir}/pg_restore -j {jobs} --exit-on-error -d restored"
    cases = {
        "stream-compressed: zstd -d to a staging file, then pg_restore -j":
            f"zstd -q -d -c {work}/a > {work}/staged && {restore} {work}/staged; rm -f {work}/staged",
        "compressed by pg_dump: pg_restore -j in place": f"{restore} {work}/b",
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, script in cases.items():
            subprocess.run([f"{bindir}/psql", "-qc", "DROP DATABASE IF EXISTS restored", "-c",
                            "CREATE DATABASE restored"], env={**libpq, "PGDATABASE": "postgres"}, check=True)
            times[name].append(timed(shell(script), libpq)[0])
    rows = [(name, min(times[name]), None, None) for name in cases]
    return rows, rows[0][1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--major", type=int, default=17)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--level", type=int, default=3, help="zstd level for both")
    args = parser.parse_args()
    from tests.pg import matrix_bindir, remove_cluster, start_cluster

    bindir = matrix_bindir(args.major)
    cluster = start_cluster(bindir)
    work = Path(tempfile.mkdtemp(prefix="backupd-bench-compress-", dir=os.environ.get("BENCH_DIR")))
    try:
        env = {**os.environ, **cluster.env()}
        subprocess.run([sys.executable, str(ROOT / "bench/generate.py"), "bench_compress", str(args.size_mb)],
                       env=env, check=True)
        libpq = {**os.environ, "PGHOST": cluster.host, "PGPORT": str(cluster.port), "PGUSER": cluster.user,
                 "PGPASSWORD": cluster.password, "PGDATABASE": "bench_compress"}
        pg_dump, cpus, level = bindir / "pg_dump", os.cpu_count() or 1, args.level
        pipelines = {
            "bare pg_dump -Fc -Z0 > /dev/null": (f"{pg_dump} -Fc -Z0 > /dev/null", None),
            f"external: pg_dump -Fc -Z0 | zstd -{level} -T{cpus}":
                (f"{pg_dump} -Fc -Z0 | zstd -q -{level} -T{cpus} > {work}/a", "a"),
            f"inside: pg_dump -Fc --compress=zstd:{level}": (f"{pg_dump} -Fc --compress=zstd:{level} > {work}/b", "b"),
            f"inside: pg_dump -Fc --compress=zstd:level={level},long":
                (f"{pg_dump} -Fc --compress=zstd:level={level},long > {work}/c", "c"),
        }
        rows = interleaved(pipelines, libpq, args.runs, work)
        print_table(f"custom-format dump of {args.size_mb} MB on PostgreSQL {args.major}, zstd level {level}, "
                    f"{cpus} CPUs, minimum of {args.runs} interleaved runs", rows, rows[0][1])
        print_table(f"restore with pg_restore -j {cpus} into a new database, minimum of {args.runs} runs",
                    *restores(pipelines, bindir, libpq, work, cpus, args.runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        remove_cluster(cluster)


if __name__ == "__main__":
    main()
