"""Pydantic v2 models for everything the system reads from configuration.

Every model forbids unknown fields, so a typo in a YAML key is an error at load time
rather than a silently ignored setting. Units are part of field names (``_s``, ``_ms``,
``_bytes``). The loader in :mod:`configs.loader` turns validation errors into messages
that name the file, the line and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from configs.analytics import (
    CrowdDensityConfig,
    FireSmokeConfig,
    GroundCalibration,
    IntrusionConfig,
    LoiteringConfig,
    WaterGaugeConfig,
)

CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

DecodeMode = Literal["keyframe", "sampled", "all"]
"""How a camera's stream is decoded.

* ``keyframe``: the decoder skips non-key frames; only keyframes are decoded and analysed
  (cheapest; the analytics rate is at most the keyframe rate).
* ``sampled``: every packet is decoded (H.264 needs its references) but only frames at the
  analytics rate are converted to pixels and sent to the detector.
* ``all``: every decoded frame is converted and offered to the detector.
"""

BackpressurePolicy = Literal["drop_newest", "drop_oldest"]
"""What a shard does with a sampled frame when its detector queue is full (every drop is counted)."""

Purpose = Literal["crowd", "traffic", "flood", "fire", "general"]
Resolution = Literal["360p", "720p", "1080p", "4k"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneConfig(_Model):
    """A polygon in image pixels with the rules that watch it."""

    name: str = Field(min_length=1, max_length=64)
    polygon: list[tuple[float, float]] = Field(min_length=3, description="Vertices (x, y) in frame pixels.")
    crowd_threshold_people: int | None = Field(
        default=5, ge=1, description="People in the zone that count as a crowd (None: no count rule)."
    )
    min_duration_s: float = Field(default=2.0, ge=0, description="The count must hold this long to open an event.")
    cooldown_s: float = Field(default=5.0, ge=0, description="Below threshold this long closes the event.")
    crowd_density: CrowdDensityConfig | None = None
    intrusion: IntrusionConfig | None = None
    loitering: LoiteringConfig | None = None


class CameraConfig(_Model):
    """One camera of the inventory."""

    id: str = Field(pattern=CAMERA_ID_PATTERN)
    url: str = Field(min_length=1, description="rtsp://, http(s):// or a file path / file:// URL.")
    district: str = Field(default="unassigned", min_length=1, max_length=64)
    purpose: Purpose = "general"
    analytics_fps: float = Field(default=1.0, gt=0, le=60)
    decode_mode: DecodeMode = "sampled"
    loop: bool = Field(default=False, description="Replay a file source forever at its native frame rate.")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    nominal_resolution: Resolution = Field(
        default="720p", description="What the camera sends, for placement cost (the stream's real size is measured)."
    )
    nominal_fps: float = Field(default=15.0, gt=0, le=120, description="What the camera sends, for placement cost.")
    motion_gate: bool = Field(
        default=False, description="Skip inference on frames that barely differ from the last analysed one."
    )
    motion_threshold: float = Field(
        default=2.0,
        gt=0,
        le=255,
        description="Mean absolute grey-level change (64x36 thumbnail) that counts as motion.",
    )
    motion_max_skip_s: float = Field(default=10.0, gt=0, description="Analyse at least this often even when static.")
    zones: list[ZoneConfig] = Field(default_factory=list)
    calibration: GroundCalibration | None = Field(
        default=None, description="Ground-plane calibration: zones get areas in m², crowds densities."
    )
    water_gauges: list[WaterGaugeConfig] = Field(default_factory=list)
    fire_smoke: FireSmokeConfig | None = None
    timezone: str = Field(default="Asia/Seoul", description="For rule schedules (IANA name).")

    @field_validator("timezone")
    @classmethod
    def _known_tz(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r}") from None
        return tz

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in {"", "file", "rtsp", "rtsps", "http", "https"} and not re.match(r"^[a-z]$", scheme):
            raise ValueError(f"unsupported URL scheme {scheme!r} (use rtsp, http(s) or a file path)")
        return url

    @model_validator(mode="after")
    def _unique_zone_names(self) -> CameraConfig:
        names = [z.name for z in self.zones]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate zone names {dupes}")
        return self

    @model_validator(mode="after")
    def _fused_fire_smoke_keeps_up(self) -> CameraConfig:
        """In fused mode a frame's detections come back after it, so they are first combined with the next
        sampled frame: a ``max_age_s`` under the sampling interval would ignore every learned score."""
        fs = self.fire_smoke
        if fs is not None and fs.source == "fused" and fs.learned is not None:
            interval_s = 1.0 / self.analytics_fps
            if fs.learned.max_age_s < interval_s:
                raise ValueError(
                    f"fire_smoke.learned.max_age_s {fs.learned.max_age_s} is shorter than the sampling interval "
                    f"{interval_s:g} s (analytics_fps {self.analytics_fps:g}): every learned score would be stale "
                    "by the next frame; raise max_age_s"
                )
        return self


class AutoscalingConfig(_Model):
    """Serve autoscaling of detector replicas (replaces ``num_replicas`` when given)."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    target_ongoing_requests: float = Field(default=16.0, gt=0)
    upscale_delay_s: float = Field(default=5.0, ge=0)
    downscale_delay_s: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas {self.max_replicas} < min_replicas {self.min_replicas}")
        return self


