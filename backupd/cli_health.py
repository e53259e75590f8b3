"""``backupd health``: Docker's HEALTHCHECK, every 30 s, so it loads nothing but the
standard library: it asks the running daemon's ``/healthz`` and prints its answer."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from backupd.errors import ConfigError


def health_check(environ: Mapping[str, str]) -> int:
    """Asks the running daemon, so the answer includes whether its scheduler runs. It needs
    only HTTP_HOST and HTTP_PORT, read here without the full settings: Docker runs it every
    30 s, and loading every setting costs more than the question."""
    import urllib.error
    import urllib.request

    def setting(name: str, default: str) -> str:
        if name in environ or f"{name}_FILE" not in environ:
            return (environ.get(name) or default).strip()
        try:
            return Path(environ[f"{name}_FILE"]).read_text(encoding="utf-8")[:256].strip() or default
        except (OSError, UnicodeDecodeError):
            return default

    host = setting("HTTP_HOST", "0.0.0.0")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    port_text = setting("HTTP_PORT", "9188")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        print(f"backupd: configuration error: HTTP_PORT={port_text!r}: must be a port number", file=sys.stderr)
        return ConfigError.exit_code
    url = f"http://{'[' + host + ']' if ':' in host else host}:{int(port_text)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body, healthy = response.read().decode(), True
    except urllib.error.HTTPError as err:
        body, healthy = err.read().decode(), False
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        body = json.dumps({"status": "unhealthy", "reasons": [f"the daemon does not answer at {url}: {reason}"]})
        healthy = False
    print(body.strip())
    return 0 if healthy else 1
