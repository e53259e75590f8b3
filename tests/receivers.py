"""Real notification receivers on 127.0.0.1: an HTTP server that records every request
(json://, form://, ntfy://, gotify:// and the webhook all POST to it), and an SMTP
sink (aiosmtpd) that requires STARTTLS."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from tests.pg import free_port


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class HttpRecorder:
    port: int
    requests: list[Request] = field(default_factory=list)

    def at(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


@contextmanager
def http_recorder() -> Iterator[HttpRecorder]:
    recorder = HttpRecorder(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            recorder.requests.append(Request("POST", self.path, dict(self.headers), self.rfile.read(length)))
            answer = b'{"id": "1"}'  # ntfy and gotify answer JSON
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def smtp_sink(folder: Path) -> Iterator[tuple[dict[str, str], list[tuple[list[str], str]]]]:
    """aiosmtpd with STARTTLS required, and a certificate the client trusts via SSL_CERT_FILE.
    Yields the settings that send to it and the list of (recipients, message) it received."""
    import ssl

    from aiosmtpd.controller import Controller

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    received: list[tuple[list[str], str]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            received.append((envelope.rcpt_tos, envelope.content.decode("utf-8", "replace")))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    controller.start()
    try:
        yield {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "NOTIFICATION_EMAIL": "ops@example.com",
               "SMTP_FROM": "backupd@example.com", "SSL_CERT_FILE": str(cert)}, received
    finally:
        controller.stop()
