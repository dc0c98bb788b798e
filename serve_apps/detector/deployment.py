"""The detector as a Ray Serve deployment: a thin batching wrapper around a model runner.

Requests from all shards are gathered by ``@serve.batch`` into one forward pass. The
model runs in a worker thread so the replica's event loop keeps collecting the next
batch while the current one computes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from prometheus_client import Counter, Histogram
from ray import serve

from configs.schema import DetectorConfig
from serve_apps.detector.onnx_runner import OnnxDetector, load_detector
from serve_apps.detector.types import DetectRequest, DetectResult
from serve_apps.metrics_export import export_metrics

log = logging.getLogger(__name__)

DETECTOR_APP = "detector"
DETECTOR_DEPLOYMENT = "Detector"

BATCH_SIZE = Histogram(
    "cctv_detector_batch_size",
    "Images per forward pass.",
    ["deployment"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
INFERENCE_SECONDS = Histogram(
    "cctv_detector_inference_seconds",
    "Forward pass + post-processing time of one batch.",
    ["deployment"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
IMAGES = Counter("cctv_detector_images_total", "Images run through the detector.", ["deployment"])


class Detector:
    """Serve deployment class (bound by :func:`build_detector_app`)."""

    def __init__(self, cfg: DetectorConfig, namespace: str | None = None, metrics_bind_host: str = "0.0.0.0") -> None:
        self.cfg = cfg
        self.runner: OnnxDetector = load_detector(
            Path(cfg.models_dir),
            cfg.model_name,
            score_threshold=cfg.score_threshold,
            nms_iou_threshold=cfg.nms_iou_threshold,
            intra_op_threads=cfg.intra_op_threads,
        )
        if self.runner.input_size != cfg.input_size:
            raise ValueError(
                f"model {cfg.model_name} takes {self.runner.input_size}px input, config says {cfg.input_size}"
            )
        self.model_id = f"{self.runner.name}@{self.runner.version}"
        replica = serve.get_replica_context().replica_tag if _in_serve() else "local"
        self.metrics_address = export_metrics(
            "detector", f"detector-{replica}", bind_host=metrics_bind_host, namespace=namespace
        )
        self.detect.set_max_batch_size(cfg.max_batch_size)
        self.detect.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        log.info("detector %s ready (metrics at %s)", self.model_id, self.metrics_address)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def detect(self, requests: list[DetectRequest]) -> list[DetectResult]:
        arrived = time.perf_counter()
        t0 = time.perf_counter()
        dets = await asyncio.to_thread(self.runner.detect, [r.letterboxed for r in requests])
        inference_ms = (time.perf_counter() - t0) * 1000.0
        n = len(requests)
        BATCH_SIZE.labels(DETECTOR_DEPLOYMENT).observe(n)
        INFERENCE_SECONDS.labels(DETECTOR_DEPLOYMENT).observe(inference_ms / 1000.0)
        IMAGES.labels(DETECTOR_DEPLOYMENT).inc(n)
        return [
            DetectResult(
                camera_id=r.camera_id,
                frame_seq=r.frame_seq,
                capture_ts=r.capture_ts,
                detections=d,
                model=self.model_id,
                batch_size=n,
                inference_ms=inference_ms,
                queue_ms=(t0 - arrived) * 1000.0,
            )
            for r, d in zip(requests, dets, strict=True)
        ]

    def check_health(self) -> None:
        """Serve calls this periodically; an exception marks the replica unhealthy."""
        if self.runner is None:
            raise RuntimeError("detector model not loaded")


def _in_serve() -> bool:
    try:
        serve.get_replica_context()
    except RuntimeError:
        return False
    return True


def build_detector_app(
    cfg: DetectorConfig, namespace: str | None = None, metrics_bind_host: str = "0.0.0.0"
) -> serve.Application:
    """Bind the deployment with the replica resources and queue limits from config.

    ``max_queued_requests`` is bounded on purpose: when replicas are saturated the caller
    gets a fast back-pressure error and counts a drop, instead of queueing stale frames.
    """
    options = {"num_cpus": cfg.num_cpus_per_replica}
    if cfg.num_gpus_per_replica > 0:
        options["num_gpus"] = cfg.num_gpus_per_replica
    dep = serve.deployment(
        Detector,
        name=DETECTOR_DEPLOYMENT,
        num_replicas=cfg.num_replicas,
        ray_actor_options=options,
        max_ongoing_requests=cfg.max_ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,
        health_check_period_s=10,
        health_check_timeout_s=30,
    )
    return dep.bind(cfg, namespace, metrics_bind_host)
