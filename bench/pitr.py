"""Point-in-time recovery: a base backup against bare pg_basebackup, and the time to bring
the cluster back (RTO), in one run.

    python bench/pitr.py [--major 17] [--size-mb 1024] [--runs 3] [--updates 5000] [--changed 5]

Starts a throwaway server of ``--major`` from the test matrix (scripts/bootstrap installs
14 to 18 in /opt/backupd-test/postgresql), fills a database with bench/generate.py, and
runs ``backupd run`` with PITR on (its WAL stream, and the base backup it takes at start)
until /status shows a recovery window. Then, beside the running daemon:

1. ``backupd pitr base`` against bare ``pg_basebackup -D - -Ft -X fetch -c fast > /dev/null``
   (the extraction limit) and the peer ``pg_basebackup ... | zstd -1 -T<cpus> > file`` (the
   same compression as backupd's default, alone), interleaved, the minimum of ``--runs``: time,
   ratio, size, peak RSS, and backupd's speed against the peer's (the target is >= 0.9x), and
   against the peer through exactly backupd's compressor (``--long``: backupd's own overhead);
1b. PostgreSQL 17 and newer (``summarize_wal`` is turned on at the start): about
   ``--changed`` percent of every table's pages rewritten, then an incremental base backup
   against the newest full one, and a full one of the same state: time and size, and the
   ratios;
2. a stretch of work after the newest full base backup (the "week-old full base and a day
   of WAL", in small): about ``--changed`` percent of the pages rewritten (other pages than
   in 1b) and ``--updates`` single-row updates, each its own transaction, until the stream
   has it all (the slot and the window's end are past it);
3. the RTO to latest, the minimum of ``--runs``: "build" is ``backupd pitr restore --time
   latest --to DIR``; "recovery" is a stock postgres started on DIR (as the postgres user)
   until ``SELECT pg_is_in_recovery()`` says it promoted. Each run checks the restored
   cluster has the last write. (a) from the full base backup and all the WAL after it; (b)
   on 17 and newer, the same state through a chain: an incremental base backup is taken
   after the work and streamed past its end, and the restore combines the full one and the
   incremental and replays little. Both, and the ratio b/a;
4. single-database PITR to the same moment, ``backupd pitr restore --time latest --database
   bench_pitr --into bench_pitr_back`` into the running server (checked, then dropped),
   against the whole cluster's build plus recovery of 3 (b, else a).

Everything (server, daemon, folders) is removed at the end, also on failure. The work
folder (in BENCH_DIR, else TMPDIR) must be one the postgres user can enter.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, backupd, print_table, shell, timed  # noqa: E402
from pitr_restore import DATABASE, print_rto, rto, single_database  # noqa: E402


def wait_for(predicate, timeout: float, what: str, alive=None):
    """``predicate()``'s first true value, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


class Daemon:
    """``backupd run`` with PITR on, its log in a file (a pipe nobody reads would block it)."""

    def __init__(self, env: dict[str, str], port: int, log: Path):
        self.port, self.log = port, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(backupd("run"), env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"backupd run exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def window(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as response:
                return (json.load(response).get("pitr") or {}).get("window")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return None

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise SystemExit("backupd run did not stop within 60 s of SIGTERM") from None


def cluster_bytes(cluster) -> int:
    with cluster.connect() as conn:
        return int(conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()[0])


def newest_base_manifest(repo: Path) -> dict:
    manifests = sorted(repo.glob("_pitr/*/base/base-*.json"))
    return json.loads(manifests[-1].read_text())


def write_wal(cluster, updates: int) -> tuple[int, int, str]:
    """``updates`` single-row updates of events, each committed on its own, then a marker row.
    Returns (the marker, WAL bytes written, the WAL position after them)."""
    rng = random.Random(7)
    with cluster.connect(DATABASE) as conn:
        (top,) = conn.execute("SELECT max(id) FROM events").fetchone()
        (before,) = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        for _ in range(updates):
            conn.execute("UPDATE events SET amount = amount + 1 WHERE id = %s", (rng.randint(1, top),))
        marker = rng.randint(1, 10 ** 9)
        conn.execute("CREATE TABLE bench_marker AS SELECT %s::int AS marker", (marker,))
        (after,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        (written,) = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (after, before)).fetchone()
    return marker, int(written), after


INCREMENTAL = ("from backupd.settings import load_settings; from backupd.pitr.base import run_base_backup; "
               "print(run_base_backup(load_settings(), 'bench', incremental=True).doc.parent)")


def change_pages(cluster, percent: float, phase: int = 0) -> None:
    """Every row of about ``percent`` of each table's pages rewritten (by block number).
    Another ``phase`` picks other pages: the rows of the ones picked before have moved (to
    the end of the table, as the pages are full), so picking them again would change little."""
    every = max(1, round(100 / percent))
    with cluster.connect(DATABASE) as conn:
        tables = [t for (t,) in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND "
                                             "relnamespace = 'public'::regnamespace")]
        for table in tables:
            column = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum = 1",
                                  (table,)).fetchone()[0]
            conn.execute(f'UPDATE "{table}" SET "{column}" = "{column}" '
                         f"WHERE ((ctid::text::point)[0])::bigint % {every} = {phase % every}")
        conn.execute("CHECKPOINT")


