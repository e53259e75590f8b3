"""The demo behind scripts/demo: a throwaway server unless DB_HOST is set."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.content import AWKWARD_DB, create_awkward_database  # noqa: E402
from tests.pg import remove_cluster, start_cluster  # noqa: E402


def shown(*args: str) -> str:
    """The command as a person would type it: each argument quoted for the shell where it needs it,
    so a name with spaces or quotes stays one word when copied from the screen."""
    return shlex.join(["backupd", *args])


def backupd(*args: str, env: dict[str, str]) -> None:
    print(f"\n$ {shown(*args)}", flush=True)
    subprocess.run([sys.executable, "-m", "backupd", *args], env=env, check=True, cwd=ROOT)


def main() -> int:
    env = dict(os.environ)
    env.setdefault("BACKUP_DIR", str(ROOT / ".demo" / "backups"))
    env.setdefault("LOG_FORMAT", "console")
    if os.environ.get("DB_HOST"):
        backupd("backup", env=env)
        backupd("list", env=env)
        if "--once" not in sys.argv:
            run_daemon(env)
        return 0
    print("No DB_HOST configured: starting a throwaway PostgreSQL with sample data.", flush=True)
    cluster = start_cluster()
    try:
        create_awkward_database(cluster)
        env.update(cluster.env())
        env["DB_NAME"] = AWKWARD_DB
        backupd("backup", "--label", "demo", env=env)
        backupd("list", env=env)
        backupd("restore", "latest", "--database", AWKWARD_DB, "--into", "demo_restored", env=env)
        with cluster.connect("demo_restored") as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").fetchone()[0]
        print(f"\nRestored database demo_restored holds {tables} tables. Backups are in {env['BACKUP_DIR']}.")
        if "--once" not in sys.argv:
            run_daemon(env)
    finally:
        remove_cluster(cluster)
    return 0


def run_daemon(env: dict[str, str]) -> None:
    env = {**env, "HTTP_HOST": "127.0.0.1", "BACKUP_SCHEDULE": env.get("BACKUP_SCHEDULE", "*/5 * * * *")}
    port = env.get("HTTP_PORT", "9188")
    print(f"\n$ backupd run      (a backup every 5 minutes; Ctrl-C stops it)\n"
          f"  open http://127.0.0.1:{port}/ in a browser for the status page\n"
          f"  try: curl localhost:{port}/healthz  /status  /metrics\n", flush=True)
    daemon = subprocess.Popen([sys.executable, "-m", "backupd", "run"], env=env, cwd=ROOT)
    try:
        daemon.wait()
    except KeyboardInterrupt:
        daemon.send_signal(signal.SIGINT)
        daemon.wait()


if __name__ == "__main__":
    raise SystemExit(main())
