"""``s3://bucket/prefix``: AWS S3 and S3-compatible stores (MinIO, R2, Ceph, SeaweedFS).

How a copy is confirmed: before it uploads, one pass over the local file computes
its sha256 (it must match the manifest, or nothing is uploaded: an upload would
replace a good copy there) and the ETag the store will report: the MD5 of the file
for a single PUT, or for a multipart upload the MD5 of the parts' MD5s with
``-<parts>``, using the same part size we give boto3. After the upload, the
store's ETag must equal it. With ``AWS_S3_SSE=aws:kms`` the ETag is not an MD5,
so the object is read back and hashed instead. The sha256 is also stored as object metadata (``x-amz-meta-sha256``).

boto3 >= 1.36 computes request checksums by default, which some S3-compatible
stores reject; backupd asks for them only where S3 requires them.
"""

from __future__ import annotations

import hashlib
import queue
import re
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd.logging import get_logger
from backupd.stream import BLOCK
from backupd.targets.base import (
    CopyRecord,
    LocalFile,
    LocalFileDamaged,
    NotReplaced,
    RemoteFile,
    Target,
    TargetError,
    check_size,
    unreadable_local_file,
)

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.s3")

MIN_PART = 16 * 1024 * 1024
MAX_PARTS = 10000
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}(-\d+)?$")
_PERMANENT_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
                    "AuthorizationHeaderMalformed", "InvalidBucketName", "AllAccessDisabled"}


class _Exists(Exception):
    """The conditional write found an object of that name (412 Precondition Failed)."""


class _NotImplemented(Exception):
    """The store does not implement the condition."""


def _conditional(call: Callable[[], Any]) -> Any:
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "PreconditionFailed" or status == 412:
            raise _Exists() from None
        if code == "ConditionalRequestConflict" or status == 409:  # another conditional write of that name
            raise _Exists() from None
        if code == "NotImplemented" or status == 501:
            raise _NotImplemented() from None
        raise


def part_size(size: int) -> int:
    """Parts of at least 16 MiB, and never more than S3's 10,000 of them."""
    part = MIN_PART
    while size > part * MAX_PARTS:
        part *= 2
    return part


class _Hasher(threading.Thread):
    """Feeds chunks to one hash on its own thread (hashlib releases the GIL on big buffers)."""

    def __init__(self, update: Callable[[bytes], None]) -> None:
        super().__init__(daemon=True)
        self.update = update
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            self.update(chunk)


def sha256_and_etag(path: Path, part: int) -> tuple[str, str]:
    """One read of the file: its sha256 and the ETag an upload with ``part``-sized parts gets.
    The two hashes run side by side."""
    sha = hashlib.sha256()
    part_digests: list[bytes] = []
    state: dict[str, Any] = {"md5": hashlib.md5(), "in_part": 0}

    def md5_update(chunk: bytes) -> None:
        offset = 0
        while offset < len(chunk):
            take = min(len(chunk) - offset, part - state["in_part"])
            state["md5"].update(chunk[offset:offset + take])
            offset += take
            state["in_part"] += take
            if state["in_part"] == part:
                part_digests.append(state["md5"].digest())
                state["md5"], state["in_part"] = hashlib.md5(), 0

    md5_thread = _Hasher(md5_update)
    md5_thread.start()
    with open(path, "rb", buffering=0) as source:
        while chunk := source.read(BLOCK):
            md5_thread.chunks.put(chunk)
            sha.update(chunk)
    md5_thread.chunks.put(None)
    md5_thread.join()
    if state["in_part"] or not part_digests:
        part_digests.append(state["md5"].digest())
    if len(part_digests) == 1 and path.stat().st_size < part:
        return sha.hexdigest(), part_digests[0].hex()
    return sha.hexdigest(), f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