def incremental_against_full(env: dict[str, str], repo: Path, cluster, percent: float) -> None:
    """An incremental base backup after ``percent`` of the pages changed, against a full one."""
    change_pages(cluster, percent)
    incremental, _ = timed([sys.executable, "-c", INCREMENTAL], env)
    part = newest_base_manifest(repo)
    if not part.get("parent"):
        raise SystemExit(f"the base backup was not incremental: {part['id']} (is summarize_wal on?)")
    full, _ = timed(backupd("pitr", "base"), env)
    whole = newest_base_manifest(repo)
    print(f"\nincremental base backup after {percent:g}% of the pages changed, against a full one of the same "
          "state\n")
    print("| what | time | size |")
    print("|---|---|---|")
    print(f"| full: backupd pitr base | {full:.2f} s | {whole['size'] / 1e6:.1f} MB |")
    print(f"| incremental (against {part['parent']}) | {incremental:.2f} s | {part['size'] / 1e6:.1f} MB |")
    print(f"\nincremental / full: {incremental / full:.2f}x the time, {part['size'] / whole['size']:.3f}x the size",
          flush=True)


def slot_has(cluster, lsn: str, slot: str = "backupd") -> bool:
    """The stream has flushed the WAL up to ``lsn`` (a physical slot's restart_lsn is its flush)."""
    with cluster.connect() as conn:
        row = conn.execute("SELECT restart_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                           (lsn, slot)).fetchone()
    return bool(row and row[0])


def current_lsn(cluster) -> str:
    with cluster.connect() as conn:
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def wal_between(cluster, start: str, end: str) -> int:
    with cluster.connect() as conn:
        return int(conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0])


def generate_wal(cluster, updates: int, percent: float) -> tuple[int, int, str]:
    """A stretch of work after the newest full base backup: about ``percent`` of the pages
    rewritten, then ``updates`` single-row updates and the marker. Returns (the marker, WAL
    bytes written, the WAL position after them)."""
    start = current_lsn(cluster)
    change_pages(cluster, percent, phase=1)  # not the pages changed before the incremental of 1b
    marker, _, end = write_wal(cluster, updates)
    return marker, wal_between(cluster, start, end), end


def streamed(daemon: Daemon, cluster, lsn: str, since: datetime, what: str, timeout: float) -> None:
    """The stream has the WAL up to ``lsn``, and the window reaches ``since`` (a commit or a
    usable base backup at or after it)."""
    wait_for(lambda: slot_has(cluster, lsn), timeout, f"the slot to confirm {what}", daemon.alive)
    wait_for(lambda: (w := daemon.window()) and datetime.fromisoformat(w["end"]) >= since, timeout,
             f"the window's end to pass {what}", daemon.alive)


def incremental_after_work(env: dict[str, str], repo: Path, daemon: Daemon, cluster, timeout: float) -> float:
    """An incremental base backup of the state after the work, streamed past its end; its time."""
    before = datetime.now(UTC)
    seconds, _ = timed([sys.executable, "-c", INCREMENTAL], env)
    part = newest_base_manifest(repo)
    if not part.get("parent"):
        raise SystemExit(f"the base backup was not incremental: {part['id']} (is summarize_wal on?)")
    end = current_lsn(cluster)
    streamed(daemon, cluster, end, before, "the incremental base backup", timeout)
    print(f"incremental base backup {part['id']} against {part['parent']}: {seconds:.2f} s, "
          f"{part['size'] / 1e6:.1f} MB, streamed past its end", flush=True)
    return seconds