DetectorBackend = Literal["onnxruntime", "openvino", "torch"]
"""Engines that run the detector's ONNX file (serve_apps/detector/backends.py)."""


class DetectorConfig(_Model):
    """One detector deployment under Ray Serve (its own Serve app, ``detector-<model_name>``)."""

    model_name: str = Field(default="yolox_nano", pattern=r"^[a-z0-9_-]+$")
    model_version: str | None = Field(
        default=None,
        description="Load <model_name>@<model_version> from the model registry (S3 'models' bucket, sha256 "
        "checked); None loads <models_dir>/<model_name>/<model_name>.onnx.",
    )
    models_dir: Path = Field(
        default=Path("../shared/models"),
        description="Directory holding <model_name>/<model_name>.onnx; relative paths resolve against the "
        "config file's directory.",
    )
    backend: DetectorBackend = Field(
        default="onnxruntime",
        description="What runs the ONNX file: onnxruntime or OpenVINO (CPU), torch (CPU or CUDA); "
        "benchmarks/performance/backends.py measures them side by side.",
    )
    device: Literal["cpu", "cuda"] = "cpu"
    half: bool = Field(default=False, description="fp16 weights and activations (torch on CUDA).")
    input_size: int = Field(
        default=416, ge=32, le=1920, multiple_of=32, description="Input size the model file declares (checked)."
    )
    run_input_size: int | None = Field(
        default=None,
        ge=32,
        le=1920,
        multiple_of=32,
        description="Run at this square size instead of input_size (YOLOX is fully convolutional). "
        "benchmarks/accuracy/eval_crowd_events.py: 800 px counts dense crowds far better than 416, at ~3.5x the cost.",
    )
    name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_-]+$",
        description="Serve app and HTTP route name (default: model_name); set it to run one model twice, "
        "e.g. at two sizes.",
    )
    score_threshold: float = Field(default=0.3, gt=0, lt=1)
    nms_iou_threshold: float = Field(default=0.45, gt=0, lt=1)
    max_batch_size: int = Field(default=8, ge=1, le=512)
    batch_wait_timeout_s: float = Field(default=0.02, ge=0, le=5)
    num_replicas: int = Field(default=1, ge=1)
    num_cpus_per_replica: float = Field(default=0.5, gt=0)
    num_gpus_per_replica: float = Field(default=0.0, ge=0)
    max_replicas_per_node: int | None = Field(
        default=None, ge=1, description="Spread replicas: at most this many of this detector on one node."
    )
    replica_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each replica needs, e.g. {detector_node: 0.01} to keep replicas on GPU "
        "worker groups.",
    )
    intra_op_threads: int = Field(default=1, ge=1, description="onnxruntime / OpenVINO threads per replica.")
    intra_op_spinning: bool = Field(
        default=False,
        description="Let onnxruntime's threads busy-wait between operators. Off by default: on cores shared with "
        "decoder shards a spinning thread burns the CPU its peer needs (benchmarks/results/ort_threads.json: beside "
        "a competing process, 2 spinning threads cost 22-43 CPU-ms per image, 2 non-spinning 20-27, 1 thread 16); "
        "turn it on only for a replica with cores to itself and several threads.",
    )
    max_ongoing_requests: int = Field(default=32, ge=1)
    max_queued_requests: int = Field(default=64, ge=-1, description="-1: unbounded (not recommended).")
    request_timeout_s: float = Field(default=10.0, gt=0)
    autoscaling: AutoscalingConfig | None = None

    @model_validator(mode="after")
    def _device_fits_backend(self) -> DetectorConfig:
        if self.backend != "torch" and (self.device != "cpu" or self.half):
            raise ValueError(
                f"backend {self.backend!r} runs on the CPU in fp32: device {self.device!r}"
                f"{' and half: true' if self.half else ''} need backend 'torch'"
            )
        return self

    @property
    def app_name(self) -> str:
        """The Serve application this detector runs as."""
        return f"detector-{self.name or self.model_name}"

    @property
    def serve_input_size(self) -> int:
        """Square side frames are letterboxed to for this detector."""
        return self.run_input_size or self.input_size