class S3Target(Target):
    def __init__(self, url: str, bucket: str, prefix: str, settings: Settings):
        import boto3
        from botocore.config import Config

        self.url, self.bucket, self.prefix = url, bucket, prefix.strip("/")
        self.settings = settings
        secret = settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
        self.client = boto3.client(
            "s3", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region,
            aws_access_key_id=settings.aws_access_key_id, aws_secret_access_key=secret,
            config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                          connect_timeout=10, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"}))

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _fail(self, what: str, err: Exception) -> TargetError:
        from botocore.exceptions import ClientError

        if isinstance(err, ClientError):
            code = err.response.get("Error", {}).get("Code", "")
            message = err.response.get("Error", {}).get("Message", "")
            error = TargetError(f"{what} at {self.url} failed: {code}: {message}".rstrip(": "))
            error.permanent = code in _PERMANENT_CODES
            return error
        return TargetError(f"{what} at {self.url} failed: {type(err).__name__}: {err}")

    def list(self) -> dict[str, RemoteFile]:
        found = {}
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    relative = item["Key"][len(prefix):]
                    found[relative] = RemoteFile(relative, item["Size"], item["LastModified"].timestamp(),
                                                 item.get("ETag", "").strip('"'))
        except Exception as err:
            raise self._fail("listing", err) from None
        return found

    def _extra_args(self, sha256: str) -> dict[str, str | dict[str, str]]:
        extra: dict[str, str | dict[str, str]] = {"Metadata": {"sha256": sha256}}
        if self.settings.aws_s3_storage_class:
            extra["StorageClass"] = self.settings.aws_s3_storage_class
        if self.settings.aws_s3_sse:
            extra["ServerSideEncryption"] = self.settings.aws_s3_sse
            if self.settings.aws_s3_sse_kms_key_id:
                extra["SSEKMSKeyId"] = self.settings.aws_s3_sse_kms_key_id
        return extra

    def put(self, file: LocalFile, replace: bool = False) -> CopyRecord:
        """The local file is hashed before it is uploaded: an upload replaces the object, so a
        file that no longer matches its manifest must never start one (a good copy there would
        be lost). The ETag computed in the same pass then confirms the upload. Without
        ``replace`` the upload is conditional (If-None-Match), so it never replaces an object
        another sidecar wrote, even one written a moment ago."""
        part = part_size(file.size)
        check_size(file)
        try:
            sha, expected_etag = sha256_and_etag(file.path, part)
        except OSError as err:
            raise unreadable_local_file(file.relative, err) from None
        if sha != file.sha256:
            raise LocalFileDamaged(file.relative)
        key = self._key(file.relative)
        if not replace and (existing := self._head(key)) is not None:
            return self._already_there(file, existing, expected_etag)
        try:
            self._upload(file, key, part, conditional=not replace)
            etag = self.client.head_object(Bucket=self.bucket, Key=key)["ETag"].strip('"')
        except _Exists:  # written by someone else since the check above
            return self._already_there(file, self._head(key) or {}, expected_etag)
        except Exception as err:
            raise self._fail(f"uploading {file.relative}", err) from None
        if _MD5_ETAG.match(etag) and self.settings.aws_s3_sse != "aws:kms":
            if etag != expected_etag:
                raise TargetError(f"the copy of {file.relative} at {self.url} does not match: ETag {etag}, "
                                  f"expected {expected_etag}")
        elif self._read_back_sha256(file.relative) != sha:
            raise TargetError(f"the copy of {file.relative} at {self.url} does not match its checksum")
        return {"etag": etag}

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
            return head
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(f"checking {key}", err) from None
        except Exception as err:
            raise self._fail(f"checking {key}", err) from None

    def _already_there(self, file: LocalFile, head: dict[str, Any], expected_etag: str) -> CopyRecord:
        """The object of that name: the copy when it is the same file (its sha256 recorded
        by backupd, or its ETag), else someone else's, never replaced."""
        etag = str(head.get("ETag", "")).strip('"')
        same = head.get("ContentLength") == file.size and (
            head.get("Metadata", {}).get("sha256") == file.sha256 or etag == expected_etag)
        if not same:
            raise NotReplaced(file.relative, self.url)
        return {"etag": etag}

    def _upload(self, file: LocalFile, key: str, part: int, conditional: bool) -> None:
        """One PUT, or a multipart upload in ``part``-sized parts (the ETag computed above
        assumes exactly these parts). boto3's transfer manager cannot pass If-None-Match,
        hence the calls by hand. A store that does not implement the condition (older
        S3-compatible ones answer 501) is written without it: the check in ``put`` came first,
        and only a writer in between could then be replaced."""
        condition = {"IfNoneMatch": "*"} if conditional else {}
        try:
            self._upload_with(file, key, part, condition)
        except _NotImplemented:
            log.warning("the store does not support conditional writes; checked before writing instead",
                        target=self.url)
            self._upload_with(file, key, part, {})

    def _upload_with(self, file: LocalFile, key: str, part: int, condition: dict[str, str]) -> None:
        extra = self._extra_args(file.sha256)
        if file.size < part:
            with open(file.path, "rb") as body:
                _conditional(lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                                            ContentLength=file.size, **extra, **condition))
            return
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)["UploadId"]
        try:
            parts = self._upload_parts(file, key, part, upload_id)
            _conditional(lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": [*parts]}, **condition))
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception as err:  # the store expires it (lifecycle); the upload's own error matters
                log.warning("could not abort an unfinished upload", key=key, error=str(err))
            raise

    def _upload_parts(self, file: LocalFile, key: str, part: int, upload_id: str) -> tuple[dict[str, int | str], ...]:
        def send(number: int) -> dict[str, int | str]:
            with open(file.path, "rb") as source:
                source.seek((number - 1) * part)
                body = source.read(part)
            answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                             Body=body)
            return {"PartNumber": number, "ETag": answer["ETag"]}

        count = max(1, -(-file.size // part))
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="s3-part") as pool:
            return tuple(pool.map(send, range(1, count + 1)))

    def _read_back_sha256(self, relative: str) -> str:
        with tempfile.TemporaryDirectory(prefix="backupd-s3-") as folder:
            copy = Path(folder) / "copy"
            self.get(relative, copy)
            return sha256_and_etag(copy, MIN_PART)[0]

    def is_intact(self, file: LocalFile, remote: RemoteFile, record: CopyRecord) -> bool:
        return remote.size == file.size and remote.etag is not None and remote.etag == record.get("etag")

    def get(self, relative: str, destination: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key(relative), str(destination))
        except Exception as err:
            raise self._fail(f"fetching {relative}", err) from None

    def delete(self, relative: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(relative))
        except Exception as err:
            raise self._fail(f"deleting {relative}", err) from None
