"""The daemon's HTTP endpoints: the status page at /, /metrics, /healthz and /status.

With HTTP_AUTH_TOKEN set, /metrics and /status need ``Authorization: Bearer <token>``;
/healthz stays open for Docker's health check. The page takes the bearer header too, or
a cookie set by its login form (POST /login) or by a ``?token=`` link, which redirects
to ``/`` at once so the token leaves the address bar and the history. The cookie holds
an HMAC of the token, never the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from backupd import statuspage
from backupd.logging import get_logger

log = get_logger("backupd.http")

Route = Callable[[], tuple[int, str, bytes]]

COOKIE_PREFIX = "backupd_session_"
LOGIN_BODY_LIMIT = 4096
HTML = "text/html; charset=utf-8"
# Nothing from elsewhere, no script at all; the page's own inline style only.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def json_response(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8")


class Endpoints:
    def __init__(self, healthz: Callable[[], tuple[bool, dict[str, Any]]], status: Callable[[], dict[str, Any]],
                 metrics: Callable[[], bytes], token: str | None, page: Callable[[], str] | None = None):
        self.routes: dict[str, tuple[Route, bool]] = {
            "/healthz": (lambda: json_response(200 if (h := healthz())[0] else 503, h[1]), False),
            "/status": (lambda: json_response(200, status()), True),
            "/metrics": (lambda: (200, CONTENT_TYPE_LATEST, metrics()), True),
        }
        self.token = token
        self.page = page

    def authorized(self, header: str | None) -> bool:
        if not self.token:
            return True
        expected = f"Bearer {self.token}".encode()
        return header is not None and hmac.compare_digest(header.encode(), expected)

    def session(self) -> str:
        """The cookie's value: proves the token was given, without being it."""
        return hmac.new((self.token or "").encode(), b"backupd status page", hashlib.sha256).hexdigest()

    @property
    def cookie_name(self) -> str:
        """Named after the token, so two backupd on one host (cookies ignore the port) keep theirs."""
        return COOKIE_PREFIX + hashlib.sha256((self.token or "").encode()).hexdigest()[:8]

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), (self.token or "").encode())

    def allowed(self, authorization: str | None, cookie_header: str | None) -> bool:
        """The bearer header, or the cookie the login set."""
        if not self.token or self.authorized(authorization):
            return True
        # Split by hand: http.cookies stops at the first cookie it cannot parse (another app's
        # JSON cookie on the same host), which would hide ours.
        for part in (cookie_header or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie_name and hmac.compare_digest(value.encode(), self.session().encode()):
                return True
        return False

    def session_cookie(self) -> str:
        return f"{self.cookie_name}={self.session()}; Path=/; HttpOnly; SameSite=Strict"


class Handler(BaseHTTPRequestHandler):
    endpoints: Endpoints  # set on the subclass each server gets
    server_version = "backupd"
    timeout = 30  # a client that sends half a request never holds a thread for long

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        path = self.path.split("?", 1)[0]
        if path == "/" and self.endpoints.page is not None:
            return self._page(self.endpoints.page)
        route = self.endpoints.routes.get(path)
        if route is None:
            return self._send(*json_response(404, {"error": f"no such endpoint: {path}"}))
        handler, guarded = route
        if guarded and not self.endpoints.allowed(self.headers.get("Authorization"), self.headers.get("Cookie")):
            return self._send(*json_response(401, {"error": "a bearer token is required"}))
        try:
            self._send(*handler())
        except Exception as err:  # an endpoint failing must not take the daemon down
            log.error("endpoint failed", path=path, error=str(err))
            self._send(*json_response(500, {"error": "internal error"}))

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()  # the same status and headers; _send leaves the body out

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/login" or self.endpoints.page is None:
            return self._send(*json_response(404, {"error": "no such endpoint"}))
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= LOGIN_BODY_LIMIT:
            return self._send(*json_response(413, {"error": "the form is too large"}))
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        if self.endpoints.token_matches((form.get("token") or [""])[0]):
            return self._redirect_signed_in()
        self._send(401, HTML, statuspage.login_form(failed=True).encode(), PAGE_HEADERS)

    def _page(self, page: Callable[[], str]) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if "token" in query:  # a link with the token: set the cookie, drop the token from the address
            if not self.endpoints.token:
                return self._send(303, "text/plain; charset=utf-8", b"\n", {**PAGE_HEADERS, "Location": "/"})
            if self.endpoints.token_matches(query["token"][0]):
                return self._redirect_signed_in()
            return self._send(401, HTML, statuspage.login_form(failed=True).encode(), PAGE_HEADERS)
        if not self.endpoints.allowed(self.headers.get("Authorization"), self.headers.get("Cookie")):
            return self._send(401, HTML, statuspage.login_form().encode(), PAGE_HEADERS)
        try:
            body = page().encode("utf-8")
        except Exception as err:  # the page failing must not take the daemon down
            log.error("endpoint failed", path="/", error=str(err))
            return self._send(500, "text/plain; charset=utf-8", b"internal error; see the logs\n", PAGE_HEADERS)
        self._send(200, HTML, body, PAGE_HEADERS)

    def _redirect_signed_in(self) -> None:
        self._send(303, "text/plain; charset=utf-8", b"signed in\n",
                   {**PAGE_HEADERS, "Location": "/", "Set-Cookie": self.endpoints.session_cookie()})

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Never the query string: a ?token= link carries the secret.
        log.debug("http request", method=getattr(self, "command", None),
                  path=(getattr(self, "path", "") or "").split("?", 1)[0])


def serve(host: str, port: int, endpoints: Endpoints) -> ThreadingHTTPServer:
    """Start serving in a background thread; ``shutdown()`` stops it."""
    handler = type("BoundHandler", (Handler,), {"endpoints": endpoints})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
