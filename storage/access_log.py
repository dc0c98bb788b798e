"""Append-only access log in the object store: who viewed or exported which clip, when and why.

One object per entry, ``access-log/YYYY/MM/DD/<ts in ns, 19 digits>-<random hex>.json``, in the
evidence bucket (object lock enabled, see :mod:`storage.evidence`): every entry is written with
object-lock retention (``access_log_retention_days``, the evidence lock mode), so it can be
neither overwritten (a PUT adds a version) nor deleted (a DELETE adds a delete marker) while
locked. Keys sort by time, so :meth:`AccessLog.query` reads only the days asked for and stops at
``limit``.
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from minio.retention import Retention
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from configs.schema import StorageConfig, default_evidence_bucket
from storage import metrics
from storage.access import S3Access
from storage.clip_store import SHA256_META, ClipStore, StorageError
from storage.manifest import sha256_hex

logger = logging.getLogger(__name__)

ACCESS_LOG_PREFIX = "access-log/"
AccessAction = Literal["view", "export", "mark_evidence", "verify", "manifest", "query_access_log"]
_NS = 1_000_000_000
_MAX_QUERY_DAYS = 366


class AccessEntry(BaseModel):
    """One access: ``actor`` (token name/user) with ``role`` did ``action`` on ``clip_key`` because ``reason``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: str = Field(min_length=1, max_length=128)
    role: str = Field(min_length=1, max_length=32)
    action: AccessAction
    clip_key: str | None = Field(default=None, max_length=1024, description="None for an export of a time window.")
    reason: str = Field(min_length=1, max_length=2000)
    case_number: str | None = Field(default=None, max_length=128)
    requester: str | None = Field(default=None, max_length=128, description="Who asked (e.g. 112, 119, a court).")
    detail: dict[str, str] = Field(default_factory=dict, description="Free context: export id, camera, window.")
    ts: float = Field(default_factory=time.time, gt=0, description="Epoch seconds (UTC).")

    @field_validator("actor", "role", "reason")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


def _day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def entry_key(entry: AccessEntry, nonce: str) -> str:
    """``access-log/YYYY/MM/DD/<ns>-<nonce>.json`` (time-sortable)."""
    ns = round(entry.ts * _NS)
    return f"{ACCESS_LOG_PREFIX}{_day(entry.ts):%Y/%m/%d}/{ns:019d}-{nonce}.json"


def _key_ts(key: str) -> float | None:
    name = key.rsplit("/", 1)[-1]
    head = name.split("-", 1)[0]
    return int(head) / _NS if head.isdigit() else None


class AccessLog:
    """The access log (append and query).

    Args:
        s3: endpoint and keys; ``s3.bucket`` is the clip bucket.
        bucket: where entries go; default the evidence bucket ``<s3.bucket>-evidence`` (pass
            ``cfg.storage.evidence_bucket_name`` when ``storage.evidence_bucket`` is set).
        retention_days: object-lock retention of each entry.
        lock_mode: ``GOVERNANCE`` or ``COMPLIANCE``.
    """

    def __init__(
        self,
        s3: S3Access,
        *,
        bucket: str | None = None,
        retention_days: int = StorageConfig.model_fields["access_log_retention_days"].default,
        lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE",
    ) -> None:
        if retention_days < 1:
            raise ValueError(f"access log retention_days={retention_days} must be >= 1")
        self.store = ClipStore.for_access(s3, bucket=bucket or default_evidence_bucket(s3.bucket))
        self.retention_days = retention_days
        self.lock_mode = lock_mode
        self._ready = False
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, s3: S3Access, cfg: StorageConfig) -> AccessLog:
        """The access log in ``cfg``'s evidence bucket, with its retention and lock mode."""
        return cls(
            s3,
            bucket=cfg.evidence_bucket_name,
            retention_days=cfg.access_log_retention_days,
            lock_mode=cfg.evidence_lock_mode,
        )

    @property
    def bucket(self) -> str:
        return self.store.bucket

    def __repr__(self) -> str:
        return f"AccessLog(bucket={self.bucket!r}, endpoint={self.store.endpoint!r})"

    def _ensure(self) -> None:
        with self._lock:
            if not self._ready:
                self.store.ensure_bucket(object_lock=True)
                self._ready = True

    def append(self, entry: AccessEntry) -> str:
        """Store one entry as its own locked object; returns its key.

        Raises:
            StorageError: the store refused or is unreachable (the caller should refuse the access
                it was about to grant: an unlogged view is not allowed).
        """
        self._ensure()
        key = entry_key(entry, secrets.token_hex(8))
        body = entry.model_dump_json().encode("utf-8")
        until = (datetime.now(UTC) + timedelta(days=self.retention_days)).replace(microsecond=0)
        with self.store.translate_errors("PUT", key):
            self.store.client.put_object(
                self.bucket,
                key,
                io.BytesIO(body),
                len(body),
                content_type="application/json",
                metadata={SHA256_META: sha256_hex(body)},
                retention=Retention(self.lock_mode, until),
            )
        metrics.ACCESS_LOG_ENTRIES.inc()
        return key

    def query(
        self,
        since_ts: float,
        until_ts: float,
        *,
        actor: str | None = None,
        clip_key: str | None = None,
        limit: int = 100,
    ) -> list[AccessEntry]:
        """Entries with ``since_ts <= ts < until_ts``, oldest first, filtered, at most ``limit``.

        Raises:
            ValueError: an empty or reversed window, one longer than 366 days, or a limit outside 1..10000.
            StorageError: the store refused or is unreachable.
        """
        if not until_ts > since_ts:
            raise ValueError(f"access log query window {since_ts}..{until_ts} is empty or reversed")
        if not 1 <= limit <= 10_000:
            raise ValueError(f"access log query limit={limit} is outside 1..10000")
        first, last = _day(since_ts), _day(until_ts)
        if (last - first).days > _MAX_QUERY_DAYS:
            raise ValueError(f"access log query spans {(last - first).days} days (at most {_MAX_QUERY_DAYS})")
        with self.store.translate_errors("HEAD bucket"):
            if not self.store.client.bucket_exists(self.bucket):
                return []
        out: list[AccessEntry] = []
        day = first
        while day <= last and len(out) < limit:
            for key in self.store.list_keys(f"{ACCESS_LOG_PREFIX}{day:%Y/%m/%d}/"):
                ts = _key_ts(key)
                if ts is None or ts < since_ts - 1e-6 or ts >= until_ts:
                    continue
                try:
                    entry = AccessEntry.model_validate_json(self.store.get_bytes(key))
                except ValidationError as exc:
                    logger.error("access log entry %s/%s is unreadable: %s", self.bucket, key, exc)
                    continue
                except StorageError as exc:
                    if exc.code == "NoSuchKey":
                        continue
                    raise
                if not since_ts <= entry.ts < until_ts:
                    continue
                if (actor is None or entry.actor == actor) and (clip_key is None or entry.clip_key == clip_key):
                    out.append(entry)
                    if len(out) >= limit:
                        break
            day += timedelta(days=1)
        return out
