"""Emergency exports on the shard: the window cut from the pre-roll ring, the live rest, the MP4 and its sidecar.

An :class:`~contracts.exports.ExportOrder` asks for one camera over a fixed window (112 police / 119 fire). The past
part comes from the camera's ring now (from the keyframe at or before the start), the rest as packets arrive, up to
the first keyframe at or after the end; the finished recording goes to the clip recorder's writer thread, which
remuxes it (no re-encode) and spools it as evidence under ``exports/YYYY/MM/DD/<camera>/<export_id>.mp4``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import av

from actors.clip_writer import write_mp4
from actors.packets import EncodedPacket, PacketRing, StreamInfo
from contracts.errors import ExportWindowError
from contracts.exports import ExportOrder, ExportPhase, ExportProgress
from storage.clip_store import ClipIntegrityError, StorageError, StorageUnavailableError, sha256_file
from storage.records import ClipSidecar, ExportRecord, export_object_key
from storage.spool import UploadSpool

if TYPE_CHECKING:
    from actors.recorder import RecorderStats

log = logging.getLogger(__name__)

EXPORT_GRACE_S = 10.0
"""An export still waiting for its closing keyframe this long after ``end_ts`` is finished as it is."""
EXPORT_PROGRESS_KEPT = 1000


def utc_datetime(ts: float) -> datetime:
    """Epoch seconds as an aware UTC datetime (what sidecars record)."""
    return datetime.fromtimestamp(ts, tz=UTC)


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
class ExportRecording:
    """A manual recording being collected (mutable, owned by the recorder)."""

    order: ExportOrder
    info: StreamInfo
    packets: list[EncodedPacket]
    snapshot_last: EncodedPacket | None  # newest packet the ring gave: live packets up to it are duplicates
    start_clipped: bool
    complete: bool = False


class ExportRecorder:
    """The exports one shard records, from order to spooled MP4.

    Args:
        staging_dir: Where MP4s are written before the spool takes them.
        spool: The upload spool (exports are evidence: never evicted, locked after upload).
        ring_of: Returns the pre-roll ring of a camera.
        info_of: Returns the current stream parameters of a camera (None before it opened).
        detector_name: The model that analysed a camera, recorded in each sidecar.
        stats: The recorder's counters (exports written and failed).
        submit: Hands a finished recording to the writer thread (which calls :meth:`write`).
        export_grace_s: How long after its ``end_ts`` an export waits for the closing keyframe.
        clock: Epoch seconds now (tests replace it).
    """

    def __init__(
        self,
        *,
        staging_dir: Path,
        spool: UploadSpool,
        ring_of: Callable[[str], PacketRing | None],
        info_of: Callable[[str], StreamInfo | None],
        detector_name: Callable[[str], str],
        stats: RecorderStats,
        submit: Callable[[ExportRecording], None],
        export_grace_s: float = EXPORT_GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.staging_dir = staging_dir
        self.spool = spool
        self._ring_of = ring_of
        self._info_of = info_of
        self._detector_name = detector_name
        self.stats = stats
        self._submit = submit
        self.export_grace_s = export_grace_s
        self._clock = clock
        self._lock = threading.Lock()
        self._exports: dict[str, dict[str, ExportRecording]] = {}  # camera -> export id -> recording
        self._progress: OrderedDict[str, ExportProgress] = OrderedDict()  # export id -> latest progress

    def on_packet(self, camera_id: str, pkt: EncodedPacket) -> None:
        """A live packet of ``camera_id`` for its open exports (cheap when it has none)."""
        if not self._exports.get(camera_id):
            return
        with self._lock:
            exports = self._exports.get(camera_id)
            if exports:
                self._on_packet_locked(exports, pkt)

    def close_camera(self, camera_id: str) -> None:
        """Finish every export of a camera now (camera removed or stream changed)."""
        with self._lock:
            exports = self._exports.get(camera_id, {})
            for export_id in list(exports):
                self._finish_export(exports, export_id)

    def finish_all(self) -> None:
        """Finish every open export as it is (the recorder stops)."""
        with self._lock:
            for exports in self._exports.values():
                for export_id in list(exports):
                    self._finish_export(exports, export_id)

    def start(self, order: ExportOrder, now: float | None = None) -> ExportProgress:
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
                oldest = f"{utc_datetime(buffered[0].wall_ts).isoformat()}" if buffered else "nothing"
                raise ExportWindowError(
                    f"camera {order.camera_id}: the window ends before the oldest buffered video "
                    f"(oldest: {oldest}); only the last {ring.max_seconds:.0f} s are buffered"
                )
            packets = list(cut.packets)
            rec = ExportRecording(
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

    def progress(self, export_id: str) -> ExportProgress | None:
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

    def uploaded(self, export_id: str, *, error: str | None = None) -> None:
        """The spool stored the export's clip and sidecar (``error``: stored, but a later step failed)."""
        with self._lock:
            p = self._progress.get(export_id)
            if p is not None and p.phase is not ExportPhase.DONE:
                self._set_progress(replace(p, phase=ExportPhase.DONE, error=error))

    def expire(self, now: float | None = None) -> int:
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

    def _on_packet_locked(self, exports: dict[str, ExportRecording], pkt: EncodedPacket) -> None:
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

    def _end_of(self, rec: ExportRecording) -> float | None:
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

    def _finish_export(self, per_cam: dict[str, ExportRecording], export_id: str) -> None:
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
        self._submit(rec)

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
        self.uploaded(p.export_id)
        with self._lock:
            return self._progress.get(p.export_id, p)

    def write(self, rec: ExportRecording) -> None:
        """Remux a finished export and hand it to the spool (the recorder's writer thread calls this)."""
        o = rec.order
        try:
            self._write(rec)
        except (OSError, ValueError, RuntimeError, av.error.FFmpegError, ClipIntegrityError) as exc:
            self.stats.exports_failed += 1
            log.error("export %s of camera %s failed: %s", o.export_id, o.camera_id, exc)
            with self._lock:
                p = self._progress[o.export_id]
                self._set_progress(replace(p, phase=ExportPhase.FAILED, error=f"{type(exc).__name__}: {exc}"))

    def _write(self, rec: ExportRecording) -> None:
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
            requested_at=utc_datetime(o.requested_at),
            requested_start=utc_datetime(o.start_ts),
            requested_end=utc_datetime(o.end_ts),
            covered_start=utc_datetime(covered_start),
            covered_end=utc_datetime(covered_end),
            start_clipped=p.start_clipped,
            end_clipped=p.end_clipped,
        )
        sidecar = ClipSidecar(
            event_id=o.export_id,
            camera_id=o.camera_id,
            event_type="export",
            started_at=utc_datetime(o.start_ts),
            ended_at=utc_datetime(o.end_ts),
            clip_start=utc_datetime(covered_start),
            clip_end=utc_datetime(covered_end),
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
