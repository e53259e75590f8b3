"""The chart bench/run.py writes: backup time against database size, one line per pipeline."""

from __future__ import annotations

from pathlib import Path


def write_chart(series: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    """``series``: pipeline -> [(size in GB, seconds)]. Writes a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to the file
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for name, points in series.items():
        points = sorted(points)
        if not points:
            continue
        axes.plot([size for size, _ in points], [seconds for _, seconds in points], marker="o", label=name,
                  linewidth=2.4 if name.startswith("backupd") else 1.4)
    axes.set_xlabel("database size on disk (GB)")
    axes.set_ylabel("backup time (s), minimum of the runs")
    axes.set_title(title, fontsize=11)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
