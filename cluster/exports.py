"""Emergency exports (112 police, 119 fire): the controller's desk that starts them and answers where they stand.

The camera's shard records the window (the past part from its pre-roll ring, the future part live, ended on a
keyframe), remuxes it and uploads it through its spool as evidence under ``exports/YYYY/MM/DD/<camera>/
<export_id>.mp4`` (``actors/recorder.py``). The desk keeps a ticket per export and asks the shard for
progress; a ticket it no longer holds (the controller restarted) is found again on a live shard or in the bucket.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import ray

from cluster.shard_ref import ShardRef
from contracts.errors import ExportWindowError, UnknownExportError
from contracts.exports import ExportOrder, ExportPhase, ExportProgress, ExportRequest, ExportState, ExportTicket
from serve_apps.remote_call import TARGET_GONE, CallPolicy, ControlPlaneUnavailableError, gather
from storage.clip_store import ClipStore, StorageError
from storage.records import CLIP_SUFFIX, EXPORT_PREFIX

log = logging.getLogger(__name__)

MEDIA_CALL_TIMEOUT_S = 10.0
MEDIA_POLICY = CallPolicy(deadline_s=MEDIA_CALL_TIMEOUT_S, retry_died=False)
EXPORTS_KEPT = 10_000  # tickets held in memory; older finished ones are found in the bucket
_EXPORT_ID_RE = re.compile(r"^exp-(\d{8})-[0-9a-f]{12}$")
_EXPORT_STATES: dict[ExportPhase, ExportState] = {
    ExportPhase.RECORDING: "recording",
    ExportPhase.WRITING: "uploading",
    ExportPhase.UPLOADING: "uploading",
    ExportPhase.DONE: "done",
    ExportPhase.FAILED: "failed",
}


@dataclass(slots=True)
class _ExportEntry:
    """One export as the controller tracks it; ``ticket`` is the latest answer (final once done/failed)."""

    shard_id: str
    ticket: ExportTicket


def new_export_id(start_ts: float, request_id: str | None = None) -> str:
    """``exp-YYYYMMDD-<12 hex>``: names the (UTC) day of the window start it is filed under.

    Random, or derived from ``request_id`` (the same request always gets the same export id).
    """
    day = f"{datetime.fromtimestamp(start_ts, tz=UTC):%Y%m%d}"
    if request_id is None:
        return f"exp-{day}-{uuid.uuid4().hex[:12]}"
    return f"exp-{day}-{hashlib.sha256(request_id.encode()).hexdigest()[:12]}"


def export_day(export_id: str) -> date | None:
    """The day an export id is filed under, None if it is not an export id."""
    m = _EXPORT_ID_RE.match(export_id)
    if m is None:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def _requested_by(requester: str, case_number: str) -> str:
    return f"{requester} case {case_number}"


class ExportDesk:
    """Starts exports on the camera's shard and answers their tickets.

    Args:
        store: the clip bucket (exports are stored there; URLs are presigned from it).
        namespace: the Ray namespace of the shards.
        max_export_s: the longest window, and how far ahead a window may end.
        url_expiry_s: lifetime of a presigned export URL.
        locate: camera id -> the live shard running it, None while it is being placed; raises
            ``UnknownCameraError`` for a camera the inventory does not hold.
        shard: shard id -> the shard the controller holds under that id, if any.
        live_shards: every shard the controller holds as live.
    """

    def __init__(
        self,
        store: ClipStore,
        *,
        namespace: str,
        max_export_s: float,
        url_expiry_s: int,
        locate: Callable[[str], ShardRef | None],
        shard: Callable[[str], ShardRef | None],
        live_shards: Callable[[], list[ShardRef]],
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._max_export_s = max_export_s
        self._url_expiry_s = url_expiry_s
        self._locate = locate
        self._shard = shard
        self._live_shards = live_shards
        self._exports: dict[str, _ExportEntry] = {}  # export id -> ticket
        self._export_lock = threading.Lock()

    def start(self, req: ExportRequest, *, request_id: str | None = None) -> ExportTicket:
        """Start an emergency export of ``req.camera_id`` over ``[req.start_ts, req.end_ts]``.

        ``request_id`` makes a retry safe: the export id is derived from it, the shard starts an
        export id once, so the same request twice (even across a controller restart) is one export.

        Raises:
            UnknownCameraError: no camera with that id.
            ExportWindowError: the window is too long, ends too far ahead, lies wholly before the
                buffered video, or the camera has no stream (a ``ValueError``: the request is at fault).
            TimeoutError: the camera's shard did not answer.
        """
        now = time.time()
        try:
            req.check_max(self._max_export_s)
        except ValueError as exc:
            raise ExportWindowError(str(exc)) from None
        if req.end_ts > now + self._max_export_s:
            raise ExportWindowError(
                f"end_ts is {req.end_ts - now:.0f}s ahead; an export may end at most {self._max_export_s:.0f}s ahead"
            )
        ref = self._locate(req.camera_id)
        if ref is None:
            raise ExportWindowError(f"camera {req.camera_id} runs on no shard right now (being placed); retry shortly")
        export_id = new_export_id(req.start_ts, request_id)
        with self._export_lock:
            known = self._exports.get(export_id)
        if known is not None:
            return known.ticket
        order = ExportOrder(
            export_id=export_id,
            camera_id=req.camera_id,
            start_ts=req.start_ts,
            end_ts=req.end_ts,
            requester=req.requester,
            case_number=req.case_number,
            reason=req.reason,
            requested_at=now,
        )
        try:
            progress: ExportProgress = ref.caller(self._namespace).call(
                "start_export", lambda a: a.start_export.remote(order), MEDIA_POLICY
            )
        except ExportWindowError as exc:
            raise ExportWindowError(str(getattr(exc, "cause", exc))) from None
        except KeyError:
            raise ExportWindowError(f"camera {req.camera_id} is moving between shards; retry shortly") from None
        except (*TARGET_GONE, ControlPlaneUnavailableError, ray.exceptions.GetTimeoutError) as exc:
            raise TimeoutError(f"shard {ref.shard_id} of camera {req.camera_id} did not answer: {exc}") from None
        by = _requested_by(req.requester, req.case_number)
        entry = _ExportEntry(ref.shard_id, self._ticket(by, progress))
        with self._export_lock:
            self._exports[order.export_id] = entry
            for old in [k for k, e in self._exports.items() if e.ticket.state in ("done", "failed")]:
                if len(self._exports) <= EXPORTS_KEPT:
                    break
                del self._exports[old]  # still answered from the bucket (done) afterwards
        log.info("export %s of camera %s for %s: %s", order.export_id, req.camera_id, by, entry.ticket.state)
        return entry.ticket

    def status(self, export_id: str) -> ExportTicket:
        """Where an export stands; once uploaded the ticket carries a presigned GET URL.

        Raises:
            UnknownExportError: no export with that id (neither held here nor stored).
        """
        with self._export_lock:
            entry = self._exports.get(export_id)
        if entry is None:
            if export_day(export_id) is None:
                raise UnknownExportError(export_id)
            entry = self._find_export(export_id)
            if entry is None:
                return self._stored_export_ticket(export_id)
        if entry.ticket.state == "failed":
            return entry.ticket
        if entry.ticket.state == "done" and entry.ticket.clip_key is not None:
            try:  # signed afresh on each ask: an old URL may have expired
                url = self._store.presigned_get(entry.ticket.clip_key, self._url_expiry_s)
            except StorageError as exc:
                return entry.ticket.model_copy(update={"url": None, "error": f"no URL could be signed: {exc}"})
            return entry.ticket.model_copy(update={"url": url})
        ref = self._shard(entry.shard_id)
        progress: ExportProgress | None = None
        if ref is not None and ref.live:
            try:
                progress = ref.caller(self._namespace).call(
                    "export_progress", lambda a: a.export_progress.remote(export_id), MEDIA_POLICY
                )
            except (ray.exceptions.GetTimeoutError, ControlPlaneUnavailableError):
                return entry.ticket  # the last known state; asked again on the next poll
            except TARGET_GONE:
                progress = None
        if progress is not None:
            ticket = self._ticket(entry.ticket.requested_by, progress)
        else:
            try:  # the shard was lost or restarted: only an upload that finished survived it
                ticket = self._stored_export_ticket(export_id)
            except UnknownExportError:
                ticket = entry.ticket.model_copy(
                    update={"state": "failed", "error": f"shard {entry.shard_id} was lost while recording"}
                )
        entry.ticket = ticket
        return ticket

    def _find_export(self, export_id: str) -> _ExportEntry | None:
        """An export this controller does not hold (it restarted) but a live shard still records or uploads."""
        refs = self._live_shards()
        answers = gather({r.shard_id: r.actor.export_progress.remote(export_id) for r in refs}, MEDIA_CALL_TIMEOUT_S)
        for shard_id, progress in answers.items():  # all shards at once
            if isinstance(progress, ExportProgress):
                by = _requested_by(progress.requester, progress.case_number)
                entry = _ExportEntry(shard_id, self._ticket(by, progress))
                with self._export_lock:
                    return self._exports.setdefault(export_id, entry)
        return None

    def _ticket(self, requested_by: str, p: ExportProgress) -> ExportTicket:
        state = _EXPORT_STATES[p.phase]
        url = None
        error = p.error
        if state == "done" and p.object_key is not None:
            try:
                url = self._store.presigned_get(p.object_key, self._url_expiry_s)
            except StorageError as exc:
                error = f"stored, but no URL could be signed: {exc}"
        return ExportTicket(
            export_id=p.export_id,
            state=state,
            clip_key=p.object_key,
            url=url,
            error=error,
            requested_by=requested_by,
        )

    def _stored_export_ticket(self, export_id: str) -> ExportTicket:
        """The ticket of an export found in the bucket (its id names the day it is filed under)."""
        day = export_day(export_id)
        if day is None:
            raise UnknownExportError(export_id)
        store = self._store
        suffix = f"/{export_id}{CLIP_SUFFIX}"
        keys = [k for k in store.list_keys(f"{EXPORT_PREFIX}{day:%Y/%m/%d}/") if k.endswith(suffix)]
        if not keys:
            raise UnknownExportError(export_id)
        sidecar = store.get_sidecar(keys[0])
        rec = sidecar.export
        return ExportTicket(
            export_id=export_id,
            state="done",
            clip_key=keys[0],
            url=store.presigned_get(keys[0], self._url_expiry_s),
            error=None,
            requested_by=_requested_by(rec.requester, rec.case_number) if rec is not None else "unknown",
        )
