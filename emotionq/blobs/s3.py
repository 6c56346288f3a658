"""Blobs in an S3-compatible bucket (``EMOTIONQ_BLOB_URL=s3://bucket/prefix``), through boto3.

Uploads stream on while they arrive: the writer spools at most one part
(``EMOTIONQ_BLOB_PART_BYTES``, on the API's disk); an upload that fits in one part is filed with a
single conditional PUT (``If-None-Match: *``: identical audio is stored once), a longer one goes up
as a multipart upload under ``<prefix>incoming/`` and is copied to its name inside the store on
commit. Workers read blobs through a ``BlobCache``, each fetched blob checked against its SHA-256.
A store that does not answer is BlobStoreUnavailable (HTTP 503 at the API; on a worker, after
``EMOTIONQ_BLOB_PATIENCE_S`` of retrying, a transient fault that Celery retries).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
from botocore.config import Config

from emotionq.blobs.base import BlobStore, BlobWriter, missing, name
from emotionq.blobs.cache import BlobCache
from emotionq.errors import BadInput, BlobStoreUnavailable, ConfigurationError
from emotionq.retrying import patiently
from emotionq.settings import Settings

log = logging.getLogger(__name__)

INCOMING = "incoming/"
READ_CHUNK = 1 << 20
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def client(settings: Settings):
    """A boto3 S3 client for the ``EMOTIONQ_S3_*`` settings (credentials: those, else boto3's usual chain)."""
    style = settings.s3_addressing_style
    if style == "auto":
        style = "path" if settings.s3_endpoint_url else "virtual"
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url or None, region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id or None, aws_secret_access_key=secret,
        config=Config(connect_timeout=settings.s3_timeout_s, read_timeout=settings.s3_timeout_s,
                      retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=64,
                      s3={"addressing_style": style}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix) of ``s3://bucket/prefix``; the prefix ends with / unless empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigurationError(f"{url!r} is not an s3://bucket/prefix URL")
    prefix = parts.path.lstrip("/")
    return parts.netloc, prefix if not prefix or prefix.endswith("/") else prefix + "/"


def is_missing(exc: Exception) -> bool:
    return isinstance(exc, botocore.exceptions.ClientError) and (
        exc.response.get("Error", {}).get("Code") in MISSING_CODES
        or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404)


def _precondition_failed(exc: Exception) -> bool:
    return isinstance(exc, botocore.exceptions.ClientError) and (
        exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412")
        or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412)


def unavailable(what: str, exc: Exception) -> BlobStoreUnavailable:
    return BlobStoreUnavailable(f"the object store did not {what} ({type(exc).__name__}: {exc}); retry shortly")


class _RangeReader(io.RawIOBase):
    """A seekable, read-only view of one object, read by ranged GETs (wrap it in a BufferedReader)."""

    def __init__(self, s3, bucket: str, key: str, size: int) -> None:
        self._s3, self._bucket, self._key, self._size, self._pos = s3, bucket, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        if self._pos >= self._size:
            return 0
        end = min(self._size, self._pos + len(buffer)) - 1
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{end}")["Body"]
            data = body.read()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise unavailable("serve the upload for probing", exc) from exc
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)


