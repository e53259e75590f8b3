"""backupd's backup as the daemon runs it on its schedule: one process that has imported
its code and read its settings once, then backs up on request.

    python bench/scheduled.py       (settings from the environment, as for backupd)

For each line read on stdin it runs one backup (``coordinator.backup``, what the daemon's
backup job calls) and answers ``<seconds> <peak RSS KiB>``: the peak of this process or of the
largest child so far. The difference from ``backupd backup`` is the process start.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backupd.coordinator import backup  # noqa: E402
from backupd.logging import configure_logging  # noqa: E402
from backupd.settings import load_settings  # noqa: E402


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)  # as the daemon does: to stderr
    for _ in sys.stdin:
        started = time.monotonic()
        result = backup(settings)
        seconds = time.monotonic() - started
        if not result.ok:
            raise SystemExit(f"the backup failed: {[o.error for o in result.outcomes if not o.ok]}")
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(f"{seconds:.6f} {peak}", flush=True)


if __name__ == "__main__":
    main()
