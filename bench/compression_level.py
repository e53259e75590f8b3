"""Which zstd level backupd uses by default: every candidate on two kinds of data, in one run.

    python bench/compression_level.py DB [DB ...] [--runs 3] [--pg-dump PATH]

Each DB is dumped (connection from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD) by each
candidate, interleaved, the minimum of ``--runs`` counting:

- bare ``pg_dump -Fc -Z0 > /dev/null`` (the extraction limit, the baseline);
- the seeds' ``pg_dump -Fc | gzip -9`` (the size not to exceed);
- backupd's external stage, ``pg_dump -Fc -Z0 | zstd -<level> [--long=<window log>] -T<cpus>``;
- pg_dump's own zstd, ``pg_dump -Fc --compress=zstd:<level>`` (pg_dump 16 and newer).

Generate the two kinds with ``bench/generate.py NAME 512 app`` and ``... metrics``
(``run.py`` does). ``--pg-dump`` picks the pg_dump (e.g. 17's, against an older server,
to measure its own zstd on the same data).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, libpq_env, print_table  # noqa: E402


def pg_dump_major(pg_dump: str) -> int:
    out = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"\)\s*(\d+)", out).group(1))  # "pg_dump (PostgreSQL) 15.18 (Debian ...)"


def candidates(pg_dump: str, work: Path) -> dict[str, tuple[str, str | None]]:
    cpus = os.cpu_count() or 1
    external = f"{pg_dump} -Fc -Z0 | zstd -q -T{cpus}"
    pipelines = {
        "bare pg_dump -Fc -Z0 > /dev/null": (f"{pg_dump} -Fc -Z0 > /dev/null", None),
        "seeds' recipe: pg_dump -Fc | gzip -9": (f"{pg_dump} -Fc | gzip -9 > {work}/gz", "gz"),
    }
    for level, window in ((1, 0), (1, 24), (1, 26), (2, 24), (3, 0), (3, 24)):
        flag = f" --long={window}" if window else ""
        pipelines[f"external: zstd -{level}{flag} -T{cpus}"] = (f"{external} -{level}{flag} > {work}/x", "x")
    if pg_dump_major(pg_dump) >= 16:
        for level in (1, 2, 3):
            pipelines[f"inside: pg_dump --compress=zstd:{level}"] = (
                f"{pg_dump} -Fc --compress=zstd:{level} > {work}/i", "i")
    return pipelines


def measure(database: str, pg_dump: str, runs: int) -> list[tuple]:
    work = Path(tempfile.mkdtemp(prefix="backupd-bench-level-", dir=os.environ.get("BENCH_DIR")))
    env = libpq_env(database)
    try:
        return interleaved(candidates(pg_dump, work), env, runs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("databases", nargs="+")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-dump", default=shutil.which("pg_dump") or "pg_dump")
    args = parser.parse_args()
    for database in args.databases:
        rows = measure(database, args.pg_dump, args.runs)
        print_table(f"compression of {database}, pg_dump {pg_dump_major(args.pg_dump)}, {os.cpu_count()} CPUs, "
                    f"minimum of {args.runs} interleaved runs", rows, rows[0][1])


if __name__ == "__main__":
    main()
