"""What the bench scripts share: the connection, timing a command with its peak RSS, tables."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def libpq_env(dbname: str = "postgres") -> dict[str, str]:
    env = dict(os.environ)
    env.update(PGHOST=os.environ.get("DB_HOST", "localhost"), PGPORT=os.environ.get("DB_PORT", "5432"),
               PGUSER=os.environ.get("DB_USER", "postgres"), PGPASSWORD=os.environ.get("DB_PASSWORD", ""),
               PGDATABASE=dbname)
    return env


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(seconds, peak RSS in KiB of the largest process in the command's tree)"""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return seconds, usage.ru_maxrss


def shell(script: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def backupd(*args: str) -> list[str]:
    return [sys.executable, "-m", "backupd", *args]


def print_table(title: str, rows: list[tuple], baseline: float) -> None:
    print(f"\n{title}\n")
    print("| what | time | vs baseline | size | peak RSS |")
    print("|---|---|---|---|---|")
    for name, seconds, size, rss in rows:
        cell = name.replace("|", "\\|")
        size_text = f"{size / 1e6:.1f} MB" if size else "—"
        rss_text = f"{rss / 1024:.0f} MB" if rss else "—"
        print(f"| {cell} | {seconds:.2f} s | {seconds / baseline:.2f}x | {size_text} | {rss_text} |", flush=True)


class Scheduled:
    """backupd's backup as the daemon runs it (bench/scheduled.py): one warm process, a
    backup per ``run()``. Use as a context manager; ``run()`` returns (seconds, peak RSS KiB)."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Scheduled:
        return self

    def run(self) -> tuple[float, int]:
        if self.proc is None:  # started on the first run only: a pipeline left out costs nothing
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench/scheduled.py")], env=self.env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        if len(answer) != 2:
            self.proc.kill()
            raise SystemExit(f"the scheduled backup failed: {' '.join(answer) or 'no answer'}")
        return float(answer[0]), int(answer[1])

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def interleaved(pipelines: dict[str, tuple[str, str | None]], env: dict[str, str], runs: int,
                work: Path) -> list[tuple]:
    """Run each shell ``script`` of ``{name: (script, output file in work or None)}`` ``runs``
    times, interleaved; rows of (name, best seconds, output size, peak RSS KiB)."""
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    sizes: dict[str, int] = {}
    rss: dict[str, int] = {}
    for _ in range(runs):
        for name, (script, output) in pipelines.items():
            seconds, peak = timed(shell(script), env)
            times[name].append(seconds)
            rss[name] = max(rss.get(name, 0), peak)
            if output:
                sizes[name] = (work / output).stat().st_size
                (work / output).unlink()
            os.sync()  # the next pipeline must not wait for this one's writes to reach the disk
    return [(name, min(times[name]), sizes.get(name), rss[name]) for name in pipelines]
