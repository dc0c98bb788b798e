"""Prometheus metrics of the data plane (decoder shards).

Cardinality is designed for a city: per-camera series exist only for a few gauges
(up, last-packet age, analytics fps and its target); counters and histograms are per shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

from contracts.cameras import CameraState, CameraStatus

LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
STAGE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, *LATENCY_BUCKETS_S[1:])
FRAME_STAGES = ("decode", "frame_rules", "queue", "preprocess", "detector_call", "rules")
"""The stages of an analysed frame, in order; their means add up to the mean of ``cctv_e2e_latency_seconds``
(less the motion gate and hand-offs between threads, which no stage times)."""

PACKETS = Counter("cctv_packets_demuxed_total", "Compressed packets demuxed from camera streams.", ["shard"])
STREAM_BYTES = Counter("cctv_stream_bytes_total", "Compressed bytes received from camera streams.", ["shard"])
FRAMES_DECODED = Counter(
    "cctv_frames_decoded_total", "Frames decoded (keyframe mode decodes keyframes only).", ["shard"]
)
DECODE_SECONDS = Counter(
    "cctv_decode_seconds_total",
    "CPU seconds camera threads spent in the decoder and the BGR conversion (divide by frames decoded for the "
    "cost of one frame).",
    ["shard"],
)
FRAMES_SAMPLED = Counter("cctv_frames_sampled_total", "Decoded frames chosen by the sampler for analysis.", ["shard"])
FRAMES_DROPPED = Counter(
    "cctv_frames_dropped_total",
    "Sampled frames dropped before analysis, by reason (queue_full_drop_newest, queue_full_drop_oldest, "
    "detector_error, detector_timeout).",
    ["shard", "reason"],
)
FRAMES_STATIC = Counter(
    "cctv_frames_static_total",
    "Sampled frames the motion gate found unchanged: inference skipped, last detections reused.",
    ["shard"],
)
FRAMES_ANALYSED = Counter("cctv_frames_analysed_total", "Frames whose detections reached the rules.", ["shard"])
DETECTIONS = Counter("cctv_detections_total", "Objects detected, by class label.", ["shard", "label"])
QUEUE_DEPTH = Gauge("cctv_shard_queue_depth", "Sampled frames waiting for a detector slot.", ["shard"])
IN_FLIGHT = Gauge("cctv_shard_detector_in_flight", "Detector requests in flight from this shard.", ["shard"])
E2E_LATENCY = Histogram(
    "cctv_e2e_latency_seconds",
    "Frame capture (packet received) to detections applied by the rules.",
    ["shard"],
    buckets=LATENCY_BUCKETS_S,
)
DETECT_CALL_LATENCY = Histogram(
    "cctv_detector_call_seconds",
    "Round trip of one detector call (a list of frames) through the Serve handle, seen by the shard.",
    ["shard"],
    buckets=LATENCY_BUCKETS_S,
)
FRAME_STAGE = Histogram(
    "cctv_frame_stage_seconds",
    "Where an analysed frame's time goes, by stage: decode (packet received to BGR image ready), frame_rules "
    "(water, fire on pixels), queue (waiting for a detector worker), preprocess (letterbox), detector_call "
    "(Serve round trip of the frame's list), rules (detections applied).",
    ["shard", "stage"],
    buckets=STAGE_BUCKETS_S,
)
DETECT_CALLS = Counter(
    "cctv_detector_calls_total",
    "Detector calls from this shard by detector (Serve app) and where the replica ran: same_node (the frames "
    "stayed on this node) or other_node (they crossed the network: no local replica, or all local ones full).",
    ["shard", "app", "locality"],
)
FRAMES_PER_CALL = Histogram(
    "cctv_detector_call_frames",
    "Frames carried by one detector call from this shard (queued frames are sent together).",
    ["shard"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
EVENTS = Counter("cctv_events_total", "Event transitions, by type and phase.", ["shard", "type", "phase"])
CLIPS = Counter("cctv_clips_written_total", "Event clips written and handed to the upload spool.", ["shard"])
CAMERAS = Gauge("cctv_shard_cameras", "Cameras owned by this shard, by state.", ["shard", "state"])
CAMERA_UP = Gauge("cctv_camera_up", "1 when the camera is streaming, else 0.", ["camera", "district"])
CAMERA_AGE = Gauge(
    "cctv_camera_last_packet_age_seconds", "Seconds since the camera's last packet.", ["camera", "district"]
)
DECODE_ERRORS = Counter("cctv_decode_errors_total", "Packets the decoder rejected as corrupt.", ["shard"])
RECONNECTS = Counter("cctv_camera_reconnects_total", "Stream reconnect attempts.", ["shard"])
RTP_LOST = Counter(
    "cctv_rtp_packets_lost_total",
    "RTP packets that never arrived (sequence gaps) at the loop receiver (ingest.rtsp_receiver: loop).",
    ["shard"],
)
UNITS_DROPPED = Counter(
    "cctv_access_units_dropped_total",
    "Access units the loop receiver dropped: a packet of theirs was lost or malformed, or they came before the "
    "session's first keyframe (nothing could decode them).",
    ["shard"],
)
CAMERA_FPS = Gauge(
    "cctv_camera_analytics_fps",
    "Frames per second the camera's analytics received (sampled minus dropped) over the last export interval.",
    ["camera", "district"],
)
CAMERA_FPS_TARGET = Gauge(
    "cctv_camera_analytics_fps_target", "The camera's configured analytics_fps.", ["camera", "district"]
)
QUEUE_CAPACITY = Gauge("cctv_shard_queue_capacity", "Slots of the shard's detector queue.", ["shard"])
SAME_NODE_FIRST = Gauge(
    "cctv_shard_detector_same_node_first",
    "1 when the shard's detector calls prefer replicas on its own node (cluster.detector_routing: same_node_first).",
    ["shard"],
)
SHARD_START_TIME = Gauge(
    "cctv_shard_start_time_seconds",
    "Unix time this shard actor process started; a change means Ray restarted the shard.",
    ["shard"],
)

PER_CAMERA_GAUGES = (CAMERA_UP, CAMERA_AGE, CAMERA_FPS, CAMERA_FPS_TARGET)
"""The only metrics with a ``camera`` label: series grow as 4 per camera, nothing else does."""


class CameraSeries:
    """Publishes the per-camera gauges of one shard from its cameras' status records.

    Pure bookkeeping (no Ray, no I/O) so that a test can feed it a city's worth of cameras.
    The analytics rate is the change of ``frames_sampled - frames_dropped`` between two
    calls; a camera missing from a later call (removed, or moved to another shard) has its
    series removed, so a camera's series live on exactly one shard.
    """

    def __init__(self) -> None:
        self._prev: dict[str, tuple[float, int]] = {}
        self._labels: dict[str, str] = {}

    def export(self, statuses: Iterable[CameraStatus], fps_targets: Mapping[str, float], now: float) -> None:
        """Set up/age/fps/target for every camera in ``statuses``; drop series of cameras gone since last call.

        Args:
            statuses: one record per camera the shard owns.
            fps_targets: camera id → configured ``analytics_fps``.
            now: wall-clock time of this export (seconds since the epoch).
        """
        seen: dict[str, str] = {}
        for s in statuses:
            cid, district = s.camera_id, s.district
            seen[cid] = district
            CAMERA_UP.labels(cid, district).set(1.0 if s.state is CameraState.STREAMING else 0.0)
            if s.last_packet_ts is not None:
                CAMERA_AGE.labels(cid, district).set(max(now - s.last_packet_ts, 0.0))
            analysed = s.frames_sampled - s.frames_dropped
            prev = self._prev.get(cid)
            if prev is not None and now > prev[0]:
                CAMERA_FPS.labels(cid, district).set(max(analysed - prev[1], 0) / (now - prev[0]))
            self._prev[cid] = (now, analysed)
            if cid in fps_targets:
                CAMERA_FPS_TARGET.labels(cid, district).set(fps_targets[cid])
        for cid, district in self._labels.items():
            if seen.get(cid) != district:
                for gauge in PER_CAMERA_GAUGES:
                    gauge.remove(cid, district)
                if cid not in seen:
                    self._prev.pop(cid, None)
        self._labels = seen
