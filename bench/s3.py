"""Time backupd's S3 upload (with its local sha256 + ETag pass and the ETag check)
against boto3's own ``upload_file`` of the same file, on a local SeaweedFS.

    python bench/s3.py [--size-mb 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402


def measure(size_mb: int = 512, runs: int = 3) -> list[tuple]:
    from backupd.settings import load_settings
    from backupd.stream import sha256_of
    from backupd.targets import make_target
    from backupd.targets.base import LocalFile
    from tests.servers import start_s3

    server = start_s3()
    work = Path(tempfile.mkdtemp(prefix="backupd-bench-s3-"))
    try:
        server.client().create_bucket(Bucket="bench")
        env = server.env("bench", "backupd")
        target = make_target(env["REPLICATION_TARGETS"], load_settings(env))
        big = work / "db-20261121T020000Z.dump.zst"
        with open(big, "wb") as out:
            for _ in range(size_mb):
                out.write(os.urandom(1 << 20))
        sha = sha256_of(big)  # streamed: a forked child's peak RSS starts from this process's
        file = LocalFile(big, "db/db-20261121T020000Z.dump.zst", sha, big.stat().st_size)
        client = server.client()
        timings: dict[str, list[float]] = {"boto3 upload_file": [], "backupd put (hash, upload, confirm)": []}
        for run in range(runs):
            started = time.monotonic()
            client.upload_file(str(big), "bench", f"plain/{run}")
            timings["boto3 upload_file"].append(time.monotonic() - started)
            started = time.monotonic()
            target.put(file)
            timings["backupd put (hash, upload, confirm)"].append(time.monotonic() - started)
        return [(name, min(values), big.stat().st_size, None) for name, values in timings.items()]
    finally:
        server.stop()
        shutil.rmtree(server.data, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args.size_mb, args.runs)
    print_table(f"S3 upload of {args.size_mb} MB to SeaweedFS on 127.0.0.1, minimum of {args.runs} runs",
                rows, rows[0][1])


if __name__ == "__main__":
    main()
