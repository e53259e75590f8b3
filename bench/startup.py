"""How fast the one-shot ``backupd backup`` gets to its dump, and what it costs as a whole process.

    python bench/startup.py [--size-gb 0.5] [--runs 5] [--startup-runs 15]
        (connection from DB_HOST, ...; without DB_HOST a throwaway PostgreSQL is started)

Two figures, each the minimum of interleaved runs:

- start-up (--startup-runs, on the small ``postgres`` database: what happens before the dump
  does not depend on the database's size): from the exec of ``python -m backupd backup`` to
  the exec of its first pg_dump that dumps a database (neither the ``pg_dump --version``
  probe nor the roles dump's pg_dumpall counts), both read from one
  ``strace -f -e trace=execve`` log, so they share one clock and nothing in backupd changes;
- the whole process (--runs): ``backupd backup`` (default settings: custom format, zstd, exact row
  counts, the roles dump, the manifest, retention) against bare ``pg_dump -Fc -Z0 > /dev/null``
  on the same database, as a speed ratio (bare time / backupd's time; 1.0 is as fast as bare).

A script, not a test: it prints figures, it asserts nothing.
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
from common import ROOT, backupd, libpq_env, shell, timed  # noqa: E402

# What a backup needs before its dump whatever backupd does: the connection (psycopg), the
# typed settings (pydantic-settings) and the logs (structlog). Timed alone, as the floor.
LIBRARIES = ("psycopg", "pydantic_settings", "structlog")

_EXECVE = re.compile(r'^\d+\s+(\d+\.\d+) execve\("([^"]+)", \[(.*?)\]')


def first_dump_after(log: Path) -> float:
    """Seconds from the first exec in the strace log (python) to the first pg_dump that dumps."""
    started = None
    for line in log.read_text(errors="replace").splitlines():
        match = _EXECVE.match(line)
        if not match or "= -1" in line:  # a failed exec (PATH lookups): not a process start
            continue
        when, program, args = float(match.group(1)), match.group(2), match.group(3)
        started = when if started is None else started
        if Path(program).name == "pg_dump" and "--version" not in args:
            return when - started
    raise SystemExit(f"no pg_dump started; see {log}")


def startup(env: dict[str, str], work: Path) -> float:
    log = work / "execve.log"
    argv = ["strace", "-f", "-qq", "-ttt", "-s", "256", "-e", "trace=execve", "-o", str(log), *backupd("backup")]
    if subprocess.run(["strace", "--seccomp-bpf", "-e", "trace=execve", "true"], capture_output=True).returncode == 0:
        argv.insert(1, "--seccomp-bpf")  # only execve stops the traced processes: the rest runs at full speed
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    return first_dump_after(log)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--startup-runs", type=int, default=15)
    args = parser.parse_args()
    if not shutil.which("strace"):
        raise SystemExit("strace is needed to time the start-up (apt-get install strace)")
    cluster = None
    if not os.environ.get("DB_HOST"):
        from tests.pg import start_cluster

        cluster = start_cluster()
        os.environ.update(cluster.env())
    try:
        from run import database_size, ensure_database

        name = ensure_database(args.size_gb)
        measure(name, database_size(name) / 1e9, args.runs, args.startup_runs)
    finally:
        if cluster:
            from tests.pg import remove_cluster

            remove_cluster(cluster)


def measure(name: str, gigabytes: float, runs: int, startup_runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="backupd-startup-", dir=os.environ.get("BENCH_DIR")))
    env = libpq_env(name)
    repo = {**env, "DB_NAME": name, "BACKUP_DIR": str(work / "repo"), "LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT)}
    bare, whole, starts, floor = [], [], [], []
    try:
        for _ in range(startup_runs):
            starts.append(startup({**repo, "DB_NAME": "postgres"}, work))
            shutil.rmtree(work / "repo", ignore_errors=True)  # retention must not make the runs differ
            floor.append(timed([sys.executable, "-c", f"import {', '.join(LIBRARIES)}"], repo)[0])
        for _ in range(runs):
            bare.append(timed(shell("pg_dump -Fc -Z0 > /dev/null"), env)[0])
            whole.append(timed(backupd("backup"), repo)[0])
            subprocess.run(["sync"], check=True)
            shutil.rmtree(work / "repo", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"start-up, exec to the first pg_dump: {min(starts):.3f} s, minimum of {startup_runs} "
          f"(median {sorted(starts)[len(starts) // 2]:.3f} s)")
    print(f"python importing {', '.join(LIBRARIES)} and nothing else: {min(floor):.3f} s, minimum of "
          f"{startup_runs} (median {sorted(floor)[len(floor) // 2]:.3f} s)")
    if not runs:
        return
    print(f"database {name}: {gigabytes:.2f} GB on disk; minimum of {runs} interleaved runs")
    print(f"bare pg_dump -Fc -Z0 > /dev/null: {min(bare):.2f} s (all: {_list(bare)})")
    print(f"backupd backup, the whole process: {min(whole):.2f} s (all: {_list(whole)})")
    print(f"backupd backup's speed against bare pg_dump: {min(bare) / min(whole):.2f}x")


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    main()
