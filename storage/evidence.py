"""Evidence: locked copies of marked clips, per-day hash-chained manifests, lifecycle expiry.

Two buckets (see docs/STORAGE.md for why):

* the **clip bucket** (``storage.bucket``, unversioned): ``clips/`` and ``exports/``, ordinary
  clips expire there by a lifecycle rule after ``clip_retention_days``;
* the **evidence bucket** (``storage.evidence_bucket``, default ``<bucket>-evidence``), created
  with S3 object lock (so versioned): evidence copies of marked clips and their sidecars under the
  same keys, with retention (GOVERNANCE or COMPLIANCE) and a legal hold; one mark record per
  (clip, case) under ``evidence-marks/``; the day manifests under ``manifests/``; the access log
  under ``access-log/`` (:mod:`storage.access_log`). Nothing in it can be overwritten or deleted
  while locked: a PUT adds a version, a DELETE adds a delete marker, the locked version stays.

Object lock can only be chosen when a bucket is created, and the clip bucket exists in every
deployment already (and must let ordinary clips expire): hence a separate bucket.
"""

from __future__ import annotations

import io
import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

from minio.commonconfig import ENABLED, CopySource, Filter
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from minio.retention import Retention
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from configs.schema import StorageConfig
from storage import metrics
from storage.access import S3Access
from storage.clip_store import SHA256_META, ClipIntegrityError, ClipStore, StorageError
from storage.manifest import (
    DayManifest,
    ObservedClip,
    VerifyReport,
    build_manifest,
    compare,
    history_problems,
    manifest_key,
    sha256_hex,
)
from storage.manifest import ModifiedClip as ModifiedClip
from storage.records import CLIP_PREFIX, CLIP_SUFFIX, SIDECAR_SUFFIX, ClipSidecar, sidecar_key_for

logger = logging.getLogger(__name__)

DAY_PREFIXES = (CLIP_PREFIX, "exports/")
"""Prefixes whose keys continue with ``YYYY/MM/DD/``: event clips and emergency exports."""
EVIDENCE_MARKS_PREFIX = "evidence-marks/"
LIFECYCLE_RULE_ID = "cctv-ordinary-clip-expiry"
_NOT_FOUND = {"NoSuchKey", "NoSuchVersion", "NoSuchObject", "NotFound", "ResourceNotFound"}


class EvidenceError(RuntimeError):
    """An evidence operation cannot be done as asked (the message names the clip or bucket)."""


