"""Evidence clips in an S3 bucket, over the ``minio`` SDK.

Each clip is two objects under deterministic keys (see :mod:`storage.records`): the MP4, with its
SHA-256 in ``x-amz-meta-sha256``, then its JSON sidecar. The sidecar is written last, so its
presence means the clip is complete; re-uploading an event overwrites both keys and never
duplicates.

The minio client gets its own urllib3 pool with short connect/read timeouts and few retries: when
the store is down, calls fail within seconds (and the upload spool keeps the clip) instead of
hanging on the SDK's defaults (5 minute timeouts, 5 retries).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from pydantic import BaseModel, ConfigDict
from urllib3.util import Retry, Timeout

from storage import metrics
from storage.access import S3Access
from storage.records import CLIP_SUFFIX, ClipSidecar, sidecar_key_for

logger = logging.getLogger(__name__)

_USER_META_PREFIX = "x-amz-meta-"
SHA256_META = _USER_META_PREFIX + "sha256"
_HASH_CHUNK_BYTES = 1024 * 1024


class StorageError(RuntimeError):
    """An S3 call failed. ``code`` is the S3 error code (``AccessDenied``...) when the server sent one."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class StorageUnavailableError(StorageError):
    """The endpoint could not be reached or did not answer in time (network-level failure)."""


class ClipIntegrityError(ValueError):
    """The local clip does not match its sidecar (hash or size): retrying cannot fix it."""


class StoredObject(BaseModel):
    """What ``stat`` tells about one stored object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    size_bytes: int
    etag: str
    content_type: str | None
    last_modified: datetime | None
    sha256: str | None
    """Value of ``x-amz-meta-sha256`` (None when the object has none)."""
    metadata: dict[str, str]
    """All user metadata (``x-amz-meta-*`` headers), keys lowercased without the prefix."""


def sha256_file(path: Path) -> str:
    """Lowercase hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _pool(*, secure: bool, connect_timeout_s: float, read_timeout_s: float, retries: int) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=Timeout(connect=connect_timeout_s, read=read_timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(
            total=retries,
            connect=retries,
            read=retries,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
        ),
    )