STOCK_DETECTORS: dict[str, str] = {
    "yolox_nano": "the stock COCO detector (80 COCO classes, no fire or smoke)",
    "person_lwpd": "the stock person detector (class person only)",
}
"""Model names of the detectors shipped in ``models_dir`` (and seeded into the registry from it): their classes
are known without opening them, and none is fire or smoke."""


def fire_smoke_detector_problem(det: DetectorConfig) -> str | None:
    """Why ``det`` certainly cannot feed a learned fire/smoke score, or None when it may.

    Knowable from the configuration alone: a model loaded from ``models_dir`` (no ``model_version``) gets its
    class names from its class count only (80: COCO, 1: person; the loader refuses any other count), and the
    stock model names are COCO/person models. A registry model of another name carries its classes in its
    manifest, which is only readable once the registry is up (checked at start:
    :func:`cluster.models.fire_smoke_model_problems`).
    """
    if det.model_name in STOCK_DETECTORS:
        return f"{det.model_name!r} is {STOCK_DETECTORS[det.model_name]}"
    if det.model_version is None:
        return (
            f"{det.model_name!r} is loaded from models_dir without model_version, so its class names can only "
            "be COCO's or 'person'"
        )
    return None


def default_evidence_bucket(bucket: str) -> str:
    """``<bucket>-evidence``, with ``bucket`` shortened so the name stays within S3's 63 characters."""
    suffix = "-evidence"
    return bucket[: 63 - len(suffix)].rstrip(".-") + suffix


class StorageConfig(_Model):
    """Where clips go. With no ``endpoint`` the runtime starts an embedded SeaweedFS S3 server."""

    endpoint: str | None = Field(default=None, description="host:port of any S3/MinIO endpoint.")
    secure: bool = False
    region: str | None = None
    bucket: str = Field(default="cctv", pattern=r"^[a-z0-9][a-z0-9.-]{2,62}$")
    models_bucket: str = Field(
        default="models", pattern=r"^[a-z0-9][a-z0-9.-]{2,62}$", description="The model registry's bucket."
    )
    access_key_env: str = "CCTV_S3_ACCESS_KEY"
    secret_key_env: str = "CCTV_S3_SECRET_KEY"
    presign_expiry_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    spool_max_bytes: int = Field(default=2 * 1024**3, ge=1024**2)
    upload_retry_max_s: float = Field(default=30.0, gt=0, description="Cap of the upload retry backoff.")
    clip_retention_days: int | None = Field(
        default=30,
        ge=1,
        description="Lifecycle expiry of ordinary clips (the clip bucket's clips/ prefix); None keeps them forever. "
        "Evidence copies live in the locked evidence bucket and never expire by lifecycle.",
    )
    evidence_bucket: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9.-]{2,62}$",
        description="Object-lock bucket for evidence copies, day manifests and the access log "
        "(default '<bucket>-evidence'; created with object lock enabled).",
    )
    evidence_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field(
        default="GOVERNANCE",
        description="Object-lock mode of evidence copies: COMPLIANCE cannot be shortened or lifted by anyone.",
    )
    evidence_retention_days: int = Field(
        default=365, ge=1, le=36500, description="Object-lock retention of evidence copies and day manifests."
    )
    access_log_retention_days: int = Field(
        default=730, ge=1, le=36500, description="Object-lock retention of access-log entries."
    )

    @property
    def evidence_bucket_name(self) -> str:
        """The evidence bucket: ``evidence_bucket``, else ``<bucket>-evidence`` (cut to 63 characters)."""
        return self.evidence_bucket or default_evidence_bucket(self.bucket)


