"""``VOLUME_PATHS``: which folders beside the database are archived, each under a name."""

from __future__ import annotations

from pathlib import Path


def parse_volume_paths(text: str) -> dict[str, Path]:
    """``name=/path,other=/path`` -> {name: path}; ValueError naming what is wrong."""
    volumes = {}
    for entry in (part.strip() for part in text.split(",") if part.strip()):
        name, sep, path = entry.partition("=")
        name = name.strip()
        if not sep or not name or not path.strip().startswith("/"):
            raise ValueError(f"{entry!r} is not name=/absolute/path")
        if name in volumes:
            raise ValueError(f"the name {name!r} is given twice")
        volumes[name] = Path(path.strip())
    return volumes
