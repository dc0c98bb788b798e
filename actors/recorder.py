"""Event clips and emergency exports: ring pre-roll + live packets, remuxed (never re-encoded).

One :class:`ClipRecorder` serves all cameras of a shard. Packets are appended on the
camera threads (cheap list appends); MP4 writing, hashing and handing the clip to the
upload spool happen on one writer thread so a slow disk never stalls a camera.

Two kinds of recording:

* **event clips** (:meth:`ClipRecorder.on_event`): from the keyframe at or before
  ``event start - pre_roll_s`` until the first keyframe after ``event end + post_roll_s``.
* **manual exports** (``ClipRecorder.exports``, an :class:`~actors.export_recorder.ExportRecorder`,
  112/119 requests): a fixed window ``[start_ts, end_ts]`` in receive time. The past part comes
  from the ring (the keyframe at or before ``start_ts``; if the ring does not reach back that far,
  its oldest keyframe, and the clip says it was clipped), the future part is recorded live until
  the first keyframe at or after ``end_ts`` (not included). So the clip covers the window within
  one GOP at each end. It is uploaded under ``exports/...`` as evidence; its progress is queryable
  meanwhile. Both kinds share the writer thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import av

from actors.alarm_frame import AlarmFrame
from actors.clip_writer import write_mp4
from actors.export_recorder import EXPORT_GRACE_S, ExportRecorder, ExportRecording, utc_datetime
from actors.packets import EncodedPacket, PacketRing, StreamInfo
from configs.schema import RecorderConfig
from contracts.events import EventPhase, EventTransition
from storage.clip_store import sha256_file
from storage.records import (
    AlarmFrameRecord,
    ClipSidecar,
    clip_object_key,
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
        self._jobs: queue.Queue[_Recording | ExportRecording | None] = queue.Queue()
        self.stats = RecorderStats()
        self.exports = ExportRecorder(
            staging_dir=staging_dir,
            spool=spool,
            ring_of=ring_of,
            info_of=info_of,
            detector_name=detector_name,
            stats=self.stats,
            submit=self._jobs.put,
            export_grace_s=export_grace_s,
            clock=clock,
        )
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
        self.exports.on_packet(camera_id, pkt)
        if not self._active.get(camera_id):
            return
        with self._lock:
            per_cam = self._active.get(camera_id)
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
        self.exports.close_camera(camera_id)

    def open_recordings(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._active.values())

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish all open clips and wait for the writer to hand them to the spool."""
        with self._lock:
            for per_cam in self._active.values():
                for event_id in list(per_cam):
                    self._finish(per_cam, event_id)
        self.exports.finish_all()
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
                self.exports.expire()
                next_expiry = time.monotonic() + 1.0
            try:
                rec = self._jobs.get(timeout=1.0)
            except queue.Empty:
                continue
            if rec is None:
                return
            if isinstance(rec, ExportRecording):
                self.exports.write(rec)
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
                captured_at=utc_datetime(af.captured_ts),
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
            started_at=utc_datetime(ev.started_at),
            ended_at=utc_datetime(ended_at),
            clip_start=utc_datetime(clip.start_wall_ts),
            clip_end=utc_datetime(clip.end_wall_ts),
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