class ApiConfig(_Model):
    """The control API: who may call it (bearer tokens with roles) and what it hands out."""

    tokens_env: str = Field(
        default="CCTV_API_TOKENS",
        description="Environment variable holding 'token:role' or 'token:role:name' entries separated by commas "
        "(roles: viewer, operator, admin; the name is who the access log records; tokens of 16+ characters). "
        "Tokens are never written in config files; the API process only holds their SHA-256 digests. Unset "
        "under `cctv run`: a random admin token is generated into <state_dir>/api-token (mode 0600).",
    )
    auth_required: bool = Field(
        default=True, description="False only for a local demo: every caller is then an admin (logged at start)."
    )
    export_url_expiry_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600, description="Presigned export URLs.")
    max_export_s: float = Field(default=1800.0, gt=0, description="Longest emergency export window.")
    events_page_max: int = Field(default=500, ge=1, le=10_000)


class RecorderConfig(_Model):
    """Event clips: compressed pre-roll kept per camera, post-roll recorded after the event."""

    pre_roll_s: float = Field(default=5.0, ge=0, le=300)
    post_roll_s: float = Field(default=5.0, ge=0, le=300)
    ring_max_bytes: int = Field(default=16 * 1024**2, ge=64 * 1024, description="Per-camera pre-roll cap.")
    max_clip_s: float = Field(default=300.0, gt=0, description="A clip is cut here even if the event goes on.")
    alarm_frames_kept: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Alarm frames (boxed JPEG of the frame an event opened on, ~100 KB at 720p) each shard keeps in "
        "memory for GET /events/{id}/frame; older ones are read from beside their clip in the bucket.",
    )


class IngestConfig(_Model):
    """Stream health and reconnection."""

    open_timeout_s: float = Field(default=10.0, gt=0)
    stall_timeout_s: float = Field(default=10.0, gt=0)
    reconnect_initial_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    max_failures_before_down: int = Field(default=3, ge=1, description="Failed opens in a row before 'down'.")
    decoder: Literal["cpu", "nvdec", "auto"] = Field(
        default="cpu",
        description="nvdec: NVIDIA hardware decode (h264_cuvid/hevc_cuvid), falling back to CPU when it cannot "
        "open; auto: nvdec where a GPU decoder opens, else CPU.",
    )
    rtsp_receiver: Literal["ffmpeg", "loop"] = Field(
        default="ffmpeg",
        description="How rtsp:// cameras are received. ffmpeg: one FFmpeg demuxer per camera (any codec, "
        "rtsps, every server quirk FFmpeg knows). loop: one receive thread per shard reads every camera's RTP "
        "in large batches and reassembles H.264 in Python (actors/rtsp_receive.py): about a quarter of "
        "FFmpeg's receive CPU; a camera that is not H.264 falls back to ffmpeg by itself.",
    )
    receive_poll_interval_s: float = Field(
        default=0.05,
        gt=0,
        le=0.5,
        description="loop receiver: sleep between read rounds; longer means fewer, larger reads and at most "
        "this much added latency.",
    )


