"""No-Ray end-to-end loop on one node: decode → preprocess on the device → detect → crowd rule.

``--cameras`` camera streams (prepared H.264 ``.mp4`` files, ``cctv footage prepare`` output,
looped forever) are decoded by a pool of ``--decode-threads`` CPU threads, with the CPU decoder or
NVDEC (``h264_cuvid`` through PyAV, the same :func:`actors.decoder.open_decoder` the ingest path
uses; it falls back to the CPU and says so). Frames are sampled (``--sample``): ``every`` decoded
frame, ``keyframe`` (keyframe-only decode: 1 frame per second at a 1 s GOP, the product's cheap
mode) or ``fps`` (decode everything, keep one frame per ``1/--analytics-fps`` s of video).

Sampled frames leave the decoder as raw planes (I420 from the CPU decoder, NV12 from NVDEC; BGR
only with ``--host-bgr`` or without PyAV, where ``cv2.VideoCapture`` reads). On the device, in
batches of ``--batch``: one host-to-device copy per frame (pinned by the decoder thread), resize
of the luma and chroma planes straight to the letterbox size, BT.601 colour conversion (linear, so
it commutes with bilinear resizing), rounding to uint8 and padding with 114: the same input the
CPU :func:`~serve_apps.detector.preprocess.letterbox` makes (checked on a few frames:
``preprocess_check``). Then the :class:`~serve_apps.detector.torch_runner.TorchDetector` forward
(fp16 on CUDA), and in a second thread its :func:`postprocess_torch` (decode and threshold on the
device, NMS on the host), boxes back to frame pixels, and a
:class:`~actors.analytics.crowd.CrowdRule` per camera on a whole-frame zone.

Measured in the same run, on the same streams, threads and sampling:

* ``decode_only``: frames/s of the decoder pool alone (per backend);
* ``detector_only``: forward img/s on a real letterboxed batch already on the device, at the same
  batch size (and forward + post-processing);
* ``e2e``: frames/s through the rule, with the time of each stage (decode core-seconds in the
  pool; host-to-device + preprocess, forward, post-processing, rule in their threads, the device
  synchronised around each);
* ``ratios``: e2e over each limit and over ``min(decode_only, detector forward)``: the issue's
  target is >= 0.8 of the latter.

Nothing here imports Ray. Writes ``<out>/e2e_loop[-<tag>].json``.

Here (CPU, seconds):
    .venv/bin/python -m benchmarks.gpu.e2e_loop --streams .cache/streams --files 'vtest.h264.*h360*' \\
        --models-dir ../shared/models --device cpu --quick --out /tmp/e2e
On a GPU node (see ``make bench-gpu``):
    python3 -m benchmarks.gpu.e2e_loop --streams B/streams --files 'town_centre*' --models-dir B/models \\
        --decoders cpu nvdec --cameras 32 --batch 64 --out $OUT --tag 1080p
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from contracts.detector import Detection
from serve_apps.detector.preprocess import letterbox
from serve_apps.detector.torch_runner import TorchDetector, load_torch_detector, postprocess_torch

try:  # PyAV is not installed on a bare GPU node unless its wheel is carried
    import av

    from actors.decoder import open_decoder

    HAVE_AV = True
    AV_ERROR = ""
except ImportError as _exc:  # pragma: no cover - depends on the node
    HAVE_AV = False
    AV_ERROR = f"{type(_exc).__name__}: {_exc}"

try:  # the rules validate their zones with pydantic, which a bare GPU node may lack
    from actors.analytics.crowd import CrowdRule
    from configs.schema import ZoneConfig

    HAVE_RULES = True
    RULES_ERROR = ""
except ImportError as _exc:  # pragma: no cover - depends on the node
    HAVE_RULES = False
    RULES_ERROR = f"{type(_exc).__name__}: {_exc}"

RESULT_NAME = "e2e_loop"
TARGET_RATIO = 0.8
PAD_VALUE = 114
Kind = Literal["i420", "nv12", "bgr"]
Backend = Literal["cpu", "nvdec"]
Sample = Literal["every", "keyframe", "fps"]


# ---------------------------------------------------------------------------------- frames


@dataclass(slots=True)
class FrameItem:
    """One sampled frame on its way to the device."""

    camera: int
    ts: float
    """Stream time in seconds (grows across loops of the file)."""
    kind: Kind
    full_range: bool
    height: int
    width: int
    data: np.ndarray | torch.Tensor
    """uint8: ``(H * 3 / 2, W)`` planes for i420/nv12, ``(H, W, 3)`` for bgr; pinned when asked."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    camera: int
    path: str
    width: int
    height: int
    fps: float


def _yuv_kind(frame: Any) -> tuple[Kind, bool] | None:
    name = frame.format.name
    if frame.width % 2 or frame.height % 2:
        return None
    if name in ("yuv420p", "yuvj420p"):
        return "i420", name == "yuvj420p" or int(frame.color_range) == 2
    if name == "nv12":
        return "nv12", int(frame.color_range) == 2
    return None


