"""The detector as a Ray Serve deployment: a thin batching wrapper around a model runner.

Two ways in, one forward-pass thread:

* :meth:`Detector.detect_frames` takes a list of frames in one call. A decoder shard sends
  all the frames that queued up while its previous call ran, so the per-call cost of Serve
  (router, actor call, serialisation: ~6 CPU-ms measured on this project's CPU machine) is
  paid once per list instead of once per frame. This is the shards' path.
* :meth:`Detector.detect` takes one frame; ``@serve.batch`` gathers concurrent callers
  (the HTTP route, single-frame clients) into one forward pass.

Both go through one :class:`~serve_apps.detector.coalescer.ForwardCoalescer`: one forward pass
at a time on a single worker thread, so passes never compete for the replica's cores, and the
lists that arrive while a pass runs are merged into the next one (no waiting for a batch to
fill). The replica's event loop keeps accepting requests while a pass computes.

Each configured detector is its own Serve application (``detector-<model_name>``). The
model version can be switched in place through the deployment's ``user_config``
(``{"model_version": "2"}``): Serve calls :meth:`Detector.reconfigure` on the running
replicas, which load and verify the new model beside the old one and swap only when it
passed — a bad artifact is refused and the previous version keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import ray
from prometheus_client import Counter, Gauge, Histogram
from ray import serve
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from configs.schema import DetectorConfig
from contracts.detector import Detection, DetectRequest, DetectResult
from serve_apps.detector.backends import detector_from_file, make_detector
from serve_apps.detector.coalescer import ForwardCoalescer, PassInfo
from serve_apps.detector.onnx_runner import DetectorBase, ModelLoadError
from serve_apps.detector.preprocess import letterbox
from serve_apps.detector.routing import DETECTOR_DEPLOYMENT
from serve_apps.metrics_export import export_metrics
from storage.access import S3Access
from storage.model_store import ModelRegistryError, ModelStore

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024**2
MAX_IMAGES_PER_HTTP_REQUEST = 256

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
CALLS_PER_PASS = Histogram(
    "cctv_detector_calls_per_pass",
    "Calls (lists of frames, or Serve batches of single frames) merged into one forward pass.",
    ["deployment"],
    buckets=(1, 2, 3, 4, 6, 8, 16, 32),
)
MODEL_LOADS = Counter(
    "cctv_detector_model_loads_total", "Model loads by result (ok, refused).", ["deployment", "result"]
)
MODEL_INFO = Gauge("cctv_detector_model_info", "1 for the model version being served.", ["deployment", "model"])


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """What a replica serves, and why the last switch was refused if it was."""

    model: str
    loaded_ts: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A runner and the id results carry: ``name@version`` from the registry, ``name@sha256[:12]`` from a file."""

    runner: DetectorBase
    model_id: str


def load_model(cfg: DetectorConfig, version: str | None, registry: S3Access | None, cache_dir: Path) -> LoadedModel:
    """The configured detector at ``version`` (registry) or from ``models_dir`` (no version).

    Raises:
        ModelLoadError / ModelRegistryError / FileNotFoundError: the model cannot be served.
    """
    kw: dict[str, Any] = {
        "score_threshold": cfg.score_threshold,
        "nms_iou_threshold": cfg.nms_iou_threshold,
    }
    if cfg.run_input_size is not None:
        kw["input_size"] = cfg.run_input_size
    if cfg.backend == "onnxruntime":
        kw["intra_op_threads"] = cfg.intra_op_threads
        kw["intra_op_spinning"] = cfg.intra_op_spinning
    elif cfg.backend == "openvino":
        kw["intra_op_threads"] = cfg.intra_op_threads
    else:
        kw.update(device=cfg.device, half=cfg.half)
    if version is None:
        runner = make_detector(cfg.backend, Path(cfg.models_dir), cfg.model_name, **kw)
        model_id = runner.model_id
    else:
        if registry is None:
            raise ModelRegistryError(f"{cfg.model_name}@{version} asked for, but no model registry is configured")
        store = ModelStore(registry, cache_dir=cache_dir)
        manifest, path = store.fetch(f"{cfg.model_name}@{version}")
        kw["expected_sha256"] = manifest.sha256
        kw["class_names"] = manifest.classes
        runner = detector_from_file(cfg.backend, path, **kw)
        model_id = manifest.ref
    if runner.exported_input_size != cfg.input_size:
        raise ModelLoadError(
            f"model {cfg.model_name}@{version or 'local'} takes {runner.exported_input_size}px input, "
            f"config says {cfg.input_size}"
        )
    return LoadedModel(runner, model_id)


