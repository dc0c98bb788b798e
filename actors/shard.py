"""DecoderShard: the Ray actor that owns a shard of the cameras.

For each of its cameras it holds one persistent demuxer/decoder (:class:`CameraStream`),
a compressed pre-roll ring, and the analytics rules' state. Sampled frames go through a
bounded :class:`DropQueue` to a fixed number of detector workers (the in-flight bound);
detections come back here, to the shard that owns the camera, and drive the rules and
the clip recorder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import ray

from actors import metrics as m
from actors.alarm_frame import AlarmFrame, AlarmFrames, render_alarm_frame
from actors.analytics.registry import build_camera_rules
from actors.backpressure import DropQueue
from actors.packets import EncodedPacket, PacketRing, StreamInfo
from actors.recorder import ClipDone, ClipRecorder
from actors.rtsp_receive import RtspReceiver
from actors.stream import CameraStream, SampledFrame, StreamCounters
from configs.schema import CameraConfig, ClusterConfig, DetectorConfig, IngestConfig, RecorderConfig, StorageConfig
from contracts.cameras import CameraState, CameraStatus
from contracts.detector import Detection, DetectRequest, DetectResult
from contracts.events import EventNotice, EventPhase, EventTransition
from contracts.exports import ExportOrder, ExportProgress
from serve_apps.detector.preprocess import letterbox
from serve_apps.detector.routing import DETECTOR_CALL_FAILED, DETECTOR_DEPLOYMENT, detector_handle
from serve_apps.metrics_export import export_metrics
from storage.access import S3Access
from storage.clip_store import ClipStore
from storage.evidence import EvidenceStore
from storage.records import ClipSidecar
from storage.spool import UploadSpool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShardSettings:
    """Everything a shard needs besides its cameras (one typed message, not loose kwargs)."""

    shard_id: str
    namespace: str
    cluster: ClusterConfig
    ingest: IngestConfig
    recorder: RecorderConfig
    detector: DetectorConfig
    purpose_detectors: dict[str, DetectorConfig]
    s3: S3Access
    spool_max_bytes: int
    state_dir: Path
    metrics_bind_host: str = "0.0.0.0"
    export_url_expiry_s: int = 3600  # ApiConfig.export_url_expiry_s: lifetime of presigned export URLs
    max_export_s: float = 1800.0  # ApiConfig.max_export_s: longest emergency export window
    snapshot_jpeg_quality: int = 85  # camera snapshots and alarm frames
    storage: StorageConfig | None = None  # evidence bucket and retention; None: defaults beside s3.bucket


@dataclass(frozen=True, slots=True)
class Incarnation:
    """One process of a shard actor: equal answers mean the same process, a new one means Ray restarted it."""

    pid: int
    started_ts: float


@dataclass(frozen=True, slots=True)
class ShardStats:
    """Totals for one shard (what benchmarks and tests read)."""

    shard_id: str
    cameras: int
    packets: int
    frames_decoded: int
    frames_sampled: int
    frames_dropped: int
    frames_analysed: int
    detector_errors: int
    events: int
    clips_written: int
    clips_failed: int
    spool_pending: int
    batch_sizes: dict[int, int]
    e2e_latency_ms: tuple[float, ...]
    metrics_address: str
    node_id: str = ""
    detector_calls_same_node: int = 0
    """Calls answered by a replica on this shard's node (cluster.detector_routing)."""
    detector_calls_other_node: int = 0


class _Camera:
    """Everything a shard keeps for one camera."""

    def __init__(self, cfg: CameraConfig, stream: CameraStream, ring: PacketRing) -> None:
        self.cfg = cfg
        self.stream = stream
        self.ring = ring
        self.rules, self.frame_rules = build_camera_rules(cfg)  # a fused fire rule is in both
        # A camera watched only by frame rules (water level, fire) needs no detector.
        self.needs_detector = bool(self.rules) or not self.frame_rules
        self.lock = threading.Lock()
        self.last_detections: tuple[Detection, ...] = ()
        self.model = "none yet"
        self.last_frame: SampledFrame | None = None  # a reference only: JPEG-encoded on request
        # Frames at the detector, by capture time: an event a result opens is drawn on the frame it was decided on.
        # References only (the queue holds the same arrays); popped by the result, the oldest evicted past the bound
        # (a frame dropped on the way never comes back).
        self.at_detector: OrderedDict[float, np.ndarray] = OrderedDict()