class EvidenceMark(BaseModel):
    """Record of one clip marked as evidence for one case (stored locked in the evidence bucket)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_key: str
    case_number: str = Field(min_length=1, max_length=128)
    mode: str
    retain_until: AwareDatetime
    legal_hold: bool = True
    marked_at: AwareDatetime
    sha256: str
    sidecar_sha256: str
    evidence_bucket: str
    clip_version_id: str | None
    sidecar_version_id: str | None
    frame_version_id: str | None = None  # the alarm frame's locked copy, when the sidecar records one


def _is_latest(flag: object) -> bool:
    """The SDK gives ``IsLatest`` as the XML text (``"true"``/``"false"``), not a bool."""
    return flag is True or str(flag).lower() == "true"


def _day_path(day: date) -> str:
    return f"{day:%Y/%m/%d}/"


def mark_key(clip_key: str, case_number: str) -> str:
    """``evidence-marks/<clip key without its top prefix and .mp4>/<case number, URL-quoted>.json``."""
    for prefix in DAY_PREFIXES:
        if clip_key.startswith(prefix):
            stem = clip_key[len(prefix) : -len(CLIP_SUFFIX)]
            return f"{EVIDENCE_MARKS_PREFIX}{prefix}{stem}/{quote(case_number, safe='')}{SIDECAR_SUFFIX}"
    raise ValueError(f"clip key {clip_key!r} is not under {' or '.join(DAY_PREFIXES)}")


def _check_clip_key(clip_key: str) -> None:
    if not clip_key.endswith(CLIP_SUFFIX) or not clip_key.startswith(DAY_PREFIXES) or ".." in clip_key:
        raise ValueError(
            f"clip key {clip_key!r} must be clips/YYYY/MM/DD/<camera>/<event>.mp4 or exports/YYYY/MM/DD/.../<id>.mp4"
        )


class EvidenceStore:
    """Evidence marking, day manifests and lifecycle over the clip bucket and the evidence bucket.

    Args:
        s3: endpoint and keys; ``s3.bucket`` is the clip bucket.
        cfg: the storage section (evidence bucket, lock mode, retention days).
        now: clock (epoch seconds), replaceable in tests.
    """

    def __init__(self, s3: S3Access, cfg: StorageConfig, *, now: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.access = s3
        self.clips = ClipStore.for_access(s3)
        self.locked = ClipStore.for_access(s3, bucket=cfg.evidence_bucket_name)
        self._now = now
        self._ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"EvidenceStore(clips={self.clips.bucket!r}, evidence={self.locked.bucket!r}, at {self.clips.endpoint!r})"
        )

    # ------------------------------------------------------------------ buckets

    def ensure_buckets(self) -> None:
        """Create the clip bucket and the object-locked evidence bucket if missing (idempotent).

        Raises:
            StorageError: the store refused, or the evidence bucket exists without object lock.
        """
        with self._lock:
            if self._ready:
                return
            self.clips.ensure_bucket()
            self.locked.ensure_bucket(object_lock=True)
            self._ready = True

    def apply_lifecycle(self) -> None:
        """Install (or remove, when ``clip_retention_days`` is None) the expiry rule of ordinary clips.

        The rule expires objects under ``clips/`` of the clip bucket; evidence is safe because its
        locked copies live in the evidence bucket, which has no expiry rule.
        """
        self.ensure_buckets()
        client = self.clips.client
        days = self.cfg.clip_retention_days
        with self.clips.translate_errors("PUT lifecycle"):
            if days is None:
                client.delete_bucket_lifecycle(self.clips.bucket)
                logger.info("clip bucket %s: lifecycle expiry removed (clips kept forever)", self.clips.bucket)
                return
            rule = Rule(
                ENABLED,
                rule_filter=Filter(prefix=CLIP_PREFIX),
                rule_id=LIFECYCLE_RULE_ID,
                expiration=Expiration(days=days),
            )
            client.set_bucket_lifecycle(self.clips.bucket, LifecycleConfig([rule]))
        logger.info(
            "clip bucket %s: ordinary clips under %s expire after %d days", self.clips.bucket, CLIP_PREFIX, days
        )

    def lifecycle_days(self) -> int | None:
        """Expiry days of our rule as the store reports it (None: no such rule)."""
        with self.clips.translate_errors("GET lifecycle"):
            cfg = self.clips.client.get_bucket_lifecycle(self.clips.bucket)
        for rule in cfg.rules if cfg is not None else []:
            if rule.rule_id == LIFECYCLE_RULE_ID and rule.expiration is not None:
                return rule.expiration.days
        return None

    # ------------------------------------------------------------------ marking

    def _retention(self, days: int) -> Retention:
        until = datetime.fromtimestamp(self._now(), UTC) + timedelta(days=days)
        return Retention(self.cfg.evidence_lock_mode, until.replace(microsecond=0))

    def _lock_copy(self, key: str, expected_sha256: str, retention: Retention) -> str | None:
        """A locked, held copy of ``key`` in the evidence bucket whose bytes hash to ``expected_sha256``.

        Reuses a current copy with the right hash (extending its retention if the new date is
        later); otherwise copies server-side, checks the copy's hash, then sets the legal hold.
        Returns the copy's version id.
        """
        client = self.locked.client
        bucket = self.locked.bucket
        version: str | None = None
        try:
            with self.locked.translate_errors("HEAD", key):
                stat = client.stat_object(bucket, key)
            sha, _ = self.locked.hash_object(key, stat.version_id)
            if sha == expected_sha256:
                version = stat.version_id
        except StorageError as exc:
            if exc.code not in _NOT_FOUND:
                raise
        if version is None:
            with self.locked.translate_errors("COPY", key):
                result = client.copy_object(bucket, key, CopySource(self.clips.bucket, key), retention=retention)
            version = result.version_id
            sha, _ = self.locked.hash_object(key, version)
            if sha != expected_sha256:
                raise ClipIntegrityError(
                    f"{self.clips.bucket}/{key} has sha256 {sha}, its sidecar records {expected_sha256}: "
                    f"not marked as evidence (the mismatching copy stays in {bucket} as version {version})"
                )
        # Set retention explicitly even after a copy that asked for it: SeaweedFS 4.48 ignores the
        # object-lock headers of CopyObject (it keeps the source's lock metadata instead).
        current = self._retention_of(key, version)
        if (
            current is None
            or current.retain_until_date is None
            or current.retain_until_date < retention.retain_until_date
        ):
            with self.locked.translate_errors("PUT retention", key):
                client.set_object_retention(bucket, key, retention, version_id=version)
        with self.locked.translate_errors("PUT legal hold", key):
            client.enable_object_legal_hold(bucket, key, version_id=version)
            held = client.is_object_legal_hold_enabled(bucket, key, version_id=version)
        kept = self._retention_of(key, version)
        if kept is None or kept.retain_until_date is None or not held:
            raise StorageError(
                f"{bucket}/{key} version {version} at {self.locked.endpoint}: the store did not keep the "
                f"retention ({kept}) or legal hold ({held}) it accepted"
            )
        return version

    def _retention_of(self, key: str, version: str | None) -> Retention | None:
        """The version's retention; None when it has none (SeaweedFS answers that with
        ``ObjectLockConfigurationNotFoundError``, S3 with ``NoSuchObjectLockConfiguration``)."""
        try:
            with self.locked.translate_errors("GET retention", key):
                return self.locked.client.get_object_retention(self.locked.bucket, key, version_id=version)
        except StorageError as exc:
            if exc.code in {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"}:
                return None
            raise

    def mark_evidence(self, clip_key: str, *, case_number: str, retain_days: int | None = None) -> None:
        """Keep a clip, its sidecar and its alarm frame as evidence: locked copies with retention and a legal hold.

        The copies go to the evidence bucket under the same keys, in ``evidence_lock_mode`` until
        now + ``retain_days`` (default ``evidence_retention_days``); marking again (another case,
        or longer retention) only extends. A mark record names the case.

        Raises:
            ValueError: bad clip key, case number or retention.
            EvidenceError: the clip or its sidecar is not in the clip bucket.
            ClipIntegrityError: the clip's bytes do not match the sha256 its sidecar records.
            StorageError: the store refused or is unreachable.
        """
        _check_clip_key(clip_key)
        if not case_number or len(case_number) > 128 or not case_number.isprintable():
            raise ValueError(f"case number {case_number!r} must be 1-128 printable characters")
        days = self.cfg.evidence_retention_days if retain_days is None else retain_days
        if not 1 <= days <= 36500:
            raise ValueError(f"retain_days={days} is outside 1..36500")
        self.ensure_buckets()
        sidecar_key = sidecar_key_for(clip_key)
        try:
            sidecar_bytes = self.clips.get_bytes(sidecar_key)
        except StorageError as exc:
            if exc.code in _NOT_FOUND:
                raise EvidenceError(f"clip {clip_key} has no sidecar in bucket {self.clips.bucket!r}") from exc
            raise
        try:
            sidecar = ClipSidecar.from_json_bytes(sidecar_bytes)
        except ValidationError as exc:
            raise EvidenceError(f"sidecar {self.clips.bucket}/{sidecar_key} is not a valid clip record: {exc}") from exc
        retention = self._retention(days)
        try:
            clip_version = self._lock_copy(clip_key, sidecar.sha256, retention)
        except StorageError as exc:
            if exc.code in _NOT_FOUND:
                raise EvidenceError(f"clip {clip_key} is not in bucket {self.clips.bucket!r}") from exc
            raise
        frame_version = None
        if sidecar.alarm_frame is not None:
            frame_version = self._lock_copy(sidecar.alarm_frame.object_key, sidecar.alarm_frame.sha256, retention)
        sidecar_sha = sha256_hex(sidecar_bytes)
        sidecar_version = self._lock_copy(sidecar_key, sidecar_sha, retention)
        mark = EvidenceMark(
            clip_key=clip_key,
            case_number=case_number,
            mode=retention.mode,
            retain_until=retention.retain_until_date,
            marked_at=datetime.fromtimestamp(self._now(), UTC),
            sha256=sidecar.sha256,
            sidecar_sha256=sidecar_sha,
            evidence_bucket=self.locked.bucket,
            clip_version_id=clip_version,
            sidecar_version_id=sidecar_version,
            frame_version_id=frame_version,
        )
        self._put_locked(mark_key(clip_key, case_number), mark.model_dump_json(indent=1).encode(), retention)
        metrics.EVIDENCE_MARKED.inc()
        logger.info(
            "clip %s marked as evidence for case %s: %s copy in %s until %s, legal hold on",
            clip_key,
            case_number,
            retention.mode,
            self.locked.bucket,
            retention.retain_until_date.isoformat(),
        )

    def evidence_marks(self, day: date) -> list[EvidenceMark]:
        """Every mark record of clips of ``day`` (current versions)."""
        marks: list[EvidenceMark] = []
        for prefix in DAY_PREFIXES:
            for key in self._list_locked(f"{EVIDENCE_MARKS_PREFIX}{prefix}{_day_path(day)}"):
                try:
                    marks.append(EvidenceMark.model_validate_json(self.locked.get_bytes(key)))
                except ValidationError as exc:
                    logger.error("evidence mark %s/%s is unreadable: %s", self.locked.bucket, key, exc)
        return marks

    def _list_locked(self, prefix: str) -> list[str]:
        if not self._evidence_bucket_exists():
            return []
        return self.locked.list_keys(prefix)

    def _evidence_bucket_exists(self) -> bool:
        with self.locked.translate_errors("HEAD bucket"):
            return self.locked.client.bucket_exists(self.locked.bucket)

    def _put_locked(self, key: str, body: bytes, retention: Retention) -> str | None:
        with self.locked.translate_errors("PUT", key):
            result = self.locked.client.put_object(
                self.locked.bucket,
                key,
                io.BytesIO(body),
                len(body),
                content_type="application/json",
                metadata={SHA256_META: sha256_hex(body)},
                retention=retention,
            )
        return result.version_id

    # ------------------------------------------------------------------ manifests

    def observe_day(self, day: date, *, skip: frozenset[str] = frozenset()) -> dict[str, ObservedClip]:
        """Every MP4 of ``day`` in the clip bucket, with hashes of its bytes and of its sidecar's.

        Args:
            day: the UTC day.
            skip: clip keys not to read (already listed in the manifest being extended).
        """
        observed: dict[str, ObservedClip] = {}
        for prefix in DAY_PREFIXES:
            keys = set(self.clips.list_keys(prefix + _day_path(day)))
            for key in sorted(k for k in keys if k.endswith(CLIP_SUFFIX) and k not in skip):
                try:
                    sha, size = self.clips.hash_object(key)
                except StorageError as exc:
                    if exc.code in _NOT_FOUND:  # removed between the listing and the read
                        continue
                    raise
                side_sha = claims = None
                side_key = sidecar_key_for(key)
                if side_key in keys:
                    try:
                        body = self.clips.get_bytes(side_key)
                    except StorageError as exc:
                        if exc.code not in _NOT_FOUND:
                            raise
                    else:
                        side_sha = sha256_hex(body)
                        try:
                            claims = ClipSidecar.from_json_bytes(body).sha256
                        except ValidationError:
                            claims = None
                observed[key] = ObservedClip(
                    key=key, size_bytes=size, sha256=sha, sidecar_sha256=side_sha, sidecar_claims_sha256=claims
                )
        return observed

    def _manifest_versions(self, day: date) -> tuple[list[tuple[str | None, bytes]], bool]:
        """Stored versions of a day's manifest, oldest first, as (version id, body); and whether the
        newest entry is a delete marker."""
        key = manifest_key(day)
        if not self._evidence_bucket_exists():
            return [], False
        with self.locked.translate_errors("LIST versions", key):
            listed = [
                o
                for o in self.locked.client.list_objects(self.locked.bucket, key, include_version=True)
                if o.object_name == key
            ]
        # S3 lists a key's versions newest first. SeaweedFS 4.48 lists the versions newest first but
        # its delete markers after them, so "deleted" is read from IsLatest, not from the order.
        deleted = any(o.is_delete_marker and _is_latest(o.is_latest) for o in listed)
        listed = [o for o in listed if not o.is_delete_marker]
        listed.reverse()
        versions: list[tuple[str | None, bytes]] = []
        for o in listed:
            with self.locked.translate_errors("GET", key):
                response = self.locked.client.get_object(self.locked.bucket, key, version_id=o.version_id)
                try:
                    versions.append((o.version_id, response.read()))
                finally:
                    response.close()
                    response.release_conn()
        return versions, deleted

    def read_manifest(self, day: date) -> DayManifest | None:
        """The latest manifest of ``day`` (None when there is none)."""
        versions, _ = self._manifest_versions(day)
        return DayManifest.from_json_bytes(versions[-1][1]) if versions else None

    def write_day_manifest(self, day: date) -> str:
        """Write (or extend) the manifest of ``day``; returns its object key.

        Entries of an earlier manifest of the same day are carried over unchanged, so writing
        again only adds clips that arrived late (a spool drained after an outage). When nothing
        new arrived, no new version is written.
        """
        self.ensure_buckets()
        key = manifest_key(day)
        versions, _ = self._manifest_versions(day)
        keep = DayManifest.from_json_bytes(versions[-1][1]) if versions else None
        prev_versions, _ = self._manifest_versions(day - timedelta(days=1))
        prev_sha = sha256_hex(prev_versions[-1][1]) if prev_versions else None
        observed = self.observe_day(day, skip=frozenset(keep.by_key()) if keep is not None else frozenset())
        complete = [o for o in observed.values() if o.sidecar_sha256 is not None]
        incomplete = sorted(o.key for o in observed.values() if o.sidecar_sha256 is None)
        if incomplete:
            logger.warning("manifest %s: %d clip(s) without sidecar left out: %s", day, len(incomplete), incomplete[:5])
        if keep is not None and not complete:
            logger.info("manifest %s: no new clip since %s; not rewritten", day, keep.created_at.isoformat())
            return key
        manifest = build_manifest(
            day,
            complete,
            prev_manifest_sha256=prev_sha,
            created_at=datetime.fromtimestamp(self._now(), UTC),
            keep=keep,
        )
        self._put_locked(key, manifest.to_json_bytes(), self._retention(self.cfg.evidence_retention_days))
        metrics.EVIDENCE_MANIFESTS_WRITTEN.inc()
        logger.info(
            "manifest %s/%s: %d clips, root %s", self.locked.bucket, key, len(manifest.entries), manifest.root[:16]
        )
        return key

    def verify_day(self, day: date) -> VerifyReport:
        """Check the clips of ``day`` against its manifest, the manifest's history and evidence copies.

        Reads every clip of the day (hashing the bytes, never trusting metadata).
        """
        key = manifest_key(day)
        versions, deleted = self._manifest_versions(day)
        if not versions:
            return VerifyReport(day=day, manifest_key=key, manifest_found=False)
        extra: list[str] = []
        if deleted:
            extra.append(f"manifest {self.locked.bucket}/{key} was deleted (delete marker over its locked versions)")
        manifests = [DayManifest.from_json_bytes(body) for _, body in versions]
        for older, newer in itertools.pairwise(manifests):
            extra += history_problems(older, newer)
        manifest = manifests[-1]
        if manifest.day != day:
            extra.append(f"manifest at {key} is for {manifest.day}, not {day}")
        if manifest.prev_manifest_sha256 is not None:
            prev_versions, _ = self._manifest_versions(day - timedelta(days=1))
            if manifest.prev_manifest_sha256 not in {sha256_hex(body) for _, body in prev_versions}:
                extra.append(
                    f"link to {manifest_key(day - timedelta(days=1))} broken: no stored version hashes to "
                    f"{manifest.prev_manifest_sha256}"
                )
        cutoff = self.cfg.clip_retention_days
        today = datetime.fromtimestamp(self._now(), UTC).date()
        expired_ok = cutoff is not None and day < today - timedelta(days=cutoff)
        report = compare(manifest, self.observe_day(day), expired_ok=expired_ok, extra_chain_problems=extra)
        return self._check_evidence(day, manifest, report)

    def _check_evidence(self, day: date, manifest: DayManifest, report: VerifyReport) -> VerifyReport:
        listed = manifest.by_key()
        missing = list(report.missing)
        modified = list(report.modified)
        checked = 0
        for mark in self.evidence_marks(day):
            entry = listed.get(mark.clip_key)
            expect = (entry.sha256, entry.sidecar_sha256) if entry is not None else (mark.sha256, mark.sidecar_sha256)
            parts = (
                ("evidence copy", mark.clip_key, mark.clip_version_id, expect[0]),
                ("evidence sidecar", sidecar_key_for(mark.clip_key), mark.sidecar_version_id, expect[1]),
            )
            for part, key, version, sha in parts:
                where = f"{self.locked.bucket}/{key}" + (f"?versionId={version}" if version else "")
                if version is not None:
                    # A PUT over a locked copy cannot change it, but it does change what a plain GET
                    # returns: report a current version that differs too.
                    try:
                        current, _ = self.locked.hash_object(key)
                    except StorageError as exc:
                        if exc.code not in _NOT_FOUND:
                            raise
                        current = None
                    if current != sha:
                        modified.append(
                            ModifiedClip(
                                key=mark.clip_key,
                                part=part,  # type: ignore[arg-type]
                                expected_sha256=sha,
                                actual_sha256=current,
                                where=f"{self.locked.bucket}/{key} (current version, over the locked one)",
                            )
                        )
                try:
                    actual, _ = self.locked.hash_object(key, version)
                except StorageError as exc:
                    if exc.code not in _NOT_FOUND:
                        raise
                    missing.append(where)
                    continue
                if actual != sha:
                    modified.append(
                        ModifiedClip(
                            key=mark.clip_key, part=part, expected_sha256=sha, actual_sha256=actual, where=where
                        )  # type: ignore[arg-type]
                    )
            checked += 1
            if entry is not None and entry.sha256 != mark.sha256:
                modified.append(
                    ModifiedClip(
                        key=mark.clip_key,
                        part="evidence copy",
                        expected_sha256=entry.sha256,
                        actual_sha256=mark.sha256,
                        where=f"{self.locked.bucket}/{mark_key(mark.clip_key, mark.case_number)}",
                    )
                )
        return report.model_copy(
            update={"missing": tuple(missing), "modified": tuple(modified), "evidence_checked": checked}
        )


class DailyManifestWriter:
    """Background thread writing yesterday's (UTC) manifest, and extending it when clips arrive late.

    Checks every ``interval_s``; once ``settle_s`` past midnight UTC it writes the manifest of the
    day before if it is missing, then keeps re-checking that day (cheap listing) until the next
    midnight, adding clips a drained spool delivered late. Errors are logged and retried next tick.

    Args:
        store: the evidence store.
        interval_s: seconds between checks.
        settle_s: seconds after midnight before the first write (lets spools drain).
    """

    def __init__(self, store: EvidenceStore, *, interval_s: float = 600.0, settle_s: float = 900.0) -> None:
        if interval_s <= 0 or settle_s < 0:
            raise ValueError(f"interval_s={interval_s} must be > 0 and settle_s={settle_s} >= 0")
        self.store = store
        self.interval_s = interval_s
        self.settle_s = settle_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: float | None = None) -> str | None:
        """One check; returns the manifest key written or confirmed, None when it is too early."""
        t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
        if (t - midnight).total_seconds() < self.settle_s:
            return None
        return self.store.write_day_manifest(midnight.date() - timedelta(days=1))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except (StorageError, S3Error, ValidationError, ValueError) as exc:
                logger.error("daily manifest: %s (retrying in %.0f s)", exc, self.interval_s)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="daily-manifest", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