class S3Writer(BlobWriter):
    """Spools one part on disk at most; past it, a multipart upload to a temporary object."""

    def __init__(self, store: S3Blobs, *, max_bytes: int) -> None:
        super().__init__(max_bytes=max_bytes)
        self._store = store
        fd, path = tempfile.mkstemp(dir=store.spool_dir, prefix="spool-")
        self._spool = os.fdopen(fd, "w+b")
        self._spool_path = Path(path)
        self._spooled = 0
        self._incoming = f"{store.prefix}{INCOMING}{uuid.uuid4().hex}"
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self._completed = False
        self._committed = False

    def _append(self, chunk: bytes) -> None:
        self._spool.write(chunk)
        self._spooled += len(chunk)

    @property
    def needs_flush(self) -> bool:
        return self._spooled >= self._store.part_bytes

    @property
    def local(self) -> bool:
        return self._upload_id is None  # only spooled: closing flushes, aborting deletes, the spool file

    def flush(self) -> None:
        s3, bucket = self._store.s3, self._store.bucket
        try:
            if self._upload_id is None:
                self._upload_id = s3.create_multipart_upload(Bucket=bucket, Key=self._incoming)["UploadId"]
            self._spool.seek(0)
            number = len(self._parts) + 1
            etag = s3.upload_part(Bucket=bucket, Key=self._incoming, UploadId=self._upload_id, PartNumber=number,
                                  Body=self._spool.read(self._spooled))["ETag"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise unavailable("take a part of the upload", exc) from exc
        self._parts.append({"ETag": etag, "PartNumber": number})
        self._spool.seek(0)
        self._spool.truncate()
        self._spooled = 0

    def _finish(self) -> None:
        if self._upload_id is None:  # it fits in one part: still spooled, filed by one PUT on commit
            self._spool.flush()
            return
        if self._spooled:
            self.flush()
        try:
            self._store.s3.complete_multipart_upload(Bucket=self._store.bucket, Key=self._incoming,
                                                     UploadId=self._upload_id,
                                                     MultipartUpload={"Parts": self._parts})
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise unavailable("complete the upload", exc) from exc
        self._completed = True

    def source(self):
        if self._upload_id is None:
            return self._spool_path
        return io.BufferedReader(_RangeReader(self._store.s3, self._store.bucket, self._incoming, self.size),
                                 buffer_size=READ_CHUNK)

    def commit(self, gen: str | None) -> bool:
        blob = name(self.close(), gen)
        if self._committed:
            return False
        s3, bucket, key = self._store.s3, self._store.bucket, self._store.key(blob)
        try:
            if self._upload_id is None:
                self._spool.seek(0)
                try:
                    s3.put_object(Bucket=bucket, Key=key, Body=self._spool.read(), IfNoneMatch="*",
                                  Metadata={"sha256": self.sha256})
                except botocore.exceptions.ClientError as exc:
                    if not _precondition_failed(exc):
                        raise
                    created = False  # stored once: an identical upload filed it first
                else:
                    created = True
            elif self._store.exists(blob):
                created = False
            else:
                s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": self._incoming},
                               Metadata={"sha256": self.sha256}, MetadataDirective="REPLACE")
                created = True
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise unavailable("store the audio", exc) from exc
        self._committed = True
        self.abort()
        return created

    def abort(self) -> None:
        self._spool.close()
        self._spool_path.unlink(missing_ok=True)
        if self._upload_id is None:
            return
        s3, bucket = self._store.s3, self._store.bucket
        try:
            if self._completed:
                s3.delete_object(Bucket=bucket, Key=self._incoming)
            else:
                s3.abort_multipart_upload(Bucket=bucket, Key=self._incoming, UploadId=self._upload_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            log.warning("could not remove the temporary object %s (the janitor will): %s", self._incoming, exc)
        self._upload_id = None


class S3Blobs(BlobStore):
    def __init__(self, url: str, s3, *, part_bytes: int, spool_dir: Path, cache: BlobCache | None = None,
                 patience_s: float = 0.0) -> None:
        self.url = url
        self.bucket, self.prefix = split_url(url)
        self.s3 = s3
        self.part_bytes = part_bytes
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.cache = cache
        self.patience_s = patience_s

    @classmethod
    def from_settings(cls, url: str, settings: Settings, *, worker: bool = False) -> S3Blobs:
        cache = BlobCache(settings.effective_blob_cache_dir, max_bytes=settings.blob_cache_bytes) if worker else None
        return cls(url, client(settings), part_bytes=settings.blob_part_bytes,
                   spool_dir=settings.var_dir.resolve() / "spool", cache=cache,
                   patience_s=settings.blob_patience_s if worker else 0.0)

    def key(self, name: str) -> str:
        return self.prefix + name

    def writer(self, *, max_bytes: int) -> S3Writer:
        return S3Writer(self, max_bytes=max_bytes)

    @contextlib.contextmanager
    def local(self, sha256: str, gen: str | None) -> Iterator[Path]:
        if self.cache is None:
            raise RuntimeError("this S3 blob store has no local cache (open it with worker=True)")
        with self.cache.get(sha256, lambda tmp: patiently(
                lambda: self.download(sha256, gen, tmp), patience_s=self.patience_s, retry_on=BlobStoreUnavailable,
                what="object store", first_pause_s=0.2)) as path:
            yield path

    def download(self, sha256: str, gen: str | None, dest: Path) -> None:
        """Fetch a blob into ``dest``, checking its SHA-256 (BadInput ``audio_corrupt`` if it never matches)."""
        for attempt in (1, 2):
            digest = hashlib.sha256()
            try:
                body = self.s3.get_object(Bucket=self.bucket, Key=self.key(name(sha256, gen)))["Body"]
                with open(dest, "wb") as f:
                    for chunk in body.iter_chunks(READ_CHUNK):
                        digest.update(chunk)
                        f.write(chunk)
            except botocore.exceptions.ClientError as exc:
                if is_missing(exc):
                    raise missing(sha256, self.url) from exc
                raise unavailable("serve the audio", exc) from exc
            except (botocore.exceptions.BotoCoreError, OSError) as exc:
                raise unavailable("serve the audio", exc) from exc
            if digest.hexdigest() == sha256:
                return
            log.warning("blob %s fetched with SHA-256 %s (attempt %d)", sha256, digest.hexdigest(), attempt)
        raise BadInput(f"the stored audio {sha256} does not match its SHA-256; upload it again", code="audio_corrupt")

    def exists(self, name: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self.key(name))
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                return False
            raise unavailable("answer", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise unavailable("answer", exc) from exc
        return True

    def delete(self, name: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key(name))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise unavailable("delete an object", exc) from exc

    def listing(self) -> Iterator[tuple[str, float]]:
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):], obj["LastModified"].timestamp()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise unavailable("list the bucket", exc) from exc

    def abort_stale_uploads(self, *, older_than: float) -> int:
        """Abort multipart uploads begun before ``older_than`` (an API that died mid-upload left them)."""
        aborted = 0
        try:
            uploads = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix + INCOMING)
            for upload in uploads.get("Uploads", []):
                if upload["Initiated"].timestamp() < older_than:
                    self.s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise unavailable("list its multipart uploads", exc) from exc
        return aborted

    def ping(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise unavailable("answer", exc) from exc
