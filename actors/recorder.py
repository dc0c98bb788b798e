"""Event clips and emergency exports: ring pre-roll + live packets, remuxed (never re-encoded).

One :class:`ClipRecorder` serves all cameras of a shard. Packets are appended on the
camera threads (cheap list appends); MP4 writing, hashing and handing the clip to the
upload spool happen on one writer thread so a slow disk never stalls a camera.

Two kinds of recording:

* **event clips** (:meth:`ClipRecorder.on_event`): from the keyframe at or before
  ``event start - pre_roll_s`` until the first keyframe after ``event end + post_roll_s``.
* **manual exports** (:meth:`ClipRecorder.start_export`, 112/119 requests): a fixed window
  ``[start_ts, end_ts]`` in receive time. The past part comes from the ring (the keyframe at
  or before ``start_ts``; if the ring does not reach back that far, its oldest keyframe, and
  the clip says it was clipped), the future part is recorded live until the first keyframe at
  or after ``end_ts`` (not included). So the clip covers the window within one GOP at each
  end. It is uploaded under ``exports/...`` as evidence; its progress is queryable meanwhile
  (:meth:`ClipRecorder.export_progress`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import av

from actors.alarm_frame import AlarmFrame
from actors.analytics.events import EventPhase, EventTransition
from actors.clip_writer import write_mp4
from actors.packets import EncodedPacket, PacketRing, StreamInfo
from configs.schema import RecorderConfig
from serve_apps.api.errors import ExportWindowError
from storage.clip_store import ClipIntegrityError, StorageError, StorageUnavailableError, sha256_file
from storage.records import (
    AlarmFrameRecord,
    ClipSidecar,
    ExportRecord,
    Requester,
    clip_object_key,
    export_object_key,
    frame_key_for,
)
from storage.spool import UploadSpool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Recording:
    """A clip being collected for one event (mutable, owned by the recorder)."""

    event: EventTransition
    info: StreamInfo
    packets: list[EncodedPacket]
    last_dts: int | None
    end_after_ts: float | None = None
    peak_value: float = 0.0
    severity: str = "warning"
    ended_at: float | None = None
    cut: bool = False
    alarm_frame: AlarmFrame | None = None


@dataclass(frozen=True, slots=True)
class ExportOrder:
    """A manual recording of one camera over a fixed window (an emergency export), as the shard gets it.

    Attributes:
        export_id: Unique id; the object key's last segment.
        camera_id: The camera.
        start_ts: Window start, epoch seconds (receive time); may be in the past (ring) or future.
        end_ts: Window end, epoch seconds; after ``start_ts``.
        requester: ``112`` (police), ``119`` (fire) or ``internal``.
        case_number: The requester's case reference (kept in the sidecar, used for the evidence hold).
        reason: Free text, kept in the sidecar.
        requested_at: When the request was accepted, epoch seconds.
    """

    export_id: str
    camera_id: str
    start_ts: float
    end_ts: float
    requester: Requester
    case_number: str
    reason: str
    requested_at: float


class ExportPhase(StrEnum):
    RECORDING = "recording"  # future part still arriving
    WRITING = "writing"  # window complete, MP4 being remuxed
    UPLOADING = "uploading"  # in the upload spool
    DONE = "done"  # clip and sidecar stored
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ExportProgress:
    """Where one export stands (answered while it records, and after).

    ``covered_start``/``covered_end`` are known once the first/last packet is in; ``start_clipped``
    says the ring no longer held ``start_ts``, ``end_clipped`` that the camera stopped before ``end_ts``.
    """

    export_id: str
    camera_id: str
    phase: ExportPhase
    start_ts: float
    end_ts: float
    requester: str
    case_number: str
    object_key: str | None = None
    covered_start: float | None = None
    covered_end: float | None = None
    start_clipped: bool = False
    end_clipped: bool = False
    duration_s: float | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WindowCut:
    """What a ring snapshot contributes to an export window (see :func:`cut_window`).

    Attributes:
        packets: From the chosen start keyframe up to (not including) the first keyframe at or
            after ``end_ts``.
        start_clipped: The snapshot starts after ``start_ts`` (the ring does not reach back).
        complete: A keyframe at or after ``end_ts`` was seen: nothing more to record.
    """

    packets: tuple[EncodedPacket, ...]
    start_clipped: bool
    complete: bool


def cut_window(buffered: Sequence[EncodedPacket], start_ts: float, end_ts: float) -> WindowCut:
    """Cut an export window out of buffered packets (oldest first, as :meth:`PacketRing.snapshot` gives).

    The cut starts at the last keyframe at or before ``start_ts`` (the first keyframe when none
    is that old: ``start_clipped``) and stops before the first later keyframe at or after
    ``end_ts`` (``complete``). A first keyframe at or after ``end_ts`` means the buffer holds
    nothing of the window: the cut is empty and ``complete``.
    """
    first = next((i for i, p in enumerate(buffered) if p.is_keyframe), None)
    if first is None:
        return WindowCut((), start_clipped=True, complete=False)
    start = first
    for i in range(first + 1, len(buffered)):
        p = buffered[i]
        if p.wall_ts > start_ts:
            break
        if p.is_keyframe:
            start = i
    start_clipped = buffered[start].wall_ts > start_ts
    if buffered[start].wall_ts >= end_ts:
        return WindowCut((), start_clipped=True, complete=True)
    out: list[EncodedPacket] = [buffered[start]]
    for p in buffered[start + 1 :]:
        if ends_window(p, end_ts):
            return WindowCut(tuple(out), start_clipped, complete=True)
        out.append(p)
    return WindowCut(tuple(out), start_clipped, complete=False)


def ends_window(pkt: EncodedPacket, end_ts: float) -> bool:
    """A live packet that closes a window ending at ``end_ts``: the first keyframe at or after it."""
    return pkt.is_keyframe and pkt.wall_ts >= end_ts


def _in_snapshot(pkt: EncodedPacket, last: EncodedPacket | None) -> bool:
    """A live packet the ring had already given (the camera thread appends to the ring first)."""
    if last is None or pkt.wall_ts > last.wall_ts:
        return False
    return pkt.dts is None or last.dts is None or pkt.dts <= last.dts


def packet_seconds(pkt: EncodedPacket, avg_fps: float | None) -> float:
    """How long a packet's frame lasts (its duration, else one frame at the stream's rate)."""
    if pkt.duration:
        return float(pkt.duration * pkt.time_base)
    return 1.0 / avg_fps if avg_fps else 0.0


@dataclass(slots=True)
class _ExportRecording:
    """A manual recording being collected (mutable, owned by the recorder)."""

    order: ExportOrder
    info: StreamInfo
    packets: list[EncodedPacket]
    snapshot_last: EncodedPacket | None  # newest packet the ring gave: live packets up to it are duplicates
    start_clipped: bool
    complete: bool = False


@dataclass(frozen=True, slots=True)
class ClipDone:
    """A clip written and handed to the upload spool."""

    event_id: str
    camera_id: str
    object_key: str
    sha256: str
    size_bytes: int
    duration_s: float


@dataclass
class RecorderStats:
    clips_written: int = 0
    clips_failed: int = 0
    bytes_written: int = 0
    exports_written: int = 0
    exports_failed: int = 0
    recent: list[ClipDone] = field(default_factory=list)


EXPORT_GRACE_S = 10.0
"""An export still waiting for its closing keyframe this long after ``end_ts`` is finished as it is."""
EXPORT_PROGRESS_KEPT = 1000


class ClipRecorder:
    """Turns event transitions into MP4 clips in the upload spool.

    Args:
        cfg: Pre/post-roll and limits.
        staging_dir: Where clips are written before the spool takes them.
        spool: The upload spool (owns the retry-until-stored guarantee).
        ring_of: Returns the pre-roll ring of a camera.
        info_of: Returns the current stream parameters of a camera (None before it opened).
        detector_name: The model (name@version) that analysed a camera, recorded in each sidecar.
        on_clip: Optional callback after a clip reached the spool (metrics).
        export_grace_s: How long after its ``end_ts`` an export waits for the closing keyframe.
        clock: Epoch seconds now (tests replace it).
    """

    def __init__(
        self,
        cfg: RecorderConfig,
        *,
        staging_dir: Path,
        spool: UploadSpool,
        ring_of: Callable[[str], PacketRing | None],
        info_of: Callable[[str], StreamInfo | None],
        detector_name: Callable[[str], str],
        on_clip: Callable[[ClipDone], None] | None = None,
        export_grace_s: float = EXPORT_GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.staging_dir = staging_dir
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.spool = spool
        self._ring_of = ring_of
        self._info_of = info_of
        self._detector_name = detector_name
        self._on_clip = on_clip
        self._lock = threading.Lock()
        self._active: dict[str, dict[str, _Recording]] = {}  # camera -> event id -> recording
        self._exports: dict[str, dict[str, _ExportRecording]] = {}  # camera -> export id -> recording
        self._progress: OrderedDict[str, ExportProgress] = OrderedDict()  # export id -> latest progress
        self.export_grace_s = export_grace_s
        self._clock = clock
        self._jobs: queue.Queue[_Recording | _ExportRecording | None] = queue.Queue()
        self.stats = RecorderStats()
        self._writer = threading.Thread(target=self._write_loop, name="clip-writer", daemon=True)
        self._writer.start()

    def on_event(self, ev: EventTransition, *, alarm_frame: AlarmFrame | None = None) -> None:
        """Start, extend or schedule the end of the clip of an event.

        ``alarm_frame`` (with the opening transition) is stored beside the clip, its record in the sidecar.
        """
        with self._lock:
            per_cam = self._active.setdefault(ev.camera_id, {})
            rec = per_cam.get(ev.event_id)
            if ev.phase is EventPhase.OPENED and rec is None:
                ring, info = self._ring_of(ev.camera_id), self._info_of(ev.camera_id)
                if ring is None or info is None:
                    log.warning("event %s on camera %s: no stream to record", ev.event_id, ev.camera_id)
                    return
                packets = ring.snapshot(ev.started_at - self.cfg.pre_roll_s)
                last_dts = packets[-1].dts if packets else None
                per_cam[ev.event_id] = _Recording(
                    ev, info, packets, last_dts, peak_value=ev.peak_value, severity=ev.severity, alarm_frame=alarm_frame
                )
            elif rec is not None:
                rec.peak_value = max(rec.peak_value, ev.peak_value)
                rec.severity = ev.severity
                if ev.phase is EventPhase.CLOSED:
                    rec.ended_at = ev.ended_at if ev.ended_at is not None else ev.ts
                    rec.end_after_ts = rec.ended_at + self.cfg.post_roll_s

    def on_packet(self, camera_id: str, pkt: EncodedPacket) -> None:
        """Append a live packet to the camera's open clips; finish those past post-roll."""
        per_cam = self._active.get(camera_id)
        exports = self._exports.get(camera_id)
        if not per_cam and not exports:
            return
        with self._lock:
            if exports:
                self._export_packet(exports, pkt)
            if not per_cam:
                return
            for event_id, rec in list(per_cam.items()):
                if rec.last_dts is not None and pkt.dts is not None and pkt.dts <= rec.last_dts:
                    continue  # already in the pre-roll snapshot
                if rec.end_after_ts is not None and pkt.wall_ts >= rec.end_after_ts and pkt.is_keyframe:
                    # End on a GOP boundary so the next clip of this camera can start here.
                    self._finish(per_cam, event_id)
                    continue
                rec.packets.append(pkt)
                rec.last_dts = pkt.dts
                first_ts = rec.packets[0].wall_ts
                if pkt.wall_ts - first_ts >= self.cfg.max_clip_s:
                    rec.cut = True
                    self._finish(per_cam, event_id)

    def close_camera(self, camera_id: str) -> None:
        """Finish every clip of a camera now (camera removed or stream changed)."""
        with self._lock:
            per_cam = self._active.get(camera_id, {})
            for event_id in list(per_cam):
                self._finish(per_cam, event_id)
            exports = self._exports.get(camera_id, {})
            for export_id in list(exports):
                self._finish_export(exports, export_id)

    # -- manual recordings (emergency exports) --------------------------------------------

    def start_export(self, order: ExportOrder, now: float | None = None) -> ExportProgress:
        """Begin an export: the past part from the ring now, the rest as packets arrive.

        Idempotent per ``export_id`` (a retried call returns the current progress).

        Raises:
            ExportWindowError: the camera has no stream yet, or the window lies wholly before
                what the ring holds (and so can never be covered).
        """
        now = self._clock() if now is None else now
        with self._lock:
            known = self._progress.get(order.export_id)
            if known is not None:
                return known
            ring, info = self._ring_of(order.camera_id), self._info_of(order.camera_id)
            if ring is None or info is None:
                raise ExportWindowError(f"camera {order.camera_id} has no open stream to record from")
            buffered = ring.snapshot(order.start_ts)
            cut = cut_window(buffered, order.start_ts, order.end_ts)
            if not cut.packets and (cut.complete or order.end_ts <= now):
                oldest = f"{_dt(buffered[0].wall_ts).isoformat()}" if buffered else "nothing"
                raise ExportWindowError(
                    f"camera {order.camera_id}: the window ends before the oldest buffered video "
                    f"(oldest: {oldest}); only the last {ring.max_seconds:.0f} s are buffered"
                )
            packets = list(cut.packets)
            rec = _ExportRecording(
                order,
                info,
                packets,
                snapshot_last=buffered[-1] if buffered else None,
                start_clipped=cut.start_clipped,
                complete=cut.complete,
            )
            self._set_progress(
                ExportProgress(
                    order.export_id,
                    order.camera_id,
                    ExportPhase.RECORDING,
                    order.start_ts,
                    order.end_ts,
                    order.requester,
                    order.case_number,
                    covered_start=packets[0].wall_ts if packets else None,
                    covered_end=self._end_of(rec),
                    start_clipped=cut.start_clipped,
                )
            )
            per_cam = self._exports.setdefault(order.camera_id, {})
            per_cam[order.export_id] = rec
            if cut.complete:
                self._finish_export(per_cam, order.export_id)
            log.info(
                "export %s of camera %s: %d packets from the ring%s, %s",
                order.export_id,
                order.camera_id,
                len(packets),
                " (start clipped)" if cut.start_clipped else "",
                "complete" if cut.complete else "recording until the window ends",
            )
            return self._progress[order.export_id]

    def export_progress(self, export_id: str) -> ExportProgress | None:
        """The export's latest progress, None if this recorder never had it (or forgot it)."""
        with self._lock:
            p = self._progress.get(export_id)
            if p is None:
                return None
            if p.phase is ExportPhase.RECORDING:
                rec = self._exports.get(p.camera_id, {}).get(export_id)
                if rec is not None:
                    p = replace(
                        p,
                        covered_start=rec.packets[0].wall_ts if rec.packets else None,
                        covered_end=self._end_of(rec),
                        start_clipped=rec.start_clipped,
                    )
        if p.phase is ExportPhase.UPLOADING and p.object_key is not None:
            p = self._check_spooled(p)
        return p

    def export_uploaded(self, export_id: str, *, error: str | None = None) -> None:
        """The spool stored the export's clip and sidecar (``error``: stored, but a later step failed)."""
        with self._lock:
            p = self._progress.get(export_id)
            if p is not None and p.phase is not ExportPhase.DONE:
                self._set_progress(replace(p, phase=ExportPhase.DONE, error=error))

    def expire_exports(self, now: float | None = None) -> int:
        """Finish exports whose closing keyframe is overdue (camera stalled or gone); returns how many."""
        now = self._clock() if now is None else now
        n = 0
        with self._lock:
            for per_cam in self._exports.values():
                for export_id, rec in list(per_cam.items()):
                    if now >= rec.order.end_ts + self.export_grace_s:
                        self._finish_export(per_cam, export_id)
                        n += 1
        return n

    def _export_packet(self, exports: dict[str, _ExportRecording], pkt: EncodedPacket) -> None:
        """One live packet for the camera's exports (lock held)."""
        for export_id, rec in list(exports.items()):
            if _in_snapshot(pkt, rec.snapshot_last):
                continue
            if ends_window(pkt, rec.order.end_ts):
                rec.complete = bool(rec.packets)  # with none, the window passed without video
                self._finish_export(exports, export_id)
                continue
            if pkt.is_keyframe and pkt.wall_ts <= rec.order.start_ts:
                rec.packets = [pkt]  # a window starting in the future starts at its latest keyframe
                rec.start_clipped = False
                continue
            if not rec.packets:
                if not pkt.is_keyframe:
                    continue  # a clip starts at a keyframe
                rec.start_clipped = pkt.wall_ts > rec.order.start_ts
            rec.packets.append(pkt)

    def _end_of(self, rec: _ExportRecording) -> float | None:
        if not rec.packets:
            return None
        last = rec.packets[-1]
        return last.wall_ts + packet_seconds(last, rec.info.avg_fps)

    def _set_progress(self, p: ExportProgress) -> None:
        """Record progress (lock held); forget the oldest finished exports beyond the bound."""
        self._progress[p.export_id] = p
        self._progress.move_to_end(p.export_id)
        while len(self._progress) > EXPORT_PROGRESS_KEPT:
            oldest = next(iter(self._progress.values()))
            if oldest.phase not in (ExportPhase.DONE, ExportPhase.FAILED):
                break
            self._progress.popitem(last=False)

    def _finish_export(self, per_cam: dict[str, _ExportRecording], export_id: str) -> None:
        rec = per_cam.pop(export_id)
        p = self._progress[export_id]
        end = self._end_of(rec)
        self._set_progress(
            replace(
                p,
                phase=ExportPhase.WRITING,
                covered_start=rec.packets[0].wall_ts if rec.packets else None,
                covered_end=end,
                start_clipped=rec.start_clipped,
                end_clipped=not rec.complete and (end is None or end < rec.order.end_ts),
            )
        )
        self._jobs.put(rec)

    def _check_spooled(self, p: ExportProgress) -> ExportProgress:
        """An export no longer in the spool was stored, or dropped/quarantined by the spool."""
        if p.export_id in self.spool.pending_event_ids():
            return p
        assert p.object_key is not None
        try:
            self.spool.store.stat_clip(p.object_key)
        except StorageUnavailableError:
            return p  # cannot tell now; asked again later
        except StorageError as exc:
            with self._lock:
                cur = self._progress.get(p.export_id)
                if cur is None or cur.phase is not ExportPhase.UPLOADING:
                    return cur or p  # the upload finished meanwhile
                failed = replace(cur, phase=ExportPhase.FAILED, error=f"the upload spool gave it up: {exc}")
                self._set_progress(failed)
                self.stats.exports_failed += 1
                return failed
        self.export_uploaded(p.export_id)
        with self._lock:
            return self._progress.get(p.export_id, p)

    def open_recordings(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._active.values())

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish all open clips and wait for the writer to hand them to the spool."""
        with self._lock:
            for per_cam in self._active.values():
                for event_id in list(per_cam):
                    self._finish(per_cam, event_id)
            for exports in self._exports.values():
                for export_id in list(exports):
                    self._finish_export(exports, export_id)
        self._jobs.put(None)
        self._writer.join(timeout_s)

    # -- writer thread ------------------------------------------------------------------

    def _finish(self, per_cam: dict[str, _Recording], event_id: str) -> None:
        rec = per_cam.pop(event_id)
        self._jobs.put(rec)

    def _write_loop(self) -> None:
        next_expiry = 0.0
        while True:
            if time.monotonic() >= next_expiry:
                self.expire_exports()
                next_expiry = time.monotonic() + 1.0
            try:
                rec = self._jobs.get(timeout=1.0)
            except queue.Empty:
                continue
            if rec is None:
                return
            if isinstance(rec, _ExportRecording):
                self._write_export_safely(rec)
                continue
            try:
                self._write(rec)
            except (OSError, ValueError, RuntimeError, av.error.FFmpegError) as exc:
                self.stats.clips_failed += 1
                log.error("clip for event %s of camera %s failed: %s", rec.event.event_id, rec.event.camera_id, exc)

    def _write(self, rec: _Recording) -> None:
        ev = rec.event
        if not rec.packets:
            raise ValueError("no packets collected")
        day = datetime.fromtimestamp(ev.started_at, tz=UTC).date()
        key = clip_object_key(ev.camera_id, ev.event_id, day)
        path = self.staging_dir / f"{ev.camera_id}-{ev.event_id}.mp4"
        clip = write_mp4(path, rec.info, rec.packets)
        digest = sha256_file(clip.path)
        ended_at = rec.ended_at if rec.ended_at is not None else rec.packets[-1].wall_ts
        frame_path, frame_record = None, None
        if rec.alarm_frame is not None:
            af = rec.alarm_frame
            frame_path = self.staging_dir / f"{ev.camera_id}-{ev.event_id}.jpg"
            frame_path.write_bytes(af.jpeg)
            frame_record = AlarmFrameRecord(
                object_key=frame_key_for(key),
                captured_at=_dt(af.captured_ts),
                box=af.box,
                score=af.score,
                cue=af.cue,
                width=af.width,
                height=af.height,
                sha256=af.sha256,
                size_bytes=len(af.jpeg),
            )
        sidecar = ClipSidecar(
            event_id=ev.event_id,
            camera_id=ev.camera_id,
            event_type=ev.event_type,
            started_at=_dt(ev.started_at),
            ended_at=_dt(ended_at),
            clip_start=_dt(clip.start_wall_ts),
            clip_end=_dt(clip.end_wall_ts),
            peak_value=rec.peak_value,
            unit=ev.unit,
            severity=rec.severity,
            zone=ev.zone,
            detector=self._detector_name(ev.camera_id),
            sha256=digest,
            size_bytes=clip.size_bytes,
            duration_s=clip.duration_s,
            object_key=key,
            alarm_frame=frame_record,
        )
        self.spool.enqueue(clip.path, sidecar, move=True, frame_path=frame_path)
        done = ClipDone(ev.event_id, ev.camera_id, key, digest, clip.size_bytes, clip.duration_s)
        self.stats.clips_written += 1
        self.stats.bytes_written += clip.size_bytes
        self.stats.recent = [*self.stats.recent[-99:], done]
        if self._on_clip is not None:
            self._on_clip(done)
        log.info("clip %s (%.1f s, %d B) spooled for upload", key, clip.duration_s, clip.size_bytes)

    def _write_export_safely(self, rec: _ExportRecording) -> None:
        o = rec.order
        try:
            self._write_export(rec)
        except (OSError, ValueError, RuntimeError, av.error.FFmpegError, ClipIntegrityError) as exc:
            self.stats.exports_failed += 1
            log.error("export %s of camera %s failed: %s", o.export_id, o.camera_id, exc)
            with self._lock:
                p = self._progress[o.export_id]
                self._set_progress(replace(p, phase=ExportPhase.FAILED, error=f"{type(exc).__name__}: {exc}"))

    def _write_export(self, rec: _ExportRecording) -> None:
        o = rec.order
        if not rec.packets:
            raise ValueError("no video arrived for the window (camera not streaming)")
        key = export_object_key(o.camera_id, o.export_id, datetime.fromtimestamp(o.start_ts, tz=UTC).date())
        path = self.staging_dir / f"{o.camera_id}-{o.export_id}.mp4"
        clip = write_mp4(path, rec.info, rec.packets)
        digest = sha256_file(clip.path)
        with self._lock:
            p = self._progress[o.export_id]
        covered_start = clip.start_wall_ts
        covered_end = p.covered_end if p.covered_end is not None else clip.end_wall_ts
        record = ExportRecord(
            requester=o.requester,
            case_number=o.case_number,
            reason=o.reason,
            requested_at=_dt(o.requested_at),
            requested_start=_dt(o.start_ts),
            requested_end=_dt(o.end_ts),
            covered_start=_dt(covered_start),
            covered_end=_dt(covered_end),
            start_clipped=p.start_clipped,
            end_clipped=p.end_clipped,
        )
        sidecar = ClipSidecar(
            event_id=o.export_id,
            camera_id=o.camera_id,
            event_type="export",
            started_at=_dt(o.start_ts),
            ended_at=_dt(o.end_ts),
            clip_start=_dt(covered_start),
            clip_end=_dt(covered_end),
            peak_value=0.0,
            unit="none",
            severity="info",
            detector=self._detector_name(o.camera_id),
            sha256=digest,
            size_bytes=clip.size_bytes,
            duration_s=clip.duration_s,
            object_key=key,
            export=record,
            evidence=True,
        )
        with self._lock:  # still WRITING until the spool holds it (the upload may even finish first)
            self._set_progress(
                replace(
                    p,
                    object_key=key,
                    covered_start=covered_start,
                    covered_end=covered_end,
                    duration_s=clip.duration_s,
                    size_bytes=clip.size_bytes,
                    sha256=digest,
                )
            )
        self.spool.enqueue(clip.path, sidecar, move=True)
        with self._lock:
            cur = self._progress.get(o.export_id)
            if cur is not None and cur.phase is ExportPhase.WRITING:
                self._set_progress(replace(cur, phase=ExportPhase.UPLOADING))
        self.stats.exports_written += 1
        log.info(
            "export %s (%.1f s, %d B, window %s%s) spooled for upload",
            key,
            clip.duration_s,
            clip.size_bytes,
            "clipped" if p.start_clipped or p.end_clipped else "covered",
            "" if not clip.dropped_packets else f", {clip.dropped_packets} packets dropped",
        )


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