def compressor_argv() -> list[str]:
    """backupd's default compressor, as a base backup runs it."""
    from backupd.stream import COMPRESSIONS

    zstd = COMPRESSIONS["zstd"]
    return zstd.compress_argv(zstd.default_level, os.cpu_count() or 1) or ["cat"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--major", type=int, default=17)
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the generated database")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--updates", type=int, default=5000, help="single-row updates to replay after the base backup")
    parser.add_argument("--changed", type=float, default=5.0, help="percent of pages changed before an incremental")
    args = parser.parse_args()
    from tests.pg import MATRIX, free_port, matrix_bindir, remove_cluster, start_cluster

    bindir = matrix_bindir(args.major)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM too
    load = os.getloadavg()
    # Slow pieces scale with the data: generous bounds, never unbounded.
    bound = 120 + 0.5 * args.size_mb
    cluster = start_cluster(bindir)
    work = Path(tempfile.mkdtemp(prefix="backupd-bench-pitr-", dir=os.environ.get("BENCH_DIR")))
    work.chmod(0o755)  # the restored data directories are in here, and postgres must enter them
    daemon: Daemon | None = None
    try:
        print(f"machine: {os.cpu_count()} CPUs, "
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024 ** 3:.0f} GiB, "
              f"{time.strftime('%Y-%m-%d')}, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
              f"PostgreSQL {args.major} on port {cluster.port}", flush=True)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "BACKUP_", "PITR_", "PG"))}
        subprocess.run([sys.executable, str(ROOT / "bench/generate.py"), DATABASE, str(args.size_mb)],
                       env={**base_env, **cluster.env()}, check=True)
        size = cluster_bytes(cluster)
        if args.major >= 17:  # before the daemon's first base backup: the summaries reach back to it
            with cluster.connect() as conn:
                conn.execute("ALTER SYSTEM SET summarize_wal = on")
                conn.execute("SELECT pg_reload_conf()")
        repo = work / "repo"
        env = {**base_env, **cluster.env(), "BACKUP_DIR": str(repo), "LOG_LEVEL": "warning",
               "PITR_ENABLED": "true", "PG_BINDIR": str(MATRIX)}
        libpq = {**base_env, "PGHOST": cluster.host, "PGPORT": str(cluster.port), "PGUSER": cluster.user,
                 "PGPASSWORD": cluster.password}

        # The daemon: the WAL stream, and its own base backup at start (not measured).
        port = free_port()
        never = "0 0 1 1 *"  # no dump, base backup or drill of the daemon's own during the bench
        daemon = Daemon({**env, "LOG_LEVEL": "info", "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port),
                         "BACKUP_SCHEDULE": never, "PITR_BASE_SCHEDULE": never, "VERIFY_ENABLED": "false"},
                        port, work / "daemon.log")
        started = time.monotonic()
        wait_for(daemon.window, bound, "the daemon's recovery window", daemon.alive)
        print(f"daemon streaming, first base backup done, window after {time.monotonic() - started:.0f}s", flush=True)

        # 1. Base backups, interleaved, beside the running stream.
        # The peer: the same tar through the same zstd (backupd's default, level 1, a thread per
        # CPU) into a file: what compression alone costs, apart from backupd's own work.
        basebackup = f"{bindir}/pg_basebackup -D - -Ft -X fetch -c fast"
        cpus = os.cpu_count() or 1
        bare = f"bare pg_basebackup -D - -Ft -X fetch -c fast > /dev/null (PostgreSQL {args.major})"
        peer = f"peer: pg_basebackup -D - -Ft -X fetch -c fast | zstd -1 -T{cpus} > file"
        # The same, through exactly the compressor backupd runs (its --long window): what is
        # left is backupd's own work (the relay, sha256, fsync, the manifest, process start).
        zstd_argv = " ".join(compressor_argv())
        same = f"peer, backupd's compressor: pg_basebackup ... | {zstd_argv} > file"
        ours = "backupd pitr base (through zstd and sha256 into BACKUP_DIR, fsynced)"
        pipelines = {
            bare: (shell(f"{basebackup} > /dev/null"), libpq),
            peer: (shell(f"{basebackup} | zstd -q -1 -T{cpus} > {work}/peer.tar.zst"), libpq),
            same: (shell(f"{basebackup} | {zstd_argv} > {work}/same.tar.zst"), libpq),
            ours: (backupd("pitr", "base"), env),
        }
        times: dict[str, list[float]] = {name: [] for name in pipelines}
        rss: dict[str, int] = {}
        inner: list[float] = []
        stored = 0
        sizes: dict[str, int] = {}
        for _ in range(args.runs):
            for name, (argv, run_env) in pipelines.items():
                daemon.alive()
                seconds, peak = timed(argv, run_env)
                times[name].append(seconds)
                rss[name] = max(rss.get(name, 0), peak)
                if name in (peer, same):
                    output = work / ("peer.tar.zst" if name == peer else "same.tar.zst")
                    sizes[name] = output.stat().st_size
                    output.unlink()
                if name == ours:
                    manifest = newest_base_manifest(repo)
                    inner.append(manifest["duration_seconds"])
                    stored = manifest["size"]
        rows = [(bare, min(times[bare]), None, rss[bare]), (peer, min(times[peer]), sizes[peer], rss[peer]),
                (same, min(times[same]), sizes[same], rss[same]),
                (ours, min(times[ours]), stored, rss[ours]),
                ("backupd: the base backup itself (manifest duration, no process start)", min(inner), stored, None)]
        print_table(f"base backup of a {size / 1e9:.2f} GB cluster, {os.cpu_count()} CPUs, minimum of "
                    f"{args.runs} interleaved runs (the daemon's WAL stream running beside)", rows, rows[0][1])
        print(f"\nstored: {stored / 1e6:.1f} MB, {size / stored:.2f}:1 against the cluster's databases; "
              f"backupd against the peer: {min(times[ours]) / min(times[peer]):.2f}x the time, "
              f"{min(times[peer]) / min(times[ours]):.2f}x the speed (target >= 0.90x), "
              f"{min(times[peer]) / min(inner):.2f}x without the process start; against the peer through "
              f"backupd's own compressor: {min(times[same]) / min(times[ours]):.2f}x the speed, "
              f"{min(times[same]) / min(inner):.2f}x without the process start", flush=True)

        if args.major >= 17:
            incremental_against_full(env, repo, cluster, args.changed)

        # 2. A stretch of WAL after the newest full base backup ("a day of work"), streamed.
        marker, wal_bytes, end_lsn = generate_wal(cluster, args.updates, args.changed)
        streamed(daemon, cluster, end_lsn, datetime.now(UTC), "the new WAL", bound)
        print(f"after the newest full base backup: {args.changed:g}% of the pages rewritten and {args.updates} "
              f"updates, {wal_bytes / 1e6:.1f} MB of WAL, streamed", flush=True)

        # 3a. RTO from that full base backup and all the WAL after it. The stream keeps running
        # beside every restore (idle: the same conditions for a, b and the single database).
        full_base = newest_base_manifest(repo)
        full = rto(env, work, bindir, cluster, marker, args.runs, bound)
        whole, chain = full, None
        if args.major >= 17:  # 3b. the same state through a chain: an incremental taken after the work
            chain_seconds = incremental_after_work(env, repo, daemon, cluster, bound)
            chain = whole = rto(env, work, bindir, cluster, marker, args.runs, bound)
        gb = size / 1e9
        print_rto(f"RTO of a {gb:.2f} GB cluster from the full base backup ({full_base['size'] / 1e6:.1f} MB "
                  f"stored) and the {wal_bytes / 1e6:.1f} MB of WAL written after it", full, gb, args.runs)
        if chain is not None:
            print_rto(f"RTO of the same state through a chain: the full base backup, then an incremental taken "
                      f"after the work ({chain_seconds:.2f} s to take)",
                      chain, gb, args.runs)
            ratio = lambda pick: min(pick(chain)) / min(pick(full))  # noqa: E731
            print(f"\nchain / full base plus WAL (b/a): build {ratio(lambda r: r.builds):.2f}x, recovery "
                  f"{ratio(lambda r: r.recoveries):.2f}x, RTO {ratio(lambda r: r.totals):.2f}x", flush=True)

        # 4. One database to the same moment, into the live server, against the whole cluster.
        single_database(env, cluster, marker, args.runs, work, whole, bound)
        print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    finally:
        if daemon is not None:
            try:
                daemon.stop()
            except SystemExit as err:
                print(err, file=sys.stderr)
        remove_cluster(cluster)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
