"""``cctv plan``: nodes, cores, GPUs and network a camera estate needs, from measured figures.

Every input is either read from a benchmark result (``benchmarks/results/*.json``, or a GPU result
written by ``benchmarks/gpu/torch_detector_check.py``) and printed with the file and JSON key it
came from, or is an explicit assumption (a flag with a stated default) printed as such. Nothing
measured is typed into this module.

The model, per camera (``c`` cameras, source ``fps``, analytics ``a`` fps):

* **decode, live RTSP** where ``ingest_rtsp.json`` measured it (its resolution, keyframe mode): the worst
  point that kept up of the product's reader for ``--receiver`` (``ours`` = FFmpeg, ``ours_loop`` = the
  one-loop receiver), split into keyframe decode (``keyframe_decode_ms`` of the same stream, scaled by
  ``1 / gop_s``) and the rest (receive, demux, ring; scaled by ``fps``).
* **decode** otherwise, CPU-s per camera-second = ``1 / cameras_per_core`` (``ingest.json``
  ``cameras_per_core_derived.<res>.ours_<mode>``, measured unpaced at the file's fps and 1 s GOP),
  rescaled to the target: ``sampled``/``all`` decode every frame, so cost scales with ``fps``;
  ``keyframe`` decodes one frame per GOP, so cost scales with ``1 / gop_s``. Plus a real-time
  per-packet overhead derived from the paced check in the same file
  (``realtime_validation``: ``1/validated - 1/derived`` at the file's packet rate), times ``fps``.
* **inference** images/s = ``c * a * (1 - motion_skip_frac)``; CPU images/s per core from
  ``inference.json`` (best ``serve_handle_list`` point — the shards' list calls — else
  ``serve_handle``, / ``settings.replica_num_cpus``), scaled by the fastest CPU backend of
  ``backends.json`` that agrees with onnxruntime (its best images/s per core / onnxruntime's, one core
  each; its serving overhead is assumed equal to onnxruntime's); GPU images/s
  only from a GPU result file or an explicit, labelled ``--gpu-images-per-s``.
* **network**: camera streams in (``c * bitrate``; bitrate is an assumption unless given), and
  letterboxed uint8 frames shard → detector (``inference.json settings.letterboxed_bytes``). With
  ``--routing same_node_first`` (the default, as ``cluster.detector_routing``) shards and detector replicas
  share nodes, so those frames never leave a node: the network carries camera bitrate only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

Mode = Literal["keyframe", "sampled", "all"]
MODES: tuple[Mode, ...] = ("keyframe", "sampled", "all")

INGEST_FILE = "ingest.json"
INGEST_RTSP_FILE = "ingest_rtsp.json"
# ingest_rtsp.json reader per --receiver: the product's CameraStream on FFmpeg or on the receive loop.
_RTSP_READER: Mapping[str, str] = {"ffmpeg": "ours", "loop": "ours_loop"}
INFERENCE_FILE = "inference.json"
BACKENDS_FILE = "backends.json"
AGREEMENT_MIN = 0.99  # share of onnxruntime's detections a backend must reproduce to be sized on
RUN_DEMO_FILE = "run_demo.json"

# Assumed stream bitrates (Mbit/s) when neither the results nor the user give one: typical
# H.264 CCTV settings (substream 360p ~0.5, 720p ~2, 1080p ~4 Mbit/s). Labelled as assumptions.
DEFAULT_BITRATE_MBPS: Mapping[str, float] = {"360p": 0.5, "720p": 2.0, "1080p": 4.0}

# Ingest figure key per decode mode, and the raw loop the ratio was matched against.
_INGEST_SERIES: Mapping[Mode, str] = {"keyframe": "ours_keyframe", "sampled": "ours_sampled", "all": "ours_all"}
_INGEST_FILE_KIND: Mapping[Mode, str] = {"keyframe": "keyframe", "sampled": "decode", "all": "decode"}


class PlanInputError(ValueError):
    """A result file or key the plan needs is missing or malformed (the message names both)."""


@dataclass(frozen=True)
class Figure:
    """A number read from a result file: where from, exactly."""

    name: str
    value: float
    unit: str
    source: str
    key: str
    note: str = ""


@dataclass(frozen=True)
class Assumption:
    """A number not measured here: its value and why it is what it is."""

    name: str
    value: float | str
    unit: str
    why: str


@dataclass(frozen=True)
class PlanRequest:
    """What the user asks to size."""

    cameras: int
    resolution: str
    fps: float
    analytics_fps: float
    mode: Mode
    gop_s: float | None = None
    bitrate_mbps: float | None = None
    motion_skip_frac: float = 0.0
    node_cores: int = 32
    reserved_cores_per_node: float = 2.0
    cpu_utilisation: float = 0.75
    gpus_per_node: int = 1
    gpu_utilisation: float = 0.7
    cpu_cores_per_gpu_replica: float = 2.0
    spare_nodes: int = 1
    gpu_images_per_s: float | None = None
    gpu_result: Path | None = None
    gpu_input_size_px: int | None = None
    pre_roll_s: float = 5.0
    receiver: Literal["ffmpeg", "loop"] = "ffmpeg"
    routing: Literal["same_node_first", "any_node"] = "same_node_first"

    def __post_init__(self) -> None:
        checks = [
            (self.cameras >= 1, "cameras must be >= 1"),
            (self.fps > 0, "fps must be > 0"),
            (self.analytics_fps > 0, "analytics fps must be > 0"),
            (self.analytics_fps <= self.fps, "analytics fps cannot exceed the camera fps"),
            (self.mode in MODES, f"mode must be one of {MODES}"),
            (self.gop_s is None or self.gop_s > 0, "gop_s must be > 0"),
            (self.bitrate_mbps is None or self.bitrate_mbps > 0, "bitrate must be > 0"),
            (0 <= self.motion_skip_frac < 1, "motion_skip_frac must be in [0, 1)"),
            (self.node_cores >= 1, "node_cores must be >= 1"),
            (0 <= self.reserved_cores_per_node < self.node_cores, "reserved cores must be < node cores"),
            (0 < self.cpu_utilisation <= 1, "cpu utilisation must be in (0, 1]"),
            (0 < self.gpu_utilisation <= 1, "gpu utilisation must be in (0, 1]"),
            (self.gpus_per_node >= 1, "gpus_per_node must be >= 1"),
            (self.receiver in _RTSP_READER, f"receiver must be one of {tuple(_RTSP_READER)}"),
            (self.routing in ("same_node_first", "any_node"), "routing must be same_node_first or any_node"),
            (self.spare_nodes >= 0, "spare_nodes must be >= 0"),
            (self.gpu_images_per_s is None or self.gpu_images_per_s > 0, "gpu images/s must be > 0"),
            (
                self.gpu_images_per_s is None or self.gpu_result is None,
                "give either --gpu-result or --gpu-images-per-s, not both",
            ),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class NodeGroup:
    """One kind of node the plan asks for."""

    name: str
    nodes: int
    cores_per_node: int
    gpus_per_node: int
    role: str


@dataclass(frozen=True)
class Plan:
    """The answer, with everything it was computed from."""

    request: PlanRequest
    figures: tuple[Figure, ...]
    assumptions: tuple[Assumption, ...]
    notes: tuple[str, ...]
    decode_cpu_s_per_camera_s: float
    decode_cameras_per_core: float
    decode_cores: float
    inference_images_per_s: float
    gpu_measured: bool
    gpu_images_per_s_per_gpu: float | None
    gpus: int
    inference_cpu_cores: float
    cpu_images_per_s_per_core: float
    cpu_backend: str
    cpu_only_inference_cores: float
    suggested_num_shards: int
    suggested_shard_num_cpus: float
    cameras_per_shard: int
    node_groups: tuple[NodeGroup, ...]
    total_nodes: int
    total_cores: int
    total_gpus: int
    camera_ingest_gbit_s: float
    shard_to_detector_gbit_s: float
    ingest_gbit_s_per_decode_node: float
    detector_in_gbit_s_per_inference_node: float
    frames_over_network_gbit_s: float
    preroll_ring_gib_total: float
    demo_check: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["request"]["gpu_result"] = str(self.request.gpu_result) if self.request.gpu_result else None
        return out


# --------------------------------------------------------------------------------------- reading


class _Doc:
    """A JSON result file whose reads are traced as Figures."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        try:
            self.data: Any = json.loads(path.read_text())
        except FileNotFoundError:
            raise PlanInputError(f"{path}: result file not found (run the benchmark that writes it)") from None
        except json.JSONDecodeError as exc:
            raise PlanInputError(f"{path}: not valid JSON ({exc})") from None

    def get(self, key: str) -> Any:
        node = self.data
        for part in key.split("."):
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise PlanInputError(f"{self.label}: key {key!r} not found (at {part!r})") from None
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise PlanInputError(f"{self.label}: key {key!r} not found (at {part!r})")
        return node

    def number(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PlanInputError(f"{self.label}: key {key!r} is {value!r}, not a finite number")
        return float(value)

    def figure(self, name: str, key: str, unit: str, note: str = "") -> Figure:
        return Figure(name=name, value=self.number(key), unit=unit, source=self.label, key=key, note=note)


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _open(results_dir: Path, name: str) -> _Doc:
    path = results_dir / name
    return _Doc(path, _label(path))


# ------------------------------------------------------------------------------------------ model


def _decode_figures(ingest: _Doc, req: PlanRequest, figs: list[Figure], assume: list[Assumption], notes: list[str]):
    resolutions = sorted(ingest.get("cameras_per_core_derived"))
    if req.resolution not in resolutions:
        raise PlanInputError(f"{ingest.label}: no figures for resolution {req.resolution!r} (has {resolutions})")
    series = _INGEST_SERIES[req.mode]
    derived = ingest.figure(
        f"decode cameras/core, {req.resolution} {req.mode} (unpaced)",
        f"cameras_per_core_derived.{req.resolution}.{series}",
        "cameras/core",
        "CameraStream per CPU-second, one core, median of runs",
    )
    kind = _INGEST_FILE_KIND[req.mode]
    measured_fps = ingest.figure(
        "measured stream fps", f"files.{req.resolution}.{kind}.fps", "frames/s", "the benchmark file's frame rate"
    )
    measured_gop = ingest.figure("measured GOP", "settings.gop_s", "s")
    measured_afps = ingest.figure("measured analytics fps", "settings.analytics_fps", "frames/s")
    figs += [derived, measured_fps, measured_gop, measured_afps]

    gop_s = req.gop_s
    if gop_s is None:
        gop_s = measured_gop.value
        assume.append(
            Assumption("camera GOP", gop_s, "s", "not given (--gop-s): cameras assumed to use the benchmark's GOP")
        )
    if req.mode == "keyframe":
        # One decoded frame per GOP: cost follows the keyframe rate, not the frame rate.
        scale = gop_s / measured_gop.value
        rule = f"keyframe: decode cost x (measured GOP {measured_gop.value:g} s / camera GOP {gop_s:g} s)"
        if req.analytics_fps > 1.0 / gop_s + 1e-9:
            notes.append(
                f"keyframe mode gives at most {1.0 / gop_s:g} analysed frames/s per camera (1/GOP); "
                f"--analytics-fps {req.analytics_fps:g} cannot be met in this mode: use sampled or a shorter GOP"
            )
    else:
        scale = measured_fps.value / req.fps
        rule = f"{req.mode}: every frame decoded, cost x (camera fps {req.fps:g} / measured {measured_fps.value:.2f})"
        if abs(req.analytics_fps - measured_afps.value) > 1e-9:
            notes.append(
                f"BGR conversion was measured at {measured_afps.value:g} analysed fps; at {req.analytics_fps:g} "
                "the conversion share of the decode cost is not rescaled"
            )
    notes.append(f"decode scaling rule: {rule}")
    base_cost = 1.0 / (derived.value * scale)

    # Real-time overhead per packet, from the paced check (file replay at native rate).
    checks = ingest.get("realtime_validation")
    kept = [
        (i, c)
        for i, c in enumerate(checks)
        if c.get("keeps_up") and c.get("resolution") and c.get("decode_mode") and c.get("cameras_per_core")
    ]
    overhead_per_packet_s = 0.0
    if kept:
        i, check = min(kept, key=lambda ic: ic[1]["cameras_per_core"])
        res, mode = check["resolution"], check["decode_mode"]
        validated = ingest.figure(
            f"paced real-time cameras/core, {res} {mode} (worst run that kept up, {check['cameras']} cameras)",
            f"realtime_validation.{i}.cameras_per_core",
            "cameras/core",
        )
        ref = ingest.figure(
            f"unpaced cameras/core {res} {mode} (same file)",
            f"cameras_per_core_derived.{res}.{_INGEST_SERIES[mode]}",
            "cameras/core",
        )
        ref_fps = ingest.figure(
            f"paced-check stream fps {res}", f"files.{res}.{_INGEST_FILE_KIND[mode]}.fps", "frames/s"
        )
        figs += [validated, ref, ref_fps]
        overhead_per_packet_s = max(0.0, (1.0 / validated.value - 1.0 / ref.value) / ref_fps.value)
        assume.append(
            Assumption(
                "real-time overhead per packet",
                round(overhead_per_packet_s * 1e6, 1),
                "CPU-us/packet",
                f"(1/{validated.value:.1f} - 1/{ref.value:.1f}) / {ref_fps.value:.2f} fps from the paced file "
                "replay; stands in for RTSP receive cost and is applied to every resolution and mode",
            )
        )
    else:
        notes.append(f"{ingest.label}: no paced real-time check that kept up: no real-time overhead added")
    cost = base_cost + overhead_per_packet_s * req.fps
    return cost


def _live_rtsp_cost(
    results_dir: Path, req: PlanRequest, figs: list[Figure], assume: list[Assumption], notes: list[str]
) -> float | None:
    """CPU-s per camera-second of live RTSP cameras from ``ingest_rtsp.json``, or None where it has no figure."""
    path = results_dir / INGEST_RTSP_FILE
    if not path.is_file():
        notes.append(f"{_label(path)} missing: decode sized from the file replay of {INGEST_FILE}")
        return None
    doc = _Doc(path, _label(path))
    height = doc.number("stream.height_px")
    res = f"{height:g}p"
    if req.mode != "keyframe" or req.resolution != res:
        notes.append(
            f"{doc.label} measures live RTSP at {res} keyframe only: {req.resolution} {req.mode} decode sized from "
            f"the file replay of {INGEST_FILE}"
        )
        return None
    reader = _RTSP_READER[req.receiver]
    points = doc.get("points")
    kept = [
        (i, p)
        for i, p in enumerate(points)
        if p.get("reader") == reader and p.get("keeps_up") and p.get("cameras_per_core")
    ]
    if not kept:
        notes.append(f"{doc.label}: no point of reader {reader!r} kept up: decode sized from {INGEST_FILE}")
        return None
    i, point = min(kept, key=lambda ip: ip[1]["cameras_per_core"])
    live = doc.figure(
        f"live RTSP cameras/core, {res} keyframe, {reader} ({point['transport']}, {point['cameras']} cameras)",
        f"points.{i}.cameras_per_core",
        "cameras/core",
        "worst point of this reader that kept up; simulator CPU not counted",
    )
    decode_ms = doc.figure("keyframe decode, same stream", "keyframe_decode_ms.decode", "CPU-ms/keyframe")
    bgr_ms = doc.figure("keyframe BGR conversion, same stream", "keyframe_decode_ms.bgr", "CPU-ms/keyframe")
    fps = doc.figure("live stream fps", "stream.fps", "frames/s")
    gop = doc.figure("live stream GOP", "stream.gop_s", "s")
    figs += [live, decode_ms, bgr_ms, fps, gop]
    gop_s = req.gop_s
    if gop_s is None:
        gop_s = gop.value
        assume.append(
            Assumption("camera GOP", gop_s, "s", "not given (--gop-s): cameras assumed to use the benchmark's GOP")
        )
    decode_part_s = (decode_ms.value + bgr_ms.value) / 1000.0 / gop.value
    receive_part_s = max(0.0, 1.0 / live.value - decode_part_s)
    cost = receive_part_s * req.fps / fps.value + decode_part_s * gop.value / gop_s
    notes.append(
        f"decode sized on live RTSP ({reader}, --receiver {req.receiver}): receive+demux+ring "
        f"{receive_part_s * 1e3:.2f} CPU-ms/camera-s x (camera fps {req.fps:g} / {fps.value:.2f}) + keyframe decode "
        f"{decode_part_s * 1e3:.2f} x (GOP {gop.value:g} s / {gop_s:g} s); bitrate differences not rescaled"
    )
    if req.analytics_fps > 1.0 / gop_s + 1e-9:
        notes.append(
            f"keyframe mode gives at most {1.0 / gop_s:g} analysed frames/s per camera (1/GOP); "
            f"--analytics-fps {req.analytics_fps:g} cannot be met in this mode: use sampled or a shorter GOP"
        )
    return cost


def _cpu_inference(inference: _Doc, figs: list[Figure]) -> tuple[float, float]:
    # The shards' path: lists of frames per handle call (older result files: single-frame calls).
    results = inference.get("results")
    name = "serve_handle_list" if "serve_handle_list" in results else "serve_handle"
    series = results[name]
    best_batch = max(series, key=lambda b: series[b]["images_per_s"])
    served = inference.figure(
        f"CPU detector images/s behind a Serve handle ({name}, best, batch {best_batch})",
        f"results.{name}.{best_batch}.images_per_s",
        "images/s",
        str(inference.get("model")) + ", " + str(inference.get("backend")),
    )
    cores = inference.figure("CPU detector replica cores", "settings.replica_num_cpus", "cores")
    raw = inference.get("results.raw")
    raw_batch = max(raw, key=lambda b: raw[b]["images_per_s"])
    figs += [
        served,
        cores,
        inference.figure(
            f"CPU detector raw images/s (best, batch {raw_batch}; for reference)",
            f"results.raw.{raw_batch}.images_per_s",
            "images/s",
        ),
    ]
    letterboxed = inference.figure(
        "letterboxed frame bytes (shard -> detector)", "settings.letterboxed_bytes", "bytes/frame"
    )
    figs.append(letterboxed)
    return served.value / cores.value, letterboxed.value


def _best_cpu_backend(
    results_dir: Path, model: str, figs: list[Figure], assume: list[Assumption], notes: list[str]
) -> tuple[str, float]:
    """The fastest CPU backend in ``backends.json`` that agrees with onnxruntime, and its speed-up over it.

    ``(onnxruntime, 1.0)`` when the file is missing or nothing agreeing beats onnxruntime.
    """
    path = results_dir / BACKENDS_FILE
    if not path.is_file():
        notes.append(f"{BACKENDS_FILE} not measured: CPU inference sized on onnxruntime")
        return "onnxruntime", 1.0
    doc = _Doc(path, _label(path))
    key = f"results.{model}.backends"
    backends = doc.get(key)
    if "onnxruntime" not in backends:
        raise PlanInputError(f"{doc.label}: {key} has no onnxruntime entry to compare the others with")
    ratios = {
        name: doc.number(f"{key}.{name}.agreement_with_onnxruntime.match_ratio") if name != "onnxruntime" else 1.0
        for name in backends
    }
    agreeing = [name for name, ratio in ratios.items() if ratio >= AGREEMENT_MIN]
    for name in sorted(set(backends) - set(agreeing)):
        notes.append(
            f"{BACKENDS_FILE}: {name} reproduces only {ratios[name]:.1%} of onnxruntime's detections: not sized on"
        )
    speed = {name: doc.number(f"{key}.{name}.best.images_per_s_per_core") for name in agreeing}
    best = max(agreeing, key=lambda name: speed[name])
    figs.append(
        doc.figure(
            "CPU detector images/s per core, onnxruntime (raw, 1 thread)",
            f"{key}.onnxruntime.best.images_per_s_per_core",
            "images/s",
        )
    )
    if best == "onnxruntime":
        notes.append(
            f"{BACKENDS_FILE}: onnxruntime is the fastest CPU backend measured here ({', '.join(sorted(speed))})"
        )
        return best, 1.0
    figs.append(
        doc.figure(
            f"CPU detector images/s per core, {best} (raw, 1 thread; agrees with onnxruntime)",
            f"{key}.{best}.best.images_per_s_per_core",
            "images/s",
        )
    )
    assume.append(
        Assumption(
            f"{best} serving overhead",
            "= onnxruntime's",
            "",
            f"the served figure is onnxruntime's x {speed[best] / speed['onnxruntime']:.2f} ({best} raw / onnxruntime "
            "raw, one core each): set detector.backend: " + best,
        )
    )
    return best, speed[best] / speed["onnxruntime"]


def read_gpu_result(path: Path, input_size_px: int) -> tuple[Figure, list[str]]:
    """Best GPU images/s for ``input_size_px`` from a ``torch_detector_check.json``.

    Prefers ``end_to_end`` points (host frames in, detections out) over ``forward`` ones,
    fp16 over fp32, and uncompiled over compiled (what the deployment runs by default).
    """
    doc = _Doc(path, _label(path))
    env = doc.get("environment") if isinstance(doc.data, dict) and "environment" in doc.data else {}
    device = str(env.get("device_name", "?"))
    if device == "cpu" or not str(env.get("device", "cuda")).startswith("cuda"):
        raise PlanInputError(f"{doc.label}: measured on {device!r}, not a GPU: not a GPU figure")
    points = doc.get("throughput")
    if not isinstance(points, list) or not points:
        raise PlanInputError(f"{doc.label}: 'throughput' holds no points")

    def rank(p: dict[str, Any]) -> tuple[int, int, int, float]:
        return (
            p.get("scope") == "end_to_end",
            p.get("precision") == "fp16",
            not p.get("compiled", False),
            float(p.get("img_per_s", 0.0)),
        )

    candidates = [(i, p) for i, p in enumerate(points) if p.get("size") == input_size_px and "img_per_s" in p]
    if not candidates:
        sizes = sorted({p.get("size") for p in points})
        raise PlanInputError(f"{doc.label}: no throughput point at size {input_size_px} (has {sizes})")
    i, best = max(candidates, key=lambda ip: rank(ip[1]))
    fig = doc.figure(
        f"GPU detector images/s ({device}, {best.get('scope')} {best.get('precision')}, batch {best.get('batch')}, "
        f"size {input_size_px}{', compiled' if best.get('compiled') else ''})",
        f"throughput.{i}.img_per_s",
        "images/s/GPU",
        "torch_detector_check.py, one process without Ray or Serve",
    )
    notes = ["GPU figure is a runner measurement without Serve; Serve's per-call cost on a GPU node is unmeasured"]
    return fig, notes


def make_plan(req: PlanRequest, results_dir: Path = DEFAULT_RESULTS_DIR) -> Plan:
    """Size the estate in ``req`` from the result files in ``results_dir`` (pure: reads files, starts nothing)."""
    figs: list[Figure] = []
    assume: list[Assumption] = []
    notes: list[str] = []
    ingest = _open(results_dir, INGEST_FILE)
    inference = _open(results_dir, INFERENCE_FILE)

    # ---- decode
    live = _live_rtsp_cost(results_dir, req, figs, assume, notes)
    cost = live if live is not None else _decode_figures(ingest, req, figs, assume, notes)
    assume.append(
        Assumption(
            "CPU utilisation target",
            req.cpu_utilisation,
            "fraction",
            "headroom for bursts, reconnect storms and rebalancing after a node loss (--cpu-utilisation)",
        )
    )
    decode_cores = req.cameras * cost / req.cpu_utilisation

    # ---- inference
    images_per_s = req.cameras * req.analytics_fps * (1.0 - req.motion_skip_frac)
    if req.motion_skip_frac:
        assume.append(
            Assumption("motion gate skip fraction", req.motion_skip_frac, "fraction", "given (--motion-skip-frac)")
        )
    cpu_img_per_core, letterboxed_bytes = _cpu_inference(inference, figs)
    model = str(inference.get("model")).split("@")[0]
    cpu_backend, backend_speedup = _best_cpu_backend(results_dir, model, figs, assume, notes)
    cpu_img_per_core *= backend_speedup
    cpu_only_cores = images_per_s / cpu_img_per_core / req.cpu_utilisation

    measured_size = round(math.sqrt(letterboxed_bytes / 3))
    input_size = req.gpu_input_size_px or measured_size
    if input_size != measured_size:
        letterboxed_bytes = letterboxed_bytes * (input_size / measured_size) ** 2
        notes.append(f"frame bytes rescaled from {measured_size} px to {input_size} px input")

    gpu_fig: float | None = None
    gpu_measured = False
    if req.gpu_result is not None:
        fig, gnotes = read_gpu_result(req.gpu_result, input_size)
        figs.append(fig)
        notes.extend(gnotes)
        gpu_fig, gpu_measured = fig.value, True
    elif req.gpu_images_per_s is not None:
        gpu_fig = req.gpu_images_per_s
        assume.append(
            Assumption(
                "GPU detector images/s per GPU",
                gpu_fig,
                "images/s/GPU",
                "ASSUMPTION given by --gpu-images-per-s: not measured by this project's benchmarks",
            )
        )
    else:
        notes.append(
            "GPU throughput is UNMEASURED (no --gpu-result from benchmarks/gpu/torch_detector_check.py, no "
            "--gpu-images-per-s): inference is sized on CPU cores only"
        )

    gpus = 0
    inference_cpu_cores = cpu_only_cores
    if gpu_fig is not None:
        assume.append(
            Assumption(
                "GPU utilisation target",
                req.gpu_utilisation,
                "fraction",
                "batches are not always full; Serve overhead on GPU unmeasured (--gpu-utilisation)",
            )
        )
        gpus = max(1, math.ceil(images_per_s / (gpu_fig * req.gpu_utilisation)))
        assume.append(
            Assumption(
                "CPU cores per GPU replica",
                req.cpu_cores_per_gpu_replica,
                "cores",
                "host side of a GPU replica (request handling, NMS); unmeasured (--cpu-cores-per-gpu)",
            )
        )
        inference_cpu_cores = gpus * req.cpu_cores_per_gpu_replica

    # ---- shards: one actor per core (DESIGN: DecoderShard 1 CPU each)
    cameras_per_core = 1.0 / cost
    shard_cpus = 1.0
    cameras_per_shard = max(1, math.floor(cameras_per_core * req.cpu_utilisation * shard_cpus))
    num_shards = math.ceil(req.cameras / cameras_per_shard)

    # ---- nodes
    usable = req.node_cores - req.reserved_cores_per_node
    assume += [
        Assumption("cores per node", req.node_cores, "cores", "node size to plan for (--node-cores)"),
        Assumption(
            "cores reserved per node",
            req.reserved_cores_per_node,
            "cores",
            "raylet, object store, Serve proxy, metrics exporters (--reserved-cores-per-node)",
        ),
        Assumption("spare nodes per group", req.spare_nodes, "nodes", "N+k: survive a node loss (--spare-nodes)"),
    ]
    groups = [NodeGroup("head", 1, req.node_cores, 0, "GCS, Serve controller, control API, CameraController")]
    if gpus:
        assume.append(Assumption("GPUs per node", req.gpus_per_node, "GPUs", "node shape (--gpus-per-node)"))
    if req.routing == "same_node_first":
        # Shards and their detector replicas on the same nodes: frames never leave the node that decoded them.
        if gpus:
            host_cores = req.gpus_per_node * req.cpu_cores_per_gpu_replica
            decode_usable = usable - host_cores
            if decode_usable <= 0:
                raise PlanInputError(
                    f"a {req.node_cores}-core node with {req.reserved_cores_per_node:g} reserved and "
                    f"{host_cores:g} for its GPU replicas has no core left to decode: use larger nodes or --routing "
                    "any_node"
                )
            nodes = max(math.ceil(num_shards * shard_cpus / decode_usable), math.ceil(gpus / req.gpus_per_node))
            idle = nodes * req.gpus_per_node - gpus
            if idle > 0:
                notes.append(
                    f"same_node_first puts a GPU replica beside every node's shards: {idle} GPU(s) more than the "
                    "load needs (fewer GPUs per node, or --routing any_node with separate GPU nodes, trades that "
                    "for frames on the network)"
                )
            gpus = nodes * req.gpus_per_node
            inference_cpu_cores = gpus * req.cpu_cores_per_gpu_replica
            role = f"{num_shards} DecoderShard actors + a detector replica per GPU, same node"
            groups.append(NodeGroup("decode+gpu", nodes + req.spare_nodes, req.node_cores, req.gpus_per_node, role))
        else:
            nodes = math.ceil((num_shards * shard_cpus + inference_cpu_cores) / usable)
            role = f"{num_shards} DecoderShard actors + {math.ceil(inference_cpu_cores)} cores of CPU replicas"
            groups.append(NodeGroup("decode+inference", nodes + req.spare_nodes, req.node_cores, 0, role))
        decode_nodes = inference_nodes = nodes + req.spare_nodes
    else:
        decode_nodes = math.ceil(num_shards * shard_cpus / usable) + req.spare_nodes
        groups.append(NodeGroup("cpu-decode", decode_nodes, req.node_cores, 0, f"{num_shards} DecoderShard actors"))
        if gpus:
            gpu_nodes_needed = math.ceil(gpus / req.gpus_per_node)
            cpu_ok = math.ceil(inference_cpu_cores / usable)
            gpu_nodes = max(gpu_nodes_needed, cpu_ok) + req.spare_nodes
            groups.append(
                NodeGroup("gpu-inference", gpu_nodes, req.node_cores, req.gpus_per_node, f"{gpus} detector replicas")
            )
            inference_nodes = gpu_nodes
        else:
            inference_nodes = math.ceil(inference_cpu_cores / usable) + req.spare_nodes
            groups.append(
                NodeGroup(
                    "cpu-inference",
                    inference_nodes,
                    req.node_cores,
                    0,
                    f"{math.ceil(inference_cpu_cores)} cores of CPU detector replicas",
                )
            )
    assume.append(
        Assumption(
            "detector routing",
            req.routing,
            "",
            "cluster.detector_routing default (--routing): same_node_first keeps frames on their node",
        )
    )

    # ---- network
    if req.bitrate_mbps is not None:
        bitrate = req.bitrate_mbps
        assume.append(Assumption("camera bitrate", bitrate, "Mbit/s", "given (--bitrate-mbps)"))
    else:
        bitrate = DEFAULT_BITRATE_MBPS.get(req.resolution, 4.0)
        assume.append(
            Assumption(
                "camera bitrate",
                bitrate,
                "Mbit/s",
                f"ASSUMPTION: no bitrate recorded in {ingest.label}; typical H.264 CCTV {req.resolution} "
                "(--bitrate-mbps to set)",
            )
        )
    ingest_gbit = req.cameras * bitrate / 1000.0
    frames_gbit = images_per_s * letterboxed_bytes * 8 / 1e9
    assume.append(
        Assumption(
            "pre-roll seconds",
            req.pre_roll_s,
            "s",
            "compressed ring per camera, RecorderConfig.pre_roll_s default (--pre-roll-s)",
        )
    )
    gop_for_ring = req.gop_s or ingest.number("settings.gop_s")
    ring_gib = req.cameras * bitrate * 1e6 / 8 * (req.pre_roll_s + gop_for_ring) / 2**30
    notes.append("not sized: clip uploads to S3 (depend on the event rate), detections back (a few KB/s per shard)")

    # ---- what the end-to-end demo showed (sanity, not an input to the sizing)
    demo: dict[str, float] = {}
    demo_path = results_dir / RUN_DEMO_FILE
    if demo_path.is_file():
        run = _Doc(demo_path, _label(demo_path))
        for name, key, unit in (
            ("demo cameras", "cameras", "cameras"),
            ("demo analysed frames/s (all cameras)", "analysed_fps", "frames/s"),
            ("demo frames dropped", "frames_dropped", "frames"),
            ("demo end-to-end latency p99", "e2e_latency_ms_p99", "ms"),
        ):
            fig = run.figure(name, key, unit, "end-to-end check, not used in the sizing")
            figs.append(fig)
            demo[key] = fig.value
    else:
        notes.append(f"{_label(demo_path)} missing: no end-to-end check to show")

    cpu_total = sum(g.nodes * g.cores_per_node for g in groups)
    gpu_total = sum(g.nodes * g.gpus_per_node for g in groups)
    return Plan(
        request=req,
        figures=tuple(figs),
        assumptions=tuple(assume),
        notes=tuple(notes),
        decode_cpu_s_per_camera_s=cost,
        decode_cameras_per_core=cameras_per_core,
        decode_cores=decode_cores,
        inference_images_per_s=images_per_s,
        gpu_measured=gpu_measured,
        gpu_images_per_s_per_gpu=gpu_fig,
        gpus=gpus,
        inference_cpu_cores=inference_cpu_cores,
        cpu_images_per_s_per_core=cpu_img_per_core,
        cpu_backend=cpu_backend,
        cpu_only_inference_cores=cpu_only_cores,
        suggested_num_shards=num_shards,
        suggested_shard_num_cpus=shard_cpus,
        cameras_per_shard=cameras_per_shard,
        node_groups=tuple(groups),
        total_nodes=sum(g.nodes for g in groups),
        total_cores=cpu_total,
        total_gpus=gpu_total,
        camera_ingest_gbit_s=ingest_gbit,
        shard_to_detector_gbit_s=frames_gbit,
        ingest_gbit_s_per_decode_node=ingest_gbit / max(1, decode_nodes - req.spare_nodes),
        detector_in_gbit_s_per_inference_node=frames_gbit / max(1, inference_nodes - req.spare_nodes),
        frames_over_network_gbit_s=0.0 if req.routing == "same_node_first" else frames_gbit,
        preroll_ring_gib_total=ring_gib,
        demo_check=demo,
    )


# ---------------------------------------------------------------------------------------- output


def format_plan(plan: Plan) -> str:
    r = plan.request
    lines = [
        f"cctv plan: {r.cameras:,} cameras, {r.resolution} H.264 at {r.fps:g} fps, analytics {r.analytics_fps:g} fps, "
        f"{r.mode} decode",
        "",
        "Needs",
        f"  decode        {plan.decode_cores:8.1f} cores  ({plan.decode_cameras_per_core:.0f} cameras/core at 100 %, "
        f"{plan.decode_cpu_s_per_camera_s * 1000:.2f} CPU-ms per camera-second, at {r.cpu_utilisation:.0%} target)",
        f"  shards        {plan.suggested_num_shards:8d}        x {plan.suggested_shard_num_cpus:g} CPU, "
        f"{plan.cameras_per_shard} cameras each",
        f"  inference     {plan.inference_images_per_s:8.0f} images/s",
    ]
    if plan.gpus:
        label = "measured" if plan.gpu_measured else "ASSUMED"
        lines.append(
            f"    on GPU      {plan.gpus:8d} GPUs   ({plan.gpu_images_per_s_per_gpu:,.0f} images/s/GPU {label}, "
            f"at {r.gpu_utilisation:.0%}) + {plan.inference_cpu_cores:.0f} host cores"
        )
        lines.append(f"    CPU only    {plan.cpu_only_inference_cores:8.0f} cores  (for comparison)")
    else:
        lines.append(
            f"    on CPU      {plan.inference_cpu_cores:8.0f} cores  "
            f"({plan.cpu_images_per_s_per_core:.1f} images/s/core measured, {plan.cpu_backend}; "
            "GPU throughput unmeasured)"
        )
    lines += ["", "Nodes"]
    for g in plan.node_groups:
        gpu = f" + {g.gpus_per_node} GPU" if g.gpus_per_node else ""
        lines.append(f"  {g.name:14s} {g.nodes:5d} x {g.cores_per_node} cores{gpu:8s}  {g.role}")
    lines.append(f"  total          {plan.total_nodes:5d} nodes, {plan.total_cores:,} cores, {plan.total_gpus} GPUs")
    lines += [
        "",
        "Network and memory",
        f"  camera streams in        {plan.camera_ingest_gbit_s:8.2f} Gbit/s  "
        f"({plan.ingest_gbit_s_per_decode_node:.2f} per decode node)",
        (
            f"  frames shard->detector   {0.0:8.2f} Gbit/s on the network  ({plan.shard_to_detector_gbit_s:.2f} "
            "stay inside the nodes: same_node_first)"
            if r.routing == "same_node_first"
            else f"  frames shard->detector   {plan.shard_to_detector_gbit_s:8.2f} Gbit/s  "
            f"({plan.detector_in_gbit_s_per_inference_node:.2f} into each inference node; uint8 letterboxed)"
        ),
        f"  pre-roll rings           {plan.preroll_ring_gib_total:8.2f} GiB in shard memory, all cameras",
        "",
        "Measured inputs (file: key)",
    ]
    for f in plan.figures:
        note = f"  [{f.note}]" if f.note else ""
        lines.append(f"  {f.value:12,.2f} {f.unit:14s} {f.name}\n{'':30s}{f.source}: {f.key}{note}")
    lines += ["", "Assumptions (not measured here)"]
    for a in plan.assumptions:
        value = f"{a.value:g}" if isinstance(a.value, float | int) else str(a.value)
        lines.append(f"  {value:>12s} {a.unit:14s} {a.name}: {a.why}")
    if plan.notes:
        lines += ["", "Notes"]
        lines += [f"  - {n}" for n in plan.notes]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``plan`` to a ``cctv`` sub-parser set; the parser's ``func`` is :func:`run`."""
    p = subparsers.add_parser(
        "plan",
        help="size nodes, cores, GPUs and network from the measured benchmark results",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--cameras", type=int, required=True)
    p.add_argument("--resolution", required=True, help="a resolution measured in ingest.json: 360p, 720p, 1080p")
    p.add_argument("--fps", type=float, required=True, help="camera frame rate")
    p.add_argument("--analytics-fps", type=float, default=1.0)
    p.add_argument("--mode", choices=MODES, default="keyframe", help="decode mode")
    p.add_argument("--gop-s", type=float, default=None, help="camera GOP in seconds (default: the benchmark's)")
    p.add_argument("--bitrate-mbps", type=float, default=None, help="per camera (default: an assumption by resolution)")
    p.add_argument("--motion-skip-frac", type=float, default=0.0, help="share of frames the motion gate skips")
    p.add_argument("--node-cores", type=int, default=32)
    p.add_argument("--reserved-cores-per-node", type=float, default=2.0)
    p.add_argument("--cpu-utilisation", type=float, default=0.75)
    p.add_argument("--gpus-per-node", type=int, default=1)
    p.add_argument("--gpu-utilisation", type=float, default=0.7)
    p.add_argument("--cpu-cores-per-gpu", type=float, default=2.0, dest="cpu_cores_per_gpu_replica")
    p.add_argument("--spare-nodes", type=int, default=1, help="extra nodes per worker group (N+k)")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu-result", type=Path, default=None, help="torch_detector_check.json from a GPU node")
    gpu.add_argument("--gpu-images-per-s", type=float, default=None, help="ASSUMED GPU throughput (labelled so)")
    p.add_argument("--input-size", type=int, default=None, dest="gpu_input_size_px", help="detector input px")
    p.add_argument("--pre-roll-s", type=float, default=5.0)
    p.add_argument("--receiver", choices=tuple(_RTSP_READER), default="ffmpeg", help="ingest.rtsp_receiver to size")
    p.add_argument(
        "--routing",
        choices=("same_node_first", "any_node"),
        default="same_node_first",
        help="cluster.detector_routing: same_node_first sizes mixed decode+inference nodes",
    )
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)
    return p


_REQUEST_FIELDS = tuple(PlanRequest.__dataclass_fields__)


def request_from_args(args: argparse.Namespace) -> PlanRequest:
    return PlanRequest(**{k: getattr(args, k) for k in _REQUEST_FIELDS if hasattr(args, k)})


def run(args: argparse.Namespace) -> int:
    try:
        plan = make_plan(request_from_args(args), args.results_dir)
    except (PlanInputError, ValueError) as exc:
        print(f"cctv plan: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(format_plan(plan))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cctv")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plan", *(argv if argv is not None else sys.argv[1:])])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
