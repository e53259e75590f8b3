"""What bench/pitr.py times after the stream has the WAL: a data directory built by
``pitr restore --to`` and recovered by a stock postgres until it promotes, and one
database restored into the running server; each checked for the last write."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, backupd, timed

DATABASE = "bench_pitr"
RESTORED = "bench_pitr_back"  # where the single-database restore puts it


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Recovered:
    """A stock postgres on a data directory built by ``pitr restore``, on its own port."""

    def __init__(self, bindir: Path, data: Path, port: int):
        self.bindir, self.data, self.port = bindir, data, port
        self.log = data / "bench-server.log"
        self.started = False

    def start(self) -> None:
        """Returns at once (``-W``): the caller polls for the promotion."""
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.data}"
        subprocess.run(as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                                    "-o", options, "-W", "start"]), check=True, capture_output=True)
        self.started = True

    def stop(self) -> None:
        if self.started:
            subprocess.run(as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                                        "-t", "60", "stop"]), capture_output=True)
            self.started = False

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""


def recover(bindir: Path, data: Path, cluster, marker: int, timeout: float) -> float:
    """Seconds from starting postgres on ``data`` to its promotion; checks the marker is there."""
    import psycopg

    from tests.pg import free_port

    if os.geteuid() == 0:  # pitr restore already gives the files to the data's owner; made sure of here
        subprocess.run(["chown", "-R", "postgres:postgres", str(data)], check=True)
    data.chmod(0o700)
    server = Recovered(bindir, data, free_port())
    connect = dict(host="127.0.0.1", port=server.port, user=cluster.user, password=cluster.password,
                   dbname=DATABASE, autocommit=True, connect_timeout=5)
    try:
        started = time.monotonic()
        server.start()
        deadline = started + timeout
        while True:
            try:
                with psycopg.connect(**connect) as conn:
                    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        seconds = time.monotonic() - started
                        (found,) = conn.execute("SELECT marker FROM bench_marker").fetchone()
                        if found != marker:
                            raise SystemExit(f"the restored cluster has marker {found}, not {marker}")
                        return seconds
            except psycopg.OperationalError:
                pass  # starting up, or not yet consistent
            if time.monotonic() > deadline:
                raise SystemExit(f"the recovered server did not promote within {timeout:.0f}s:\n{server.log_tail()}")
            time.sleep(0.05)
    finally:
        server.stop()


@dataclass
class Rto:
    """Every run's build (``pitr restore --to``) and recovery (start to promotion)."""

    builds: list[float] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)
    wal_files: int = 0
    build_rss: int = 0

    @property
    def totals(self) -> list[float]:
        return [b + r for b, r in zip(self.builds, self.recoveries, strict=True)]


def rto(env: dict[str, str], work: Path, bindir: Path, cluster, marker: int, runs: int, timeout: float) -> Rto:
    """``runs`` times: build the data directory to latest, then recover it until it promotes."""
    result = Rto()
    for run in range(runs):
        data = work / f"restored-{run}"
        seconds, peak = timed(backupd("pitr", "restore", "--time", "latest", "--to", str(data)), env)
        result.build_rss = max(result.build_rss, peak)
        result.wal_files = len(list((data / "backupd_wal").iterdir()))
        result.recoveries.append(recover(bindir, data, cluster, marker, timeout))
        result.builds.append(seconds)
        shutil.rmtree(data)
    return result


def listed(values: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in values)


def print_rto(title: str, result: Rto, gb: float, runs: int) -> None:
    print(f"\n{title}: {result.wal_files} WAL files copied, minimum of {runs} runs\n")
    print("| what | time | per GB of cluster |")
    print("|---|---|---|")
    for name, values in (("build: backupd pitr restore --time latest --to DIR", result.builds),
                         ("recovery: postgres start to promotion (pg_is_in_recovery() false)", result.recoveries),
                         ("RTO: build + recovery", result.totals)):
        print(f"| {name} | {min(values):.2f} s | {min(values) / gb:.2f} s/GB |")
    print(f"\nbuild peak RSS {result.build_rss / 1024:.0f} MB; every run: build {listed(result.builds)} s, "
          f"recovery {listed(result.recoveries)} s", flush=True)


def single_database(env: dict[str, str], cluster, marker: int, runs: int, work: Path, whole: Rto,
                    timeout: float) -> None:
    """``pitr restore --time latest --database`` into the live server, ``runs`` times, against
    the whole cluster's build plus recovery to the same moment (``whole``)."""
    argv = backupd("pitr", "restore", "--time", "latest", "--database", DATABASE, "--into", RESTORED)
    times: list[float] = []
    inner: list[float] = []
    for _ in range(runs):
        output = work / "single-database.out"
        started = time.monotonic()
        with open(output, "wb") as out:
            done = subprocess.run(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        times.append(time.monotonic() - started)
        text = output.read_text()
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[2:])} exited with {done.returncode}:\n{text[-3000:]}")
        if found := re.search(r" in ([0-9.]+)s \(", text):  # "restored ... into NEWDB in 12.3s (mode)"
            inner.append(float(found[1]))
        with cluster.connect(RESTORED) as conn:
            (restored,) = conn.execute("SELECT marker FROM bench_marker").fetchone()
        with cluster.connect() as conn:
            conn.execute(f'DROP DATABASE "{RESTORED}"')
        if restored != marker:
            raise SystemExit(f"the restored database has marker {restored}, not {marker}")
    ours, cluster_rto = min(times), min(whole.totals)
    print(f"\none database ({DATABASE}) to the same moment, into the running server, against the whole "
          f"cluster, minimum of {runs} runs\n")
    print("| what | time | vs the whole cluster |")
    print("|---|---|---|")
    print(f"| whole cluster: pitr restore --to DIR, then postgres to promotion | {cluster_rto:.2f} s | 1.00x |")
    print(f"| backupd pitr restore --time latest --database {DATABASE} --into {RESTORED} | {ours:.2f} s | "
          f"{ours / cluster_rto:.2f}x |")
    if inner:
        print(f"| of which the dump restored into the live server (its own figure) | {min(inner):.2f} s | "
              f"{min(inner) / cluster_rto:.2f}x |")
    print(f"\nevery run: {listed(times)} s", flush=True)