FRAMES_AT_DETECTOR_KEPT = 8


class DecoderShard:
    """Owns its cameras' decoders, rule state and clip recording (run as a Ray actor)."""

    def __init__(self, settings: ShardSettings) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.s = settings
        self.shard_id = settings.shard_id
        self._started_ts = time.time()
        cl = settings.cluster
        self._queue: DropQueue[SampledFrame] = DropQueue(cl.queue_size_per_shard, cl.backpressure_policy)
        self._cams: dict[str, _Camera] = {}
        self._cams_lock = threading.Lock()
        self._stop = threading.Event()
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._batch_sizes: dict[int, int] = {}
        self._e2e_ms: deque[float] = deque(maxlen=5000)
        self._events: deque[EventNotice] = deque(maxlen=1000)
        self._alarm_frames = AlarmFrames(settings.recorder.alarm_frames_kept)
        self._alarm_lock = threading.Lock()
        self._n_events = 0
        self._analysed = 0
        self._detector_errors = 0
        self._dropped_by_camera: dict[str, int] = {}
        self._retired = StreamCounters()  # totals of cameras no longer owned, so stats stay cumulative
        self.metrics_address = export_metrics(
            "shard", self.shard_id, bind_host=settings.metrics_bind_host, namespace=settings.namespace
        )

        node_dir = settings.state_dir / "shards" / self.shard_id
        s3 = settings.s3
        store = ClipStore.for_access(s3)
        # Exports are evidence: the spool never evicts them and marks them (locked copy, legal hold) after upload.
        evidence = EvidenceStore(s3, settings.storage or StorageConfig(bucket=s3.bucket))
        self.spool = UploadSpool(
            node_dir / "spool",
            store,
            max_bytes=settings.spool_max_bytes,
            on_uploaded=self._on_uploaded,
            evidence=evidence,
        )
        self.recorder = ClipRecorder(
            settings.recorder,
            staging_dir=node_dir / "staging",
            spool=self.spool,
            ring_of=lambda cid: c.ring if (c := self._cams.get(cid)) else None,
            info_of=lambda cid: c.stream.info if (c := self._cams.get(cid)) else None,
            detector_name=lambda cid: c.model if (c := self._cams.get(cid)) else "unknown",
            on_clip=self._on_clip,
        )
        self.spool.start()  # after the recorder: resumed exports report their upload to it
        ingest = settings.ingest
        # ingest.rtsp_receiver: loop: one thread receives every rtsp:// camera of this shard (issue 16).
        self._receiver = (
            RtspReceiver(poll_interval_s=ingest.receive_poll_interval_s, stall_timeout_s=ingest.stall_timeout_s)
            if ingest.rtsp_receiver == "loop"
            else None
        )
        if self._receiver is not None:
            self._receiver.start()
        # One Serve app per detector; each camera uses the one for its purpose.
        # Same node first (cluster.detector_routing): frames stay on the node that decoded them.
        self._node_id = ray.get_runtime_context().get_node_id()
        self._handles = {
            det.app_name: detector_handle(DETECTOR_DEPLOYMENT, det.app_name, cl.detector_routing)
            for det in [settings.detector, *settings.purpose_detectors.values()]
        }
        self._calls_by_locality = {"same_node": 0, "other_node": 0}
        self._workers = [
            threading.Thread(target=self._detect_loop, name=f"detect-{i}", daemon=True)
            for i in range(cl.max_in_flight_per_shard)
        ]
        for w in self._workers:
            w.start()
        self._metrics_thread = threading.Thread(target=self._metrics_loop, name="metrics", daemon=True)
        self._last_counts: dict[str, tuple[float, ...]] = {}
        self._camera_series = m.CameraSeries()
        self._metrics_thread.start()
        log.info("shard %s up, metrics at %s", self.shard_id, self.metrics_address)

    # -- camera management (called by the controller) -----------------------------------

    def add_cameras(self, cameras: list[CameraConfig]) -> list[str]:
        """Start streams for cameras not yet owned; returns the ids started."""
        started = []
        for cfg in cameras:
            with self._cams_lock:
                if cfg.id in self._cams:
                    continue
                ring_s = self.s.recorder.pre_roll_s + max((z.min_duration_s for z in cfg.zones), default=0) + 10.0
                ring = PacketRing(max_seconds=ring_s, max_bytes=self.s.recorder.ring_max_bytes)
                stream = CameraStream(
                    cfg,
                    shard=self.shard_id,
                    ingest=self.s.ingest,
                    ring=ring,
                    on_frame=self._on_frame,
                    on_packet=self._make_packet_hook(cfg.id),
                    on_stream_info=self._make_info_hook(cfg.id),
                    receiver=self._receiver,
                )
                self._cams[cfg.id] = _Camera(cfg, stream, ring)
            stream.start()
            started.append(cfg.id)
        return started

    def remove_cameras(self, camera_ids: list[str]) -> list[str]:
        """Stop and forget cameras; their open clips are finished and uploaded."""
        removed = []
        for cid in camera_ids:
            with self._cams_lock:
                cam = self._cams.pop(cid, None)
            if cam is None:
                continue
            cam.stream.stop()
            for name in ("packets", "keyframes", "bytes", "frames_decoded", "frames_sampled", "reconnects"):
                setattr(self._retired, name, getattr(self._retired, name) + getattr(cam.stream.counters, name))
            self._flush_counters(cid, cam)
            self._last_counts.pop(cid, None)
            now = time.time()
            with cam.lock:
                for rule in [*cam.rules, *cam.frame_rules]:
                    for ev in rule.close(now):
                        self._emit(ev)
            self.recorder.close_camera(cid)
            m.CAMERA_UP.remove(cid, cam.cfg.district)
            m.CAMERA_AGE.remove(cid, cam.cfg.district)
            removed.append(cid)
        return removed

    def camera_ids(self) -> list[str]:
        return sorted(self._cams)

    def status(self) -> list[CameraStatus]:
        return [c.stream.status() for c in list(self._cams.values())]

    def recent_events(self, since_ts: float = 0.0) -> list[EventNotice]:
        return [e for e in list(self._events) if e.received_ts >= since_ts]

    def stats(self) -> ShardStats:
        cams = list(self._cams.values())
        return ShardStats(
            shard_id=self.shard_id,
            cameras=len(cams),
            packets=self._retired.packets + sum(c.stream.counters.packets for c in cams),
            frames_decoded=self._retired.frames_decoded + sum(c.stream.counters.frames_decoded for c in cams),
            frames_sampled=self._retired.frames_sampled + sum(c.stream.counters.frames_sampled for c in cams),
            frames_dropped=sum(self._dropped_by_camera.values()),
            frames_analysed=self._analysed,
            detector_errors=self._detector_errors,
            events=self._n_events,
            clips_written=self.recorder.stats.clips_written,
            clips_failed=self.recorder.stats.clips_failed,
            spool_pending=self.spool.pending(),
            batch_sizes=dict(self._batch_sizes),
            e2e_latency_ms=tuple(self._e2e_ms),
            metrics_address=self.metrics_address,
            node_id=self._node_id,
            detector_calls_same_node=self._calls_by_locality["same_node"],
            detector_calls_other_node=self._calls_by_locality["other_node"],
        )

    def ready(self) -> str:
        return self.shard_id

    # -- media: snapshots and exports (called by the controller) ------------------------------

    def snapshot_jpeg(self, camera_id: str) -> bytes | None:
        """JPEG of the camera's latest sampled frame (full resolution); None before its first frame.

        Raises:
            KeyError: this shard does not run the camera.
        """
        cam = self._cams.get(camera_id)
        if cam is None:
            raise KeyError(camera_id)
        frame = cam.last_frame
        if frame is None:
            return None
        ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.s.snapshot_jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding of camera {camera_id}'s frame failed")
        return buf.tobytes()

    def start_export(self, order: ExportOrder) -> ExportProgress:
        """Begin an emergency export (see :meth:`~actors.export_recorder.ExportRecorder.start`).

        Raises:
            KeyError: this shard does not run the camera.
            ExportWindowError: nothing buffered or to come for the window.
        """
        if order.camera_id not in self._cams:
            raise KeyError(order.camera_id)
        return self.recorder.exports.start(order)

    def export_progress(self, export_id: str) -> ExportProgress | None:
        return self.recorder.exports.progress(export_id)

    def _on_uploaded(self, sidecar: ClipSidecar) -> None:
        """Spool callback: an export is stored (and, being evidence, already marked by the spool)."""
        if sidecar.export is None:
            return
        self.recorder.exports.uploaded(sidecar.event_id)

    def incarnation(self) -> Incarnation:
        """This actor process (pid and start time): it changes only if Ray restarted the shard."""
        return Incarnation(pid=os.getpid(), started_ts=self._started_ts)

    def stop(self, drain_timeout_s: float = 30.0) -> ShardStats:
        """Stop in reverse order of start: cameras, detector workers, recorder, spool."""
        for cid in list(self._cams):
            self.remove_cameras([cid])
        if self._receiver is not None:
            self._receiver.stop()
        self._stop.set()
        for item in self._queue.close():
            self._count_drop(item.camera_id, "shutdown")
        for w in self._workers:
            w.join(5.0)
        self.recorder.stop(drain_timeout_s)
        self.spool.wait_drained(drain_timeout_s)
        self.spool.stop(5.0)
        stats = self.stats()
        self._sync_metrics()
        return stats

    # -- hot path -------------------------------------------------------------------------

    def _make_packet_hook(self, camera_id: str):
        recorder = self.recorder

        def hook(pkt: EncodedPacket) -> None:
            recorder.on_packet(camera_id, pkt)

        return hook

    def _make_info_hook(self, camera_id: str):
        def hook(info: StreamInfo) -> None:
            log.info("camera %s: %s %dx%d", camera_id, info.codec_name, info.width, info.height)

        return hook

    def _on_frame(self, frame: SampledFrame) -> None:
        cam = self._cams.get(frame.camera_id)
        if cam is None:
            return
        cam.last_frame = frame
        stage = m.FRAME_STAGE
        if frame.ready_ts:
            stage.labels(self.shard_id, "decode").observe(max(frame.ready_ts - frame.capture_ts, 0.0))
        if cam.frame_rules:
            # On the camera thread: these rules look at pixels, cheaply, at the analytics rate.
            t0 = time.perf_counter()
            with cam.lock:
                transitions = [t for r in cam.frame_rules for t in r.update_frame(frame.capture_ts, frame.image)]
            for t in transitions:
                self._emit(t, frame.image)
            stage.labels(self.shard_id, "frame_rules").observe(time.perf_counter() - t0)
        if not cam.needs_detector:
            return
        if frame.static:
            self._apply_static(frame)
            return
        with cam.lock:
            cam.at_detector[frame.capture_ts] = frame.image
            while len(cam.at_detector) > FRAMES_AT_DETECTOR_KEPT:
                cam.at_detector.popitem(last=False)
        dropped = self._queue.put(dataclasses.replace(frame, enqueued_ts=time.time()))
        if dropped is not None:
            self._count_drop(dropped.camera_id, f"queue_full_{self._queue.policy}")

    def _apply_static(self, frame: SampledFrame) -> None:
        """A frame the motion gate found unchanged: the last detections still hold, at the new time."""
        cam = self._cams.get(frame.camera_id)
        if cam is None:
            return
        m.FRAMES_STATIC.labels(self.shard_id).inc()
        with cam.lock:
            transitions = [t for rule in cam.rules for t in rule.update(frame.capture_ts, cam.last_detections)]
        for t in transitions:
            self._emit(t, frame.image)

    def _count_drop(self, camera_id: str, reason: str) -> None:
        self._dropped_by_camera[camera_id] = self._dropped_by_camera.get(camera_id, 0) + 1
        cam = self._cams.get(camera_id)
        if cam is not None:
            cam.stream.frames_dropped += 1
        m.FRAMES_DROPPED.labels(self.shard_id, reason).inc()

    def _detector_of(self, camera_id: str) -> DetectorConfig:
        cam = self._cams.get(camera_id)
        purpose = cam.cfg.purpose if cam is not None else "general"
        return self.s.purpose_detectors.get(purpose, self.s.detector)

    def _detect_loop(self) -> None:
        """One of ``max_in_flight_per_shard`` workers: queued frames go to the detector as lists."""
        max_frames = self.s.cluster.max_frames_per_call
        while not self._stop.is_set():
            frames = self._queue.get_many(max_frames, timeout_s=0.5)
            if not frames:
                continue
            groups: dict[str, list[SampledFrame]] = {}
            for frame in frames:
                groups.setdefault(self._detector_of(frame.camera_id).app_name, []).append(frame)
            for app_name, group in groups.items():
                self._detect_group(app_name, group)

    def _detect_group(self, app_name: str, frames: list[SampledFrame]) -> None:
        det = self._detector_of(frames[0].camera_id)
        stage = m.FRAME_STAGE
        taken_ts = time.time()
        reqs: list[DetectRequest] = []
        for f in frames:
            if f.enqueued_ts:
                stage.labels(self.shard_id, "queue").observe(max(taken_ts - f.enqueued_ts, 0.0))
            t_pre = time.perf_counter()
            reqs.append(
                DetectRequest(
                    camera_id=f.camera_id,
                    frame_seq=f.frame_seq,
                    capture_ts=f.capture_ts,
                    letterboxed=letterbox(f.image, det.serve_input_size),
                )
            )
            stage.labels(self.shard_id, "preprocess").observe(time.perf_counter() - t_pre)
        with self._in_flight_lock:
            self._in_flight += 1
        t0 = time.perf_counter()
        try:
            results: list[DetectResult] = (
                self._handles[app_name].detect_frames.remote(reqs).result(timeout_s=det.request_timeout_s)
            )
        except TimeoutError:
            self._detector_errors += 1
            for f in frames:
                self._count_drop(f.camera_id, "detector_timeout")
            return
        except DETECTOR_CALL_FAILED as exc:
            # Replica death, Serve's refusals (BackPressureError is no RayError), an unusable handle: the frames
            # are dropped and counted, and this worker goes on.
            self._detector_errors += 1
            for f in frames:
                self._count_drop(f.camera_id, "detector_error")
            log.warning("detector call for %d frames failed: %s", len(frames), type(exc).__name__)
            self._stop.wait(0.05)
            return
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
        call_s = time.perf_counter() - t0
        m.DETECT_CALL_LATENCY.labels(self.shard_id).observe(call_s)
        locality = "same_node" if results and results[0].node_id == self._node_id else "other_node"
        self._calls_by_locality[locality] += 1
        m.DETECT_CALLS.labels(self.shard_id, app_name, locality).inc()
        m.FRAMES_PER_CALL.labels(self.shard_id).observe(len(frames))
        call_stage = stage.labels(self.shard_id, "detector_call")
        for _ in frames:
            call_stage.observe(call_s)  # every frame of the list waited the whole call
        for result in results:
            self._on_result(result)

    def _on_result(self, result: DetectResult) -> None:
        cam = self._cams.get(result.camera_id)
        if cam is None:
            return  # removed while the request was in flight
        self._batch_sizes[result.batch_size] = self._batch_sizes.get(result.batch_size, 0) + 1
        t0 = time.perf_counter()
        with cam.lock:
            cam.stream.detections_received += 1
            cam.last_detections = result.detections
            cam.model = result.model
            image = cam.at_detector.pop(result.capture_ts, None)
            transitions = [t for rule in cam.rules for t in rule.update(result.capture_ts, result.detections)]
        for t in transitions:
            self._emit(t, image)
        m.FRAME_STAGE.labels(self.shard_id, "rules").observe(time.perf_counter() - t0)
        labels: dict[str, int] = {}
        for d in result.detections:
            labels[d.label] = labels.get(d.label, 0) + 1
        for label, n in labels.items():
            m.DETECTIONS.labels(self.shard_id, label).inc(n)
        self._analysed += 1
        m.FRAMES_ANALYSED.labels(self.shard_id).inc()
        latency_s = time.time() - result.capture_ts
        self._e2e_ms.append(latency_s * 1000.0)
        m.E2E_LATENCY.labels(self.shard_id).observe(latency_s)

    def _emit(self, t: EventTransition, image: np.ndarray | None = None) -> None:
        """Record, count, log and hand to the recorder one transition; ``image``: the frame it was decided on."""
        self._n_events += 1
        self._events.append(EventNotice(t, time.time()))
        m.EVENTS.labels(self.shard_id, t.event_type, t.phase.value).inc()
        if t.phase.value == "opened":
            cam = self._cams.get(t.camera_id)
            if cam is not None:
                cam.stream.events_opened += 1
        log.info(
            "event %s %s camera=%s zone=%s severity=%s value=%s peak=%s %s",
            t.event_type,
            t.phase.value,
            t.camera_id,
            t.zone,
            t.severity,
            t.value,
            t.peak_value,
            t.unit,
        )
        alarm = self._render_alarm(t, image) if t.phase is EventPhase.OPENED and image is not None else None
        self.recorder.on_event(t, alarm_frame=alarm)

    def _render_alarm(self, t: EventTransition, image: np.ndarray) -> AlarmFrame | None:
        """The opening frame of ``t``, boxed and captioned, kept for the API (None if it cannot be encoded)."""
        try:
            frame = render_alarm_frame(image, t, captured_ts=t.ts, quality=self.s.snapshot_jpeg_quality)
        except ValueError as exc:
            log.warning("no alarm frame for event %s of camera %s: %s", t.event_id, t.camera_id, exc)
            return None
        with self._alarm_lock:
            self._alarm_frames.add(frame)
        return frame

    def alarm_frame(self, event_id: str) -> AlarmFrame | None:
        """The alarm frame of one of this shard's recent events (None: not one of the latest it drew)."""
        with self._alarm_lock:
            return self._alarm_frames.get(event_id)

    def _on_clip(self, done: ClipDone) -> None:
        m.CLIPS.labels(self.shard_id).inc()

    # -- metrics ---------------------------------------------------------------------------

    def _metrics_loop(self) -> None:
        # Constant for the life of this process: a new start time is how alerts see a Ray restart.
        m.SHARD_START_TIME.labels(self.shard_id).set(self._started_ts)
        m.QUEUE_CAPACITY.labels(self.shard_id).set(self.s.cluster.queue_size_per_shard)
        m.SAME_NODE_FIRST.labels(self.shard_id).set(1 if self.s.cluster.detector_routing == "same_node_first" else 0)
        while not self._stop.wait(1.0):
            self._sync_metrics()

    def _flush_counters(self, cid: str, cam: _Camera) -> None:
        """Add what a camera's counters gained since the last flush to the shard's Prometheus counters."""
        shard, c = self.shard_id, cam.stream.counters
        cur = (
            c.packets,
            c.bytes,
            c.frames_decoded,
            c.frames_sampled,
            c.reconnects,
            c.decode_errors,
            c.decode_s,
            c.rtp_lost_packets,
            c.units_dropped,
        )
        prev = self._last_counts.get(cid, (0, 0, 0, 0, 0, 0, 0.0, 0, 0))
        self._last_counts[cid] = cur
        d = [max(a - b, 0) for a, b in zip(cur, prev, strict=True)]
        m.PACKETS.labels(shard).inc(d[0])
        m.STREAM_BYTES.labels(shard).inc(d[1])
        m.FRAMES_DECODED.labels(shard).inc(d[2])
        m.FRAMES_SAMPLED.labels(shard).inc(d[3])
        m.RECONNECTS.labels(shard).inc(d[4])
        m.DECODE_ERRORS.labels(shard).inc(d[5])
        m.DECODE_SECONDS.labels(shard).inc(d[6])
        m.RTP_LOST.labels(shard).inc(d[7])
        m.UNITS_DROPPED.labels(shard).inc(d[8])

    def _sync_metrics(self) -> None:
        """Publish counters as deltas of the streams' own counters (no Prometheus in the hot path)."""
        shard = self.shard_id
        now = time.time()
        by_state: dict[str, int] = {s.value: 0 for s in CameraState}
        statuses: list[CameraStatus] = []
        fps_targets: dict[str, float] = {}
        for cid, cam in list(self._cams.items()):
            self._flush_counters(cid, cam)
            status = cam.stream.status()
            by_state[status.state.value] += 1
            statuses.append(status)
            fps_targets[cid] = cam.cfg.analytics_fps
        self._camera_series.export(statuses, fps_targets, now)
        for state, n in by_state.items():
            m.CAMERAS.labels(shard, state).set(n)
        m.QUEUE_DEPTH.labels(shard).set(len(self._queue))
        m.IN_FLIGHT.labels(shard).set(self._in_flight)


RemoteDecoderShard = ray.remote(max_restarts=3, max_task_retries=0, max_concurrency=8)(DecoderShard)