def frame_item(frame: Any, camera: int, ts: float, host_bgr: bool, pin: bool) -> FrameItem:
    """A PyAV frame as planes (or BGR), optionally copied into pinned memory for an async upload."""
    kind_range = None if host_bgr else _yuv_kind(frame)
    if kind_range is None:
        data: np.ndarray | torch.Tensor = frame.to_ndarray(format="bgr24")
        kind: Kind = "bgr"
        full = False
    else:
        kind, full = kind_range
        data = frame.to_ndarray()
    if pin:
        data = torch.from_numpy(data).pin_memory()
    return FrameItem(camera, ts, kind, full, int(frame.height), int(frame.width), data)


class PyAVReader:
    """One camera: a file demuxed and decoded in a loop with the asked decoder backend."""

    def __init__(self, camera: int, path: Path, backend: Backend, sample: Sample, analytics_fps: float) -> None:
        self.camera = camera
        self.path = path
        self.keyframe_only = sample == "keyframe"
        self.sample = sample
        self.container = av.open(str(path))
        self.stream = self.container.streams.video[0]
        choice = open_decoder(self.stream, backend, keyframe_only=self.keyframe_only)
        self.ctx = choice.codec_context
        self.backend_used: str = choice.backend
        self.note = choice.note
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        self.every_k = max(1, round(self.fps / analytics_fps)) if sample == "fps" else 1
        self.duration = float(self.stream.duration * self.stream.time_base) if self.stream.duration else 0.0
        self.loops = 0
        self.index = 0
        self._packets: Iterator[Any] = self.container.demux(self.stream)

    def _rewind(self) -> None:
        self.loops += 1
        try:
            self.container.seek(0)
            self.ctx.flush_buffers()
        except Exception:
            self.container.close()
            self.container = av.open(str(self.path))
            self.stream = self.container.streams.video[0]
            self.ctx = open_decoder(self.stream, self.backend_used, keyframe_only=self.keyframe_only).codec_context  # type: ignore[arg-type]
        self._packets = self.container.demux(self.stream)

    def frames(self) -> Iterator[tuple[Any, float]]:
        """Decoded frames that pass the sampler, with their stream time, forever."""
        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                self._rewind()
                continue
            if packet.size == 0:
                self._rewind()
                continue
            if self.keyframe_only and not packet.is_keyframe:
                continue
            for frame in self.ctx.decode(packet):
                index = self.index
                self.index += 1
                if self.sample == "fps" and index % self.every_k:
                    continue
                ts = (frame.time or 0.0) + self.loops * self.duration if self.sample == "keyframe" else index / self.fps
                yield frame, ts

    def close(self) -> None:
        self.container.close()


class Cv2Reader:
    """Fallback without PyAV: ``cv2.VideoCapture`` (CPU, BGR, every frame decoded)."""

    backend_used = "cpu"

    def __init__(self, camera: int, path: Path, sample: Sample, analytics_fps: float) -> None:
        self.camera = camera
        self.path = path
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise RuntimeError(f"cv2 cannot open {path}")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS)) or 25.0
        gop = max(1, round(self.fps))  # prepared streams have a 1 s GOP
        self.every_k = {"every": 1, "fps": max(1, round(self.fps / analytics_fps)), "keyframe": gop}[sample]
        self.note = "cv2.VideoCapture (no PyAV): every frame decoded" + (
            "; keyframe sampling approximated by one frame per GOP" if sample == "keyframe" else ""
        )
        self.index = 0

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        while True:
            sampled = self.index % self.every_k == 0
            if sampled:
                ok, image = self.cap.read()
            else:
                ok, image = self.cap.grab(), None
            if not ok:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            index = self.index
            self.index += 1
            if sampled and image is not None:
                yield image, index / self.fps

    def close(self) -> None:
        self.cap.release()


Reader = PyAVReader | Cv2Reader


def open_reader(camera: int, path: Path, backend: Backend, sample: Sample, analytics_fps: float) -> Reader:
    if HAVE_AV:
        return PyAVReader(camera, path, backend, sample, analytics_fps)
    return Cv2Reader(camera, path, sample, analytics_fps)


def make_item(reader: Reader, frame: Any, ts: float, host_bgr: bool, pin: bool) -> FrameItem:
    if isinstance(frame, np.ndarray):
        data: np.ndarray | torch.Tensor = torch.from_numpy(frame).pin_memory() if pin else frame
        return FrameItem(reader.camera, ts, "bgr", False, frame.shape[0], frame.shape[1], data)
    return frame_item(frame, reader.camera, ts, host_bgr, pin)


# ------------------------------------------------------------------------------ decoder pool


@dataclass
class DecodeCounters:
    frames: int = 0
    busy_s: float = 0.0
    """Seconds decoder threads spent decoding and converting (not waiting on a full queue)."""


@dataclass
class PoolSettings:
    backend: Backend
    sample: Sample
    analytics_fps: float
    threads: int
    host_bgr: bool
    pin: bool
    chunk: int