class ClusterConfig(_Model):
    """Ray placement. With no ``ray_address`` the runtime starts a local Ray instance."""

    ray_address: str | None = None
    namespace: str = "cctv"
    num_shards: int = Field(default=2, ge=1)
    shard_num_cpus: float = Field(default=0.5, gt=0)
    shard_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each decoder shard needs, e.g. {decode_node: 0.01} to keep shards on CPU "
        "worker groups.",
    )
    shards_per_node: int | None = Field(
        default=None,
        ge=1,
        description="Pin this many shards to every alive node offering shard_resources (num_shards is then "
        "ignored): shards follow nodes as they join and leave.",
    )
    detector_routing: Literal["same_node_first", "any_node"] = Field(
        default="same_node_first",
        description="same_node_first: a shard sends its frames to a detector replica on its own node (frames "
        "never cross the network) and only falls back to other nodes when none is there or all local ones are "
        "full; any_node: Serve's plain power-of-two choice over every replica.",
    )
    placement_epsilon: float = Field(
        default=0.1, ge=0, le=1, description="A shard takes cameras while its cost is within (1 + this) x the mean."
    )
    shard_liveness_timeout_s: float = Field(
        default=5.0, gt=0, description="A shard that does not answer for this long is replaced by the others."
    )
    local_num_cpus: int | None = Field(default=None, ge=1, description="CPUs of a local Ray (None: all).")
    max_in_flight_per_shard: int = Field(default=4, ge=1, description="Detector requests in flight per shard.")
    queue_size_per_shard: int = Field(default=16, ge=1, description="Sampled frames waiting per shard.")
    max_frames_per_call: int = Field(
        default=16,
        ge=1,
        description="Most frames one detector call carries: a shard worker sends all queued frames (up to this) "
        "in one call, so Serve's per-call cost is paid per list, not per frame.",
    )
    backpressure_policy: BackpressurePolicy = "drop_oldest"
    serve_http_host: str = "127.0.0.1"
    serve_http_port: int = Field(default=8000, ge=0, le=65535)


class MetricsConfig(_Model):
    """Prometheus exposition: every shard and detector replica serves /metrics on its own port."""

    bind_host: str = Field(
        default="0.0.0.0", description="Address the exporters bind (127.0.0.1 keeps them off the network)."
    )


class AppConfig(_Model):
    """The whole job: what ``cctv run`` reads."""

    state_dir: Path = Field(default=Path("state"), description="Runtime files: S3 data, spool, logs.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    purpose_detectors: dict[Purpose, DetectorConfig] = Field(
        default_factory=dict,
        description="A different detector for cameras of a purpose (e.g. crowd: person_lwpd); the others use "
        "'detector'.",
    )
    recorder: RecorderConfig = Field(default_factory=RecorderConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)

    def detector_for(self, purpose: Purpose) -> DetectorConfig:
        return self.purpose_detectors.get(purpose, self.detector)

    def all_detectors(self) -> list[DetectorConfig]:
        """Each distinct detector once (one Serve app each)."""
        out: dict[str, DetectorConfig] = {self.detector.app_name: self.detector}
        for det in self.purpose_detectors.values():
            if det.app_name in out and out[det.app_name] != det:
                raise ValueError(
                    f"two different configurations for detector app {det.app_name!r}: give one of them a `name`"
                )
            out[det.app_name] = det
        return list(out.values())

    @model_validator(mode="after")
    def _unique_camera_ids(self) -> AppConfig:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"duplicate camera id {cam.id!r}")
            seen.add(cam.id)
        self.all_detectors()
        for cam in self.cameras:
            fs = cam.fire_smoke
            if fs is None or fs.source == "classic":
                continue
            why = fire_smoke_detector_problem(self.detector_for(cam.purpose))
            if why is not None:
                routed = (
                    f"purpose_detectors.{cam.purpose}"
                    if cam.purpose in self.purpose_detectors
                    else f"the default detector (no purpose_detectors.{cam.purpose})"
                )
                raise ValueError(
                    f"camera {cam.id!r}: fire_smoke.source {fs.source!r} needs a fire/smoke detector, but purpose "
                    f"{cam.purpose!r} is served by {routed}: {why}. Push a fire/smoke model "
                    "(cctv models push FILE --name NAME --version V --classes ...) and route "
                    f"purpose_detectors.{cam.purpose} to it, or set fire_smoke.source to 'classic'"
                )
        return self
