from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

from tests.integration.helpers import start_backupd
from tests.pg import free_port


class RunningDaemon:
    """``backupd run`` as a subprocess with its own HTTP port."""

    def __init__(self, env: dict[str, str], **overrides: str):
        self.port = free_port()
        self.env = {**env, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(self.port), **overrides}
        self.proc = start_backupd(self.env, "run")
        self.stderr = ""
        self._wait_for_http()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.url(path))
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def json(self, path: str) -> tuple[int, dict]:
        status, body = self.get(path)
        return status, json.loads(body)

    def _wait_for_http(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"backupd run exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                self.get("/healthz")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise AssertionError("backupd run did not serve HTTP in time")

    def wait_until(self, predicate, timeout: float = 60, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def newest_backup(self, database: str):
        status, body = self.json("/status")
        entry = body["databases"].get(database) or {}
        return entry.get("newest_backup")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate()
            raise AssertionError("backupd run did not stop after SIGTERM")
        return self.proc.returncode