class DecoderPool:
    """``threads`` threads, each decoding its share of the cameras round-robin, one frame at a time.

    With ``sink`` each thread hands lists of up to ``chunk`` items to it (blocking while it is
    full: back-pressure); without, frames are only counted (the decode-only limit).
    """

    def __init__(self, files: Sequence[Path], cameras: int, settings: PoolSettings, sink: queue.Queue | None) -> None:
        self.settings = settings
        self.sink = sink
        self.stop = threading.Event()
        self.counters = [DecodeCounters() for _ in range(settings.threads)]
        self.errors: list[str] = []
        self.readers: list[Reader] = [
            open_reader(i, files[i % len(files)], settings.backend, settings.sample, settings.analytics_fps)
            for i in range(cameras)
        ]
        self._threads = [
            threading.Thread(target=self._run, args=(t,), name=f"decode-{t}", daemon=True)
            for t in range(settings.threads)
        ]

    @property
    def backends_used(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for r in self.readers:
            used[r.backend_used] = used.get(r.backend_used, 0) + 1
        return used

    @property
    def notes(self) -> list[str]:
        return sorted({r.note for r in self.readers})

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def snapshot(self) -> tuple[int, float]:
        return sum(c.frames for c in self.counters), sum(c.busy_s for c in self.counters)

    def _put(self, chunk: list[FrameItem]) -> None:
        assert self.sink is not None
        while not self.stop.is_set():
            try:
                self.sink.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self, index: int) -> None:
        s = self.settings
        mine = self.readers[index :: s.threads]
        if not mine:
            return
        counter = self.counters[index]
        iterators = [(r, r.frames()) for r in mine]
        chunk: list[FrameItem] = []
        try:
            while not self.stop.is_set():
                for reader, frames in iterators:
                    t0 = time.perf_counter()
                    frame, ts = next(frames)
                    if self.sink is not None:
                        chunk.append(make_item(reader, frame, ts, s.host_bgr, s.pin))
                    counter.busy_s += time.perf_counter() - t0
                    counter.frames += 1
                    if len(chunk) >= s.chunk:
                        self._put(chunk)
                        chunk = []
        except Exception as exc:
            self.errors.append(f"{threading.current_thread().name}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.stop.set()
        if self.sink is not None:  # unblock producers
            try:
                while True:
                    self.sink.get_nowait()
            except queue.Empty:
                pass
        for t in self._threads:
            t.join(timeout=5)
        for r in self.readers:
            r.close()


# ------------------------------------------------------------------------ device preprocess

# BT.601 YCbCr -> BGR rows (B, G, R) x (Y, Cb, Cr), limited ("tv") and full ("pc") range.
_LIMITED = ((1.164383, 2.017232, 0.0), (1.164383, -0.391762, -0.812968), (1.164383, 0.0, 1.596027))
_FULL = ((1.0, 1.772, 0.0), (1.0, -0.344136, -0.714136), (1.0, 0.0, 1.402))


def letterbox_geometry(height: int, width: int, size: int) -> tuple[float, int, int]:
    """Scale and resized size, exactly as :func:`letterbox` computes them."""
    scale = min(size / height, size / width)
    return scale, min(size, max(1, int(width * scale))), min(size, max(1, int(height * scale)))


def _resize(x: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    if x.shape[-2:] == (new_h, new_w):
        return x
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)


def planes_to_bgr(
    batch: torch.Tensor, kind: Kind, full_range: bool, height: int, width: int, new_h: int, new_w: int
) -> torch.Tensor:
    """uint8 frames of one shape and kind on the device → float32 BGR ``(N, 3, new_h, new_w)``, 0-255.

    For YUV the planes are resized first (at most the size of the output is converted); the
    colour conversion is affine, so it commutes with bilinear resizing up to the final clamp.
    """
    n = batch.shape[0]
    if kind == "bgr":
        return _resize(batch.permute(0, 3, 1, 2).float(), new_h, new_w)
    y = batch[:, :height, :].reshape(n, 1, height, width).float()
    chroma = batch[:, height:, :]
    if kind == "i420":
        uv = chroma.reshape(n, 2, height // 2, width // 2).float()
    else:  # nv12: interleaved UV rows
        uv = chroma.reshape(n, height // 2, width // 2, 2).permute(0, 3, 1, 2).float()
    y = _resize(y, new_h, new_w)
    uv = _resize(uv, new_h, new_w)
    if full_range:
        coef, y = _FULL, y
    else:
        coef, y = _LIMITED, y - 16.0
    u, v = uv[:, 0:1] - 128.0, uv[:, 1:2] - 128.0
    return torch.cat([cy * y + cu * u + cv * v for cy, cu, cv in coef], dim=1)


@dataclass(frozen=True, slots=True)
class Prepared:
    batch: torch.Tensor
    """uint8 letterboxed ``(N, S, S, 3)`` BGR on the device: what :meth:`TorchDetector.to_input` takes."""
    scales: list[float]


def preprocess_on_device(items: Sequence[FrameItem], size: int, device: torch.device) -> Prepared:
    """Upload, colour-convert, resize and pad a batch on ``device`` (grouped by frame shape)."""
    out = torch.full((len(items), size, size, 3), PAD_VALUE, dtype=torch.uint8, device=device)
    groups: dict[tuple[Kind, bool, int, int], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.kind, it.full_range, it.height, it.width), []).append(i)
    scales = [0.0] * len(items)
    for (kind, full, height, width), idx in groups.items():
        scale, new_w, new_h = letterbox_geometry(height, width, size)
        uploaded = [
            (it.data if isinstance(it.data, torch.Tensor) else torch.from_numpy(it.data)).to(device, non_blocking=True)
            for it in (items[i] for i in idx)
        ]
        stacked = torch.stack(uploaded)
        bgr = planes_to_bgr(stacked, kind, full, height, width, new_h, new_w)
        pixels = bgr.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        index = torch.tensor(idx, device=device)
        out[index, :new_h, :new_w] = pixels
        for i in idx:
            scales[i] = scale
    return Prepared(out, scales)


def to_frame_pixels(dets: Sequence[Detection], scale: float) -> list[Detection]:
    """Letterbox pixels → frame pixels (the letterbox pads bottom/right only)."""
    return [Detection(d.class_id, d.label, d.score, tuple(c / scale for c in d.box)) for d in dets]  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- rule


class CountRule:
    """Stand-in for :class:`CrowdRule` where pydantic is missing: people whose foot point is in frame."""

    def __init__(self, width: int, height: int, threshold: int = 5) -> None:
        self.width, self.height, self.threshold = width, height, threshold
        self.active = False
        self.opened = 0

    def update(self, ts: float, detections: Sequence[Detection]) -> list[object]:
        del ts
        count = sum(
            1
            for d in detections
            if d.label == "person" and 0 <= (d.box[0] + d.box[2]) / 2 < self.width and 0 <= d.box[3] <= self.height
        )
        crowd = count >= self.threshold
        opened = crowd and not self.active
        self.active = crowd
        self.opened += int(opened)
        return [object()] if opened else []


def make_rule(camera: int, width: int, height: int, threshold: int) -> Any:
    if not HAVE_RULES:
        return CountRule(width, height, threshold)
    zone = ZoneConfig(
        name="frame",
        polygon=[(0.0, 0.0), (float(width), 0.0), (float(width), float(height)), (0.0, float(height))],
        crowd_threshold_people=threshold,
        min_duration_s=1.0,
        cooldown_s=2.0,
    )
    return CrowdRule(f"cam{camera:05d}", zone)


# ------------------------------------------------------------------------------------- results


@dataclass
class DecodeOnlyResult:
    backend_asked: str
    backends_used: dict[str, int]
    notes: list[str]
    cameras: int
    threads: int
    frames: int
    wall_s: float
    fps: float
    cpu_s: float
    busy_core_s: float
    errors: list[str] = field(default_factory=list)


@dataclass
class DetectorOnlyResult:
    batch: int
    size: int
    dtype: str
    forward_iters: int
    forward_img_per_s: float
    forward_p50_ms: float
    forward_p99_ms: float
    infer_iters: int
    infer_img_per_s: float
    """Forward + :func:`postprocess_torch` (device decode/threshold, host NMS)."""
    infer_p50_ms: float
    detections_per_image: float


@dataclass
class StageTimes:
    """Seconds over the timed window; ``*_ms_per_frame`` divides by the frames that went through."""

    decode_busy_core_s: float
    h2d_preprocess_s: float
    forward_s: float
    postprocess_s: float
    rule_s: float
    wait_for_frames_s: float
    wait_for_post_s: float
    decode_ms_per_frame_core: float
    h2d_preprocess_ms_per_frame: float
    forward_ms_per_frame: float
    postprocess_ms_per_frame: float
    rule_ms_per_frame: float


@dataclass
class E2EResult:
    backend_asked: str
    backends_used: dict[str, int]
    notes: list[str]
    cameras: int
    threads: int
    batch: int
    frames: int
    batches: int
    mean_batch: float
    wall_s: float
    fps: float
    cpu_s: float
    stages: StageTimes
    detections_per_frame: float
    events_opened: int
    errors: list[str] = field(default_factory=list)


@dataclass
class Ratios:
    backend: str
    batch: int
    e2e_fps: float
    decode_only_fps: float
    detector_forward_fps: float
    e2e_over_decode: float
    e2e_over_detector: float
    limit: str
    """Which limit is lower: ``decode`` or ``detector``."""
    e2e_over_min_limit: float
    target: float
    meets_target: bool


@dataclass
class PreprocessCheck:
    frames: int
    kinds: list[str]
    max_abs_diff: int
    mean_abs_diff: float
    frac_pixels_over_8: float
    detections_cpu_letterbox: int
    detections_device_preprocess: int
    matched_iou_0_5: int


# ------------------------------------------------------------------------------------ timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, seconds: float, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def run_decode_only(
    files: Sequence[Path], cameras: int, settings: PoolSettings, warmup_s: float, seconds: float
) -> DecodeOnlyResult:
    pool = DecoderPool(files, cameras, settings, sink=None)
    try:
        pool.start()
        time.sleep(warmup_s)
        f0, b0 = pool.snapshot()
        t0, c0 = time.perf_counter(), time.process_time()
        time.sleep(seconds)
        f1, b1 = pool.snapshot()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        pool.close()
    return DecodeOnlyResult(
        backend_asked=settings.backend,
        backends_used=pool.backends_used,
        notes=pool.notes,
        cameras=cameras,
        threads=settings.threads,
        frames=f1 - f0,
        wall_s=round(wall, 3),
        fps=round((f1 - f0) / wall, 1),
        cpu_s=round(cpu, 2),
        busy_core_s=round(b1 - b0, 2),
        errors=pool.errors,
    )


def run_detector_only(det: TorchDetector, real: torch.Tensor, batch: int, seconds: float) -> DetectorOnlyResult:
    """Forward (and forward + post-processing) on ``batch`` real letterboxed frames on the device."""
    reps = -(-batch // real.shape[0])
    x = real.repeat(reps, 1, 1, 1)[:batch].contiguous()
    fwd = timed(lambda: det.run_raw_tensor(x), det.device, seconds)
    dets: list[list[Detection]] = []

    def infer() -> None:
        nonlocal dets
        dets = det.infer(x)

    inf = timed(infer, det.device, seconds / 2, warmup=1)
    f_ms, i_ms = np.asarray(fwd) * 1000, np.asarray(inf) * 1000
    return DetectorOnlyResult(
        batch=batch,
        size=det.input_size,
        dtype=str(det.dtype).removeprefix("torch."),
        forward_iters=len(fwd),
        forward_img_per_s=round(batch * len(fwd) / sum(fwd), 1),
        forward_p50_ms=round(float(np.percentile(f_ms, 50)), 3),
        forward_p99_ms=round(float(np.percentile(f_ms, 99)), 3),
        infer_iters=len(inf),
        infer_img_per_s=round(batch * len(inf) / sum(inf), 1),
        infer_p50_ms=round(float(np.percentile(i_ms, 50)), 3),
        detections_per_image=round(sum(len(d) for d in dets) / max(1, len(dets)), 2),
    )


@dataclass
class _PostCounters:
    frames: int = 0
    post_s: float = 0.0
    rule_s: float = 0.0
    detections: int = 0
    events: int = 0


def run_e2e(
    det: TorchDetector,
    files: Sequence[Path],
    cameras: int,
    settings: PoolSettings,
    batch: int,
    warmup_s: float,
    seconds: float,
    crowd_threshold: int,
) -> E2EResult:
    device = det.device
    frames_q: queue.Queue[list[FrameItem]] = queue.Queue(maxsize=max(4, 4 * batch // settings.chunk))
    post_q: queue.Queue[tuple[torch.Tensor, list[FrameItem], list[float]] | None] = queue.Queue(maxsize=2)
    pool = DecoderPool(files, cameras, settings, sink=frames_q)
    rules: dict[int, Any] = {}
    post = _PostCounters()
    errors: list[str] = []

    def post_worker() -> None:
        try:
            while True:
                job = post_q.get()
                if job is None:
                    return
                raw, items, scales = job
                t0 = time.perf_counter()
                dets = postprocess_torch(
                    raw,
                    det.input_size,
                    det.class_names,
                    score_threshold=det.score_threshold,
                    nms_iou_threshold=det.nms_iou_threshold,
                )
                frame_dets = [to_frame_pixels(d, s) for d, s in zip(dets, scales, strict=True)]
                t1 = time.perf_counter()
                for it, d in zip(items, frame_dets, strict=True):
                    rule = rules.get(it.camera)
                    if rule is None:
                        rule = rules[it.camera] = make_rule(it.camera, it.width, it.height, crowd_threshold)
                    post.events += sum(1 for tr in rule.update(it.ts, d) if getattr(tr, "phase", "opened") == "opened")
                    post.detections += len(d)
                t2 = time.perf_counter()
                post.post_s += t1 - t0
                post.rule_s += t2 - t1
                post.frames += len(items)
        except Exception as exc:
            errors.append(f"post: {type(exc).__name__}: {exc}")

    post_thread = threading.Thread(target=post_worker, name="post", daemon=True)
    post_thread.start()
    pool.start()
    pending: list[FrameItem] = []
    stage = {"pre": 0.0, "fwd": 0.0, "wait_frames": 0.0, "wait_post": 0.0}
    batches = 0
    start = time.perf_counter()
    timing_from = start + warmup_s
    end = timing_from + seconds
    snap: dict[str, Any] | None = None
    try:
        while time.perf_counter() < end:
            now = time.perf_counter()
            if snap is None and now >= timing_from:
                snap = {
                    "t": now,
                    "cpu": time.process_time(),
                    "pool": pool.snapshot(),
                    "post": asdict(post),
                    "stage": dict(stage),
                    "batches": batches,
                }
            t0 = time.perf_counter()
            while len(pending) < batch and time.perf_counter() < end:
                try:
                    pending.extend(frames_q.get(timeout=0.05))
                except queue.Empty:
                    if not any(t.is_alive() for t in pool._threads):
                        raise RuntimeError(f"all decoder threads stopped: {pool.errors}") from None
            stage["wait_frames"] += time.perf_counter() - t0
            if len(pending) < batch:
                break
            items, pending = pending[:batch], pending[batch:]
            t1 = time.perf_counter()
            prepared = preprocess_on_device(items, det.input_size, device)
            synchronize(device)
            t2 = time.perf_counter()
            raw = det.run_raw_tensor(prepared.batch)
            synchronize(device)
            t3 = time.perf_counter()
            if not post_thread.is_alive():
                raise RuntimeError(f"post-processing thread stopped: {errors}")
            post_q.put((raw, items, prepared.scales))
            t4 = time.perf_counter()
            stage["pre"] += t2 - t1
            stage["fwd"] += t3 - t2
            stage["wait_post"] += t4 - t3
            batches += 1
        final_t = time.perf_counter()
        final_cpu = time.process_time()
        final_pool = pool.snapshot()
    finally:
        pool.close()
        with contextlib.suppress(queue.Full):  # the post thread died with the queue full
            post_q.put(None, timeout=30)
        post_thread.join(timeout=30)
    if snap is None:
        raise RuntimeError("the run ended before its warm-up did")
    frames = post.frames - snap["post"]["frames"]  # counted when the rule has run, up to the join
    wall = final_t - snap["t"]
    nb = batches - snap["batches"]
    per = 1000.0 / max(1, frames)
    pre_s = stage["pre"] - snap["stage"]["pre"]
    fwd_s = stage["fwd"] - snap["stage"]["fwd"]
    post_s = post.post_s - snap["post"]["post_s"]
    rule_s = post.rule_s - snap["post"]["rule_s"]
    busy = final_pool[1] - snap["pool"][1]
    decoded = final_pool[0] - snap["pool"][0]
    # Frames through the rule in the window: the post thread may finish a batch or two after
    # final_t, so count the batches the main loop handed over instead.
    frames_window = nb * batch
    return E2EResult(
        backend_asked=settings.backend,
        backends_used=pool.backends_used,
        notes=pool.notes,
        cameras=cameras,
        threads=settings.threads,
        batch=batch,
        frames=frames_window,
        batches=nb,
        mean_batch=float(batch),
        wall_s=round(wall, 3),
        fps=round(frames_window / wall, 1) if wall > 0 else 0.0,
        cpu_s=round(final_cpu - snap["cpu"], 2),
        stages=StageTimes(
            decode_busy_core_s=round(busy, 3),
            h2d_preprocess_s=round(pre_s, 3),
            forward_s=round(fwd_s, 3),
            postprocess_s=round(post_s, 3),
            rule_s=round(rule_s, 3),
            wait_for_frames_s=round(stage["wait_frames"] - snap["stage"]["wait_frames"], 3),
            wait_for_post_s=round(stage["wait_post"] - snap["stage"]["wait_post"], 3),
            decode_ms_per_frame_core=round(busy * 1000.0 / max(1, decoded), 4),
            h2d_preprocess_ms_per_frame=round(pre_s * 1000.0 / max(1, frames_window), 4),
            forward_ms_per_frame=round(fwd_s * 1000.0 / max(1, frames_window), 4),
            postprocess_ms_per_frame=round(post_s * per, 4),
            rule_ms_per_frame=round(rule_s * per, 4),
        ),
        detections_per_frame=round((post.detections - snap["post"]["detections"]) / max(1, frames), 2),
        events_opened=post.events,
        errors=pool.errors + errors,
    )


def ratios(e2e: E2EResult, decode: DecodeOnlyResult, detector: DetectorOnlyResult) -> Ratios:
    lim_decode, lim_det = decode.fps, detector.forward_img_per_s
    low = min(lim_decode, lim_det)
    over_min = e2e.fps / low if low > 0 else 0.0
    return Ratios(
        backend=e2e.backend_asked,
        batch=e2e.batch,
        e2e_fps=e2e.fps,
        decode_only_fps=lim_decode,
        detector_forward_fps=lim_det,
        e2e_over_decode=round(e2e.fps / lim_decode, 3) if lim_decode > 0 else 0.0,
        e2e_over_detector=round(e2e.fps / lim_det, 3) if lim_det > 0 else 0.0,
        limit="decode" if lim_decode <= lim_det else "detector",
        e2e_over_min_limit=round(over_min, 3),
        target=TARGET_RATIO,
        meets_target=over_min >= TARGET_RATIO,
    )


# ------------------------------------------------------------------------- preprocess check


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def sample_frames(
    files: Sequence[Path], count: int, sample: Sample, analytics_fps: float
) -> list[tuple[FrameItem, np.ndarray]]:
    """``count`` frames (as items for the device and as BGR for the CPU letterbox), round-robin over files."""
    readers = [open_reader(i, f, "cpu", sample, analytics_fps) for i, f in enumerate(files)]
    iters = [(r, r.frames()) for r in readers]
    out: list[tuple[FrameItem, np.ndarray]] = []
    try:
        while len(out) < count:
            for reader, frames in iters:
                frame, ts = next(frames)
                item = make_item(reader, frame, ts, host_bgr=False, pin=False)
                bgr = frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="bgr24")
                out.append((item, bgr))
                if len(out) >= count:
                    break
    finally:
        for r in readers:
            r.close()
    return out


def preprocess_check(det: TorchDetector, samples: Sequence[tuple[FrameItem, np.ndarray]]) -> PreprocessCheck:
    items = [s[0] for s in samples]
    device_batch = preprocess_on_device(items, det.input_size, det.device).batch.cpu().numpy()
    cpu_batch = np.stack([letterbox(bgr, det.input_size).image for _, bgr in samples])
    diff = np.abs(device_batch.astype(np.int16) - cpu_batch.astype(np.int16))
    dets_dev = det.infer(device_batch)
    dets_cpu = det.infer(cpu_batch)
    matched = 0
    for got, ref in zip(dets_dev, dets_cpu, strict=True):
        free = list(got)
        for r in ref:
            best = max(
                (g for g in free if g.class_id == r.class_id), key=lambda g, r=r: _iou(g.box, r.box), default=None
            )
            if best is not None and _iou(best.box, r.box) > 0.5:
                free.remove(best)
                matched += 1
    return PreprocessCheck(
        frames=len(items),
        kinds=sorted({it.kind for it in items}),
        max_abs_diff=int(diff.max()),
        mean_abs_diff=round(float(diff.mean()), 3),
        frac_pixels_over_8=round(float((diff > 8).mean()), 5),
        detections_cpu_letterbox=sum(len(d) for d in dets_cpu),
        detections_device_preprocess=sum(len(d) for d in dets_dev),
        matched_iou_0_5=matched,
    )


# ------------------------------------------------------------------------------------- main


def select_files(streams: Path, patterns: Sequence[str]) -> list[Path]:
    files = sorted(
        p for p in streams.glob("*.mp4") if not patterns or any(fnmatch.fnmatch(p.name, g) for g in patterns)
    )
    if not files:
        raise SystemExit(f"no .mp4 streams in {streams} matching {list(patterns) or '*'}")
    return files


def source_info(files: Sequence[Path]) -> list[SourceInfo]:
    out = []
    for i, f in enumerate(files):
        cap = cv2.VideoCapture(str(f))
        out.append(
            SourceInfo(
                i,
                f.name,
                int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                round(float(cap.get(cv2.CAP_PROP_FPS)), 3),
            )
        )
        cap.release()
    return out


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "av": av.__version__ if HAVE_AV else None,
        "av_error": AV_ERROR or None,
        "h264_cuvid_in_av": ("h264_cuvid" in av.codecs_available) if HAVE_AV else None,
        "rules": "actors.analytics.crowd.CrowdRule" if HAVE_RULES else f"CountRule stand-in ({RULES_ERROR})",
        "cpus": os.cpu_count(),
        "device": str(device),
        "ray_imported": "ray" in sys.modules,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=Path, required=True, help="directory of prepared .mp4 camera streams")
    p.add_argument("--files", nargs="*", default=[], help="file name globs inside --streams (default: all)")
    p.add_argument("--models-dir", type=Path, required=True)
    p.add_argument("--model", default="yolox_nano")
    p.add_argument("--size", type=int, default=416)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tag", default="", help="suffix of the JSON file name")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--fp32", action="store_true", help="run the detector in fp32 (default fp16 on CUDA)")
    p.add_argument("--decoders", nargs="+", choices=["cpu", "nvdec"], default=["cpu", "nvdec"])
    p.add_argument("--cameras", type=int, default=32)
    p.add_argument("--decode-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--sample", choices=["every", "keyframe", "fps"], default="every")
    p.add_argument("--analytics-fps", type=float, default=1.0, help="with --sample fps")
    p.add_argument("--batch", type=int, nargs="+", default=[64])
    p.add_argument("--host-bgr", action="store_true", help="convert to BGR on the CPU (PyAV bgr24) instead")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per decode-only and e2e run")
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--detector-seconds", type=float, default=3.0)
    p.add_argument("--crowd-threshold", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=240.0, help="start no measurement that would end after this")
    p.add_argument("--quick", action="store_true", help="CPU dry run: 2 cameras, 1 thread, batch 2, 2 s runs")
    args = p.parse_args(argv)
    if args.quick:
        args.cameras = min(args.cameras, 2)
        args.decode_threads = 1
        args.batch = [2]
        args.seconds = 2.0
        args.warmup_s = 1.0
        args.detector_seconds = 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_s
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but CUDA is not available (use --device cpu --quick here)")
        torch.backends.cudnn.benchmark = True
    files = select_files(args.streams, args.files)
    pin = device.type == "cuda"
    det = load_torch_detector(
        args.models_dir,
        args.model,
        input_size=args.size,
        device=args.device,
        half=device.type == "cuda" and not args.fp32,
    )
    report: dict[str, Any] = {
        "benchmark": RESULT_NAME,
        "tag": args.tag,
        "command": " ".join(sys.argv),
        "environment": environment(device),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": {"name": args.model, "id": det.model_id, "input_size": det.input_size, "dtype": str(det.dtype)},
        "sources": [asdict(s) for s in source_info(files)],
        "preprocess_check": None,
        "detector_only": [],
        "decode_only": [],
        "e2e": [],
        "ratios": [],
        "skipped": [],
        "errors": [],
    }
    print(
        f"{report['environment'].get('device_name', 'cpu')}: {len(files)} files, {args.cameras} cameras, "
        f"{args.decode_threads} decode threads, {det!r}",
        flush=True,
    )

    samples = sample_frames(files, max(4, min(16, max(args.batch))), args.sample, args.analytics_fps)
    check = preprocess_check(det, samples[:4])
    report["preprocess_check"] = asdict(check)
    print(f"preprocess check: {asdict(check)}", flush=True)
    real = preprocess_on_device([s[0] for s in samples], det.input_size, device).batch

    detector: dict[int, DetectorOnlyResult] = {}
    for b in args.batch:
        if time.monotonic() + 2 * args.detector_seconds > deadline:
            report["skipped"].append({"stage": "detector_only", "batch": b, "why": "--budget-s"})
            continue
        r = run_detector_only(det, real, b, args.detector_seconds)
        detector[b] = r
        report["detector_only"].append(asdict(r))
        print(f"detector only b={b}: forward {r.forward_img_per_s} img/s, +post {r.infer_img_per_s} img/s", flush=True)

    run_s = args.warmup_s + args.seconds + 2.0
    for backend in args.decoders:
        threads = max(1, min(args.decode_threads, args.cameras))
        settings = PoolSettings(
            backend=backend,
            sample=args.sample,
            analytics_fps=args.analytics_fps,
            threads=threads,
            host_bgr=args.host_bgr,
            pin=False,
            chunk=1,
        )
        if time.monotonic() + run_s > deadline:
            report["skipped"].append({"stage": "decode_only", "backend": backend, "why": "--budget-s"})
            continue
        try:
            dec = run_decode_only(files, args.cameras, settings, args.warmup_s, args.seconds)
        except Exception as exc:
            report["errors"].append(
                {"stage": "decode_only", "backend": backend, "error": f"{type(exc).__name__}: {exc}"[:500]}
            )
            continue
        report["decode_only"].append(asdict(dec))
        print(f"decode only {backend} (used {dec.backends_used}): {dec.fps} fps, cpu {dec.cpu_s} s", flush=True)
        for b in args.batch:
            if b not in detector:
                continue
            if time.monotonic() + run_s > deadline:
                report["skipped"].append({"stage": "e2e", "backend": backend, "batch": b, "why": "--budget-s"})
                continue
            e2e_settings = PoolSettings(**{**asdict(settings), "pin": pin, "chunk": max(1, min(16, b // threads))})
            try:
                e2e = run_e2e(
                    det, files, args.cameras, e2e_settings, b, args.warmup_s, args.seconds, args.crowd_threshold
                )
            except Exception as exc:
                report["errors"].append(
                    {"stage": "e2e", "backend": backend, "batch": b, "error": f"{type(exc).__name__}: {exc}"[:500]}
                )
                continue
            rat = ratios(e2e, dec, detector[b])
            report["e2e"].append(asdict(e2e))
            report["ratios"].append(asdict(rat))
            print(
                f"e2e {backend} b={b}: {e2e.fps} fps ({rat.e2e_over_min_limit:.2f} of "
                f"min(decode {rat.decode_only_fps}, "
                f"detector {rat.detector_forward_fps}); limit {rat.limit}; target {TARGET_RATIO}: "
                f"{'met' if rat.meets_target else 'NOT met'}); stages ms/frame: pre "
                f"{e2e.stages.h2d_preprocess_ms_per_frame}, fwd {e2e.stages.forward_ms_per_frame}, post "
                f"{e2e.stages.postprocess_ms_per_frame}, rule {e2e.stages.rule_ms_per_frame}, decode/core "
                f"{e2e.stages.decode_ms_per_frame_core}",
                flush=True,
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["environment"]["ray_imported"] = "ray" in sys.modules
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    out_path = args.out / (f"{RESULT_NAME}-{args.tag}.json" if args.tag else f"{RESULT_NAME}.json")
    out_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(
        f"wrote {out_path} ({report['elapsed_s']} s; {len(report['skipped'])} skipped, {len(report['errors'])} errors)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
