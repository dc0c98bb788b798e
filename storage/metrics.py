"""Prometheus metrics of the storage layer (module-level, default registry).

Defined once per process; every :class:`~storage.clip_store.ClipStore` and
:class:`~storage.spool.UploadSpool` of the process updates the same series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLIP_UPLOADS = Counter(
    "cctv_clip_uploads_total",
    "Clip upload attempts (MP4 plus JSON sidecar) by result.",
    ["result"],
)
CLIP_UPLOADS_OK = CLIP_UPLOADS.labels(result="ok")
CLIP_UPLOADS_ERROR = CLIP_UPLOADS.labels(result="error")

CLIP_UPLOAD_BYTES = Counter(
    "cctv_clip_upload_bytes_total",
    "Bytes of clips uploaded successfully (MP4 plus sidecar).",
)

CLIP_UPLOAD_SECONDS = Histogram(
    "cctv_clip_upload_seconds",
    "Wall time of a successful clip upload (MP4 plus sidecar).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

SPOOL_ITEMS = Gauge("cctv_spool_items", "Clips waiting in the local upload spool.")
SPOOL_BYTES = Gauge("cctv_spool_bytes", "Bytes on disk in the local upload spool.")
SPOOL_CAPACITY_BYTES = Gauge(
    "cctv_spool_capacity_bytes", "Byte budget of the local upload spool (beyond it the oldest clips are dropped)."
)
SPOOL_OLDEST_AGE_SECONDS = Gauge(
    "cctv_spool_oldest_age_seconds",
    "Age of the oldest clip waiting in the upload spool (0 when empty).",
)
SPOOL_DROPPED = Counter(
    "cctv_spool_dropped_total",
    "Ordinary clips dropped from the spool (oldest first) because it was over its byte budget (evidence never).",
)
SPOOL_EVIDENCE_ITEMS = Gauge(
    "cctv_spool_evidence_items",
    "Evidence clips waiting in the upload spool (never dropped, even over the byte budget).",
)

EVIDENCE_MARKED = Counter(
    "cctv_evidence_marked_total",
    "Clips marked as evidence (locked copy with retention and legal hold written).",
)
EVIDENCE_MANIFESTS_WRITTEN = Counter(
    "cctv_evidence_manifests_written_total",
    "Day manifest versions written to the evidence bucket.",
)
ACCESS_LOG_ENTRIES = Counter(
    "cctv_access_log_entries_total",
    "Entries appended to the access log (views, exports, evidence marks).",
)
