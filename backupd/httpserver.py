"""The daemon's HTTP endpoints: /metrics, /healthz and /status.

With HTTP_AUTH_TOKEN set, /metrics and /status need ``Authorization: Bearer <token>``;
/healthz stays open for Docker's health check.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from backupd.logging import get_logger

log = get_logger("backupd.http")

Route = Callable[[], tuple[int, str, bytes]]


def json_response(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8")


class Endpoints:
    def __init__(self, healthz: Callable[[], tuple[bool, dict]], status: Callable[[], dict],
                 metrics: Callable[[], bytes], token: str | None):
        self.routes: dict[str, tuple[Route, bool]] = {
            "/healthz": (lambda: json_response(200 if (h := healthz())[0] else 503, h[1]), False),
            "/status": (lambda: json_response(200, status()), True),
            "/metrics": (lambda: (200, CONTENT_TYPE_LATEST, metrics()), True),
        }
        self.token = token

    def authorized(self, header: str | None) -> bool:
        if not self.token:
            return True
        expected = f"Bearer {self.token}".encode()
        return header is not None and hmac.compare_digest(header.encode(), expected)


def serve(host: str, port: int, endpoints: Endpoints) -> ThreadingHTTPServer:
    """Start serving in a background thread; ``shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "backupd"

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            path = self.path.split("?", 1)[0]
            route = endpoints.routes.get(path)
            if route is None:
                return self._send(*json_response(404, {"error": f"no such endpoint: {path}"}))
            handler, guarded = route
            if guarded and not endpoints.authorized(self.headers.get("Authorization")):
                return self._send(*json_response(401, {"error": "a bearer token is required"}))
            try:
                self._send(*handler())
            except Exception as err:  # an endpoint failing must not take the daemon down
                log.error("endpoint failed", path=path, error=str(err))
                self._send(*json_response(500, {"error": "internal error"}))

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            log.debug("http request", request=format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