class Detector:
    """Serve deployment class (bound by :func:`build_detector_app`)."""

    def __init__(
        self,
        cfg: DetectorConfig,
        namespace: str | None = None,
        metrics_bind_host: str = "0.0.0.0",
        registry: S3Access | None = None,
        cache_dir: str = "/tmp/cctv-models",
    ) -> None:
        self.cfg = cfg
        self._registry = registry
        self._cache_dir = Path(cache_dir)
        self._lock = threading.Lock()
        self._version = cfg.model_version
        self.model = load_model(cfg, self._version, registry, self._cache_dir)
        self._status = ModelStatus(self.model.model_id, time.time(), None)
        MODEL_LOADS.labels(cfg.app_name, "ok").inc()
        MODEL_INFO.labels(cfg.app_name, self.model.model_id).set(1)
        replica = serve.get_replica_context().replica_id.unique_id if _in_serve() else "local"
        self.metrics_address = export_metrics(
            "detector", f"{cfg.app_name}-{replica}", bind_host=metrics_bind_host, namespace=namespace
        )
        self._node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self._forward_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._coalescer: ForwardCoalescer[DetectRequest, tuple[tuple[Detection, ...], str]] = ForwardCoalescer(
            self._run_pass, cfg.max_batch_size, self._forward_pool, on_pass=self._observe_pass
        )
        self.detect.set_max_batch_size(cfg.max_batch_size)
        self.detect.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        log.info("detector %s ready (metrics at %s)", self.model.model_id, self.metrics_address)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Switch model version in place; a model that fails to load or verify is refused.

        Serve calls this at start and whenever the deployment's ``user_config`` changes,
        without restarting the replica; requests keep flowing to the current model while
        the new one loads.
        """
        version = user_config.get("model_version", self.cfg.model_version)
        if version == self._version:
            return
        try:
            new = load_model(self.cfg, version, self._registry, self._cache_dir)
        except (ModelLoadError, ModelRegistryError, FileNotFoundError, OSError) as exc:
            error = f"{self.cfg.model_name}@{version} refused: {exc}"
            MODEL_LOADS.labels(self.cfg.app_name, "refused").inc()
            log.error("%s; still serving %s", error, self.model.model_id)
            self._status = ModelStatus(self.model.model_id, self._status.loaded_ts, error)
            return
        with self._lock:
            old = self.model.model_id
            self.model, self._version = new, version
        MODEL_INFO.labels(self.cfg.app_name, old).set(0)
        MODEL_INFO.labels(self.cfg.app_name, new.model_id).set(1)
        MODEL_LOADS.labels(self.cfg.app_name, "ok").inc()
        self._status = ModelStatus(new.model_id, time.time(), None)
        log.info("detector switched %s -> %s", old, new.model_id)

    def model_status(self) -> ModelStatus:
        return self._status

    def _run_pass(self, requests: list[DetectRequest]) -> list[tuple[tuple[Detection, ...], str]]:
        """One forward pass on the forward thread (chunked at ``max_batch_size``), with the model that ran it."""
        model = self.model  # one model for the whole pass, even if a switch lands meanwhile
        step = self.cfg.max_batch_size
        boxed = [r.letterboxed for r in requests]
        dets = [d for i in range(0, len(boxed), step) for d in model.runner.detect(boxed[i : i + step])]
        return [(d, model.model_id) for d in dets]

    async def _forward(self, requests: list[DetectRequest]) -> list[DetectResult]:
        """Detections for ``requests``, from the next forward pass with room (see :class:`ForwardCoalescer`)."""
        share = await self._coalescer.submit(requests)
        info = share.info
        return [
            DetectResult(
                camera_id=r.camera_id,
                frame_seq=r.frame_seq,
                capture_ts=r.capture_ts,
                detections=dets,
                model=model_id,
                batch_size=info.images,
                inference_ms=info.duration_s * 1000.0,
                queue_ms=share.queued_s * 1000.0,
                node_id=self._node_id,
            )
            for r, (dets, model_id) in zip(requests, share.outputs, strict=True)
        ]

    def _observe_pass(self, info: PassInfo) -> None:
        name = self.cfg.app_name
        BATCH_SIZE.labels(name).observe(info.images)
        INFERENCE_SECONDS.labels(name).observe(info.duration_s)
        IMAGES.labels(name).inc(info.images)
        CALLS_PER_PASS.labels(name).observe(info.calls)

    async def detect_frames(self, requests: list[DetectRequest]) -> list[DetectResult]:
        """Detect on a list of frames the caller already gathered; results in the same order."""
        if not requests:
            return []
        return await self._forward(requests)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def detect(self, requests: list[DetectRequest]) -> list[DetectResult]:
        """One frame per call; concurrent calls are batched by Serve."""
        return await self._forward(requests)

    async def __call__(self, request: Request) -> Response:
        """HTTP: POST images to ``/detect/<model_name>``; detections as JSON.

        Two forms:

        * the body is one encoded image (JPEG/PNG): it joins the same ``@serve.batch``
          batches as other single-frame callers; the answer is one image's result;
        * ``multipart/form-data`` with one or more image parts (up to
          ``MAX_IMAGES_PER_HTTP_REQUEST``): all run in one forward pass and the answer
          lists them in the order sent, named by their field names. One undecodable part
          refuses the whole request (400, naming the part) so nothing is half-answered.
        """
        if request.method != "POST":
            return _error(405, "POST an encoded image (JPEG or PNG) or multipart/form-data of images")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return await self._detect_multipart(request)
        body = await request.body()
        if not body:
            return _error(400, "empty body: POST an encoded image (JPEG or PNG)")
        if len(body) > MAX_IMAGE_BYTES:
            return _error(413, f"image of {len(body)} bytes exceeds {MAX_IMAGE_BYTES}")
        frame = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            return _error(400, "body is not a decodable image (JPEG or PNG expected)")
        camera = request.query_params.get("camera", "http")
        boxed = letterbox(frame, self.cfg.serve_input_size)
        req = DetectRequest(camera_id=camera, frame_seq=0, capture_ts=time.time(), letterboxed=boxed)
        result: DetectResult = await self.detect(req)
        return JSONResponse(
            {
                "model": result.model,
                "batch_size": result.batch_size,
                "inference_ms": round(result.inference_ms, 2),
                **_image_json(result, frame.shape),
            }
        )

    async def _detect_multipart(self, request: Request) -> Response:
        try:
            form = await request.form(max_files=MAX_IMAGES_PER_HTTP_REQUEST, max_fields=MAX_IMAGES_PER_HTTP_REQUEST)
        except (MultiPartException, HTTPException) as exc:  # malformed multipart, or more parts than allowed
            detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
            return _error(400, f"multipart body refused: {detail}")
        parts: list[tuple[str, bytes]] = []
        for name, value in form.multi_items():
            if isinstance(value, str):
                return _error(400, f"part {name!r} is a text field; send each image as a file part")
            data = await value.read()
            if len(data) > MAX_IMAGE_BYTES:
                return _error(413, f"part {name!r}: image of {len(data)} bytes exceeds {MAX_IMAGE_BYTES}")
            parts.append((name, data))
        await form.close()
        if not parts:
            return _error(400, "multipart body has no image part")
        size = self.cfg.serve_input_size

        def decode() -> list[tuple[str, np.ndarray | None]]:
            return [(name, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)) for name, data in parts]

        frames = await asyncio.to_thread(decode)
        bad = [name for name, frame in frames if frame is None]
        if bad:
            return _error(400, f"parts {bad} are not decodable images (JPEG or PNG expected); nothing was run")
        now = time.time()
        reqs = [
            DetectRequest(camera_id=name, frame_seq=i, capture_ts=now, letterboxed=letterbox(frame, size))
            for i, (name, frame) in enumerate(frames)
            if frame is not None
        ]
        results = await self._forward(reqs)
        return JSONResponse(
            {
                "model": results[0].model,
                "batch_size": results[0].batch_size,
                "inference_ms": round(results[0].inference_ms, 2),
                "images": [
                    {"name": name, **_image_json(res, frame.shape)}
                    for (name, frame), res in zip(frames, results, strict=True)
                    if frame is not None
                ],
            }
        )

    def check_health(self) -> None:
        """Serve calls this periodically; an exception marks the replica unhealthy."""
        if self.model is None:
            raise RuntimeError("detector model not loaded")


def _image_json(result: DetectResult, shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "width": int(shape[1]),
        "height": int(shape[0]),
        "detections": [
            {"label": d.label, "class_id": d.class_id, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]}
            for d in result.detections
        ],
    }


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "detail": detail}}, status_code=status)


def _in_serve() -> bool:
    try:
        serve.get_replica_context()
    except RuntimeError:
        return False
    return True


def detector_route(cfg: DetectorConfig) -> str:
    """HTTP route of a detector app."""
    return f"/detect/{cfg.name or cfg.model_name}"


def build_detector_app(
    cfg: DetectorConfig,
    namespace: str | None = None,
    metrics_bind_host: str = "0.0.0.0",
    registry: S3Access | None = None,
    cache_dir: Path | None = None,
    model_version: str | None = None,
) -> serve.Application:
    """Bind the deployment with the replica resources and queue limits from config.

    ``model_version`` (default: the config's) goes into ``user_config`` only: running this again
    with another version and otherwise the same arguments is a lightweight Serve update that
    calls :meth:`Detector.reconfigure` on the live replicas instead of replacing them.

    ``max_queued_requests`` is bounded on purpose: when replicas are saturated the caller
    gets a fast back-pressure error and counts a drop, instead of queueing stale frames.
    """
    options: dict[str, Any] = {"num_cpus": cfg.num_cpus_per_replica}
    if cfg.num_gpus_per_replica > 0:
        options["num_gpus"] = cfg.num_gpus_per_replica
    if cfg.replica_resources:
        options["resources"] = dict(cfg.replica_resources)
    scaling: dict[str, Any]
    if cfg.autoscaling is not None:
        a = cfg.autoscaling
        scaling = {
            "autoscaling_config": {
                "min_replicas": a.min_replicas,
                "max_replicas": a.max_replicas,
                "target_ongoing_requests": a.target_ongoing_requests,
                "upscale_delay_s": a.upscale_delay_s,
                "downscale_delay_s": a.downscale_delay_s,
            }
        }
    else:
        scaling = {"num_replicas": cfg.num_replicas}
    dep = serve.deployment(
        Detector,
        name=DETECTOR_DEPLOYMENT,
        ray_actor_options=options,
        max_ongoing_requests=cfg.max_ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,
        health_check_period_s=10,
        health_check_timeout_s=30,
        user_config={"model_version": model_version or cfg.model_version},
        max_replicas_per_node=cfg.max_replicas_per_node,
        **scaling,
    )
    return dep.bind(cfg, namespace, metrics_bind_host, registry, str(cache_dir or "/tmp/cctv-models"))