class ClipStore:
    """Clips and sidecars in one bucket of an S3 endpoint.

    Args:
        endpoint: ``host:port`` (no scheme).
        access_key: S3 access key.
        secret_key: S3 secret key (kept only inside the minio client; never logged).
        bucket: bucket name.
        secure: use HTTPS.
        region: S3 region; None lets the SDK ask the server once per bucket.
        connect_timeout_s: TCP connect timeout of every call.
        read_timeout_s: wait for response bytes, per socket read.
        retries: urllib3 retries per call (connect, read and 5xx together).
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 15.0,
        retries: int = 2,
    ) -> None:
        if "://" in endpoint or "/" in endpoint or not endpoint:
            raise ValueError(f"S3 endpoint {endpoint!r} must be host:port without scheme or path")
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self.region = region
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=_pool(
                secure=secure,
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                retries=retries,
            ),
        )
        # A separate client for health probes: one attempt, tight timeouts.
        self._probe = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=_pool(secure=secure, connect_timeout_s=1.0, read_timeout_s=2.0, retries=0),
        )

    def __repr__(self) -> str:
        return f"ClipStore(endpoint={self.endpoint!r}, bucket={self.bucket!r}, secure={self.secure})"

    @classmethod
    def for_access(
        cls,
        s3: S3Access,
        *,
        bucket: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 15.0,
        retries: int = 2,
    ) -> ClipStore:
        """The store behind an :class:`~storage.access.S3Access` (the one way every layer builds one).

        Args:
            s3: endpoint and keys (from :meth:`S3Access.from_config` or an embedded server).
            bucket: another bucket on the same endpoint (default ``s3.bucket``).
            connect_timeout_s, read_timeout_s, retries: as for the constructor.
        """
        return cls(
            s3.endpoint,
            s3.access_key,
            s3.secret_key,
            bucket or s3.bucket,
            secure=s3.secure,
            region=s3.region,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            retries=retries,
        )

    @property
    def client(self) -> Minio:
        """The minio client, for other stores sharing this bucket handle (e.g. the model registry)."""
        return self._client

    @contextmanager
    def translate_errors(self, op: str, key: str | None = None) -> Iterator[None]:
        """Turn SDK and transport errors into :class:`StorageError` naming the operation and object."""
        what = f"S3 {op} {self.bucket}/{key}" if key else f"S3 {op} bucket {self.bucket!r}"
        try:
            yield
        except S3Error as exc:
            raise StorageError(f"{what} at {self.endpoint} failed: {exc.code}: {exc.message}", code=exc.code) from exc
        except ServerError as exc:
            raise StorageError(f"{what} at {self.endpoint} failed: HTTP {exc.status_code}: {exc}") from exc
        except InvalidResponseError as exc:
            raise StorageError(f"{what} at {self.endpoint} failed: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageUnavailableError(f"{what}: endpoint {self.endpoint} unreachable: {exc}") from exc

    def ensure_bucket(self, *, object_lock: bool = False) -> None:
        """Create the bucket unless it exists (safe to call concurrently from several processes).

        Args:
            object_lock: create it with S3 object lock enabled (which also turns versioning on).
                Object lock can only be chosen at creation, so an existing bucket without it is
                an error rather than silently unprotected.

        Raises:
            StorageError: the store refused; or ``object_lock`` and the existing bucket has no
                object-lock configuration.
        """
        with self.translate_errors("create"):
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket, object_lock=object_lock)
                    logger.info(
                        "created bucket %s at %s%s",
                        self.bucket,
                        self.endpoint,
                        " with object lock" if object_lock else "",
                    )
                except S3Error as exc:
                    if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise
        if object_lock and not self.object_lock_enabled():
            raise StorageError(
                f"bucket {self.bucket!r} at {self.endpoint} exists without object lock: evidence needs a bucket "
                "created with object lock enabled (choose another storage.evidence_bucket)"
            )

    def object_lock_enabled(self) -> bool:
        """True when the bucket has an object-lock configuration."""
        try:
            with self.translate_errors("GET object-lock config"):
                self._client.get_object_lock_config(self.bucket)
        except StorageError as exc:
            if exc.code in {"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"}:
                return False
            raise
        return True

    def hash_object(self, key: str, version_id: str | None = None) -> tuple[str, int]:
        """(SHA-256 hex, size) of the stored bytes of ``key``, streamed in 1 MiB chunks."""
        digest = hashlib.sha256()
        size = 0
        with self.translate_errors("GET", key):
            response = self._client.get_object(self.bucket, key, version_id=version_id)
            try:
                for chunk in response.stream(_HASH_CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
            finally:
                response.close()
                response.release_conn()
        return digest.hexdigest(), size

    def put_clip(self, local_path: Path, sidecar: ClipSidecar, *, frame_path: Path | None = None) -> None:
        """Upload the alarm frame (if any), the MP4, then the sidecar, under ``sidecar.object_key`` (overwrites:
        idempotent). The sidecar goes last: a reader that finds it finds everything it records.

        Raises:
            FileNotFoundError: ``local_path`` (or ``frame_path``) is missing.
            ClipIntegrityError: a file's SHA-256 or size differs from the sidecar's; a frame without its record
                or a record without its frame.
            StorageError: the store refused or could not be reached (retry later).
        """
        try:
            frame_bytes = self._put_alarm_frame(sidecar, frame_path)
            size_bytes = local_path.stat().st_size
            digest = sha256_file(local_path)
            if digest != sidecar.sha256:
                raise ClipIntegrityError(
                    f"clip {local_path} has sha256 {digest}, its sidecar for event "
                    f"{sidecar.event_id!r} says {sidecar.sha256}"
                )
            if size_bytes != sidecar.size_bytes:
                raise ClipIntegrityError(
                    f"clip {local_path} has {size_bytes} bytes, its sidecar for event "
                    f"{sidecar.event_id!r} says {sidecar.size_bytes}"
                )
            body = sidecar.to_json_bytes()
            start = time.monotonic()
            with self.translate_errors("PUT", sidecar.object_key):
                self._client.fput_object(
                    self.bucket,
                    sidecar.object_key,
                    str(local_path),
                    content_type="video/mp4",
                    metadata={SHA256_META: digest},
                )
            with self.translate_errors("PUT", sidecar.sidecar_key):
                self._client.put_object(
                    self.bucket,
                    sidecar.sidecar_key,
                    io.BytesIO(body),
                    len(body),
                    content_type="application/json",
                    metadata={SHA256_META: hashlib.sha256(body).hexdigest()},
                )
        except (OSError, ValueError, StorageError):
            metrics.CLIP_UPLOADS_ERROR.inc()
            raise
        metrics.CLIP_UPLOADS_OK.inc()
        metrics.CLIP_UPLOAD_BYTES.inc(size_bytes + len(body) + frame_bytes)
        metrics.CLIP_UPLOAD_SECONDS.observe(time.monotonic() - start)

    def _put_alarm_frame(self, sidecar: ClipSidecar, frame_path: Path | None) -> int:
        """Upload the JPEG its sidecar records (checked against the record); its size, 0 when there is none."""
        record = sidecar.alarm_frame
        if record is None and frame_path is None:
            return 0
        if record is None or frame_path is None:
            raise ClipIntegrityError(
                f"event {sidecar.event_id!r}: alarm frame file {frame_path} and its record {record} must come together"
            )
        data = frame_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.sha256 or len(data) != record.size_bytes:
            raise ClipIntegrityError(
                f"alarm frame {frame_path} ({len(data)} bytes, sha256 {digest}) differs from its record for event "
                f"{sidecar.event_id!r} ({record.size_bytes} bytes, sha256 {record.sha256})"
            )
        with self.translate_errors("PUT", record.object_key):
            self._client.put_object(
                self.bucket,
                record.object_key,
                io.BytesIO(data),
                len(data),
                content_type="image/jpeg",
                metadata={SHA256_META: digest},
            )
        return len(data)

    def stat_clip(self, key: str) -> StoredObject:
        """Size, etag, content type and stored SHA-256 of one object."""
        with self.translate_errors("HEAD", key):
            obj = self._client.stat_object(self.bucket, key)
        meta = obj.metadata or {}
        return StoredObject(
            key=key,
            size_bytes=int(obj.size or 0),
            etag=obj.etag or "",
            content_type=obj.content_type,
            last_modified=obj.last_modified,
            sha256=meta.get(SHA256_META),
            metadata={
                k.lower().removeprefix(_USER_META_PREFIX): v
                for k, v in meta.items()
                if k.lower().startswith(_USER_META_PREFIX)
            },
        )

    def get_bytes(self, key: str) -> bytes:
        """The whole object in memory (clips are small; use presigned URLs to stream big ones)."""
        with self.translate_errors("GET", key):
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def get_sidecar(self, key: str) -> ClipSidecar:
        """The sidecar of a clip; ``key`` may be the clip key (``.mp4``) or the sidecar key."""
        sidecar_key = sidecar_key_for(key) if key.endswith(CLIP_SUFFIX) else key
        return ClipSidecar.from_json_bytes(self.get_bytes(sidecar_key))

    def list_keys(self, prefix: str = "clips/") -> list[str]:
        """Every object key under ``prefix`` (recursive), sorted."""
        with self.translate_errors("LIST", prefix):
            return sorted(
                o.object_name
                for o in self._client.list_objects(self.bucket, prefix, recursive=True)
                if o.object_name is not None
            )

    def list_clips(self, prefix: str = "clips/") -> list[str]:
        """Clip (``.mp4``) keys under ``prefix``, sorted (sidecars left out)."""
        return [k for k in self.list_keys(prefix) if k.endswith(CLIP_SUFFIX)]

    def presigned_get(self, key: str, expiry_s: int) -> str:
        """A URL anyone can GET for ``expiry_s`` seconds (1 s to 7 days)."""
        if not 1 <= expiry_s <= 7 * 24 * 3600:
            raise ValueError(f"presign expiry_s={expiry_s} is outside 1..604800")
        with self.translate_errors("presign GET", key):
            return self._client.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expiry_s))

    def healthy(self) -> bool:
        """True when the bucket answers within ~3 s; never raises, never retries."""
        try:
            return self._probe.bucket_exists(self.bucket)
        except (S3Error, ServerError, InvalidResponseError, urllib3.exceptions.HTTPError) as exc:
            logger.debug("S3 health probe of %s at %s failed: %s", self.bucket, self.endpoint, exc)
            return False
