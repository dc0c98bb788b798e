"""PyTorch detector backend on a GPU node: throughput, latency and agreement, for a machine without Ray.

What it does, for one model (default YOLOX-Nano) at each ``--sizes`` (default 416, the exported
size, and 640: the converted graph has no baked-in size, the anchor grid is built outside it by
the post-processing from ``input_size``):

1. Agreement on real frames (``--frames-npy`` and/or ``--clip``; random pixels if none given):
   torch fp32 (TF32 off) vs onnxruntime CPU fp32, torch fp16 vs torch fp32, torch fp16 vs
   onnxruntime and torch fp32 with CUDA's default TF32 convolutions vs onnxruntime:
   raw head output (max |diff| over all anchors, over confident anchors, over the score columns)
   and detections (counts, same-class matches at IoU > 0.5, mean IoU, worst box shift in pixels).
2. Throughput and latency for batches ``--batches`` (default 1 8 32 64 128 256):
   ``forward`` (uint8 batch already on the device: device preprocess + forward) per precision in
   ``--precisions`` (fp32 with CUDA's default TF32 convolutions), and ``end_to_end`` (host uint8
   numpy in, detections out: one host-to-device copy, preprocess, forward, device decode and
   threshold, host NMS) for the first precision. Each point: warm-up, then timed iterations for
   about ``--seconds`` with the device synchronised around each; reports img/s, p50/p99/mean
   batch latency and peak device memory.
3. Optionally (``--compile``) the same ``forward`` timing with ``torch.compile`` for
   ``--compile-batches`` only (each batch size compiles once, tens of seconds each).

Writes ``<out>/torch_detector_check.json`` with provenance (torch/CUDA/cuDNN versions, device
name, git commit, command line) and prints a summary. Measurements stop being started once
``--budget-s`` has passed; skipped points are listed in the JSON.

Here (CPU, a few seconds per point):
    .venv/bin/python -m benchmarks.gpu.torch_detector_check --models-dir ../shared/models \\
        --out /tmp/tdc --device cpu --quick --clip .cache/footage/vtest.avi
On a GPU node (carry the model folder and a clip or a .npy of frames; no Ray needed):
    python3 -m benchmarks.gpu.torch_detector_check --models-dir models --out $OUT --clip vtest.avi
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch

from cluster.provenance import provenance
from contracts.detector import Detection
from serve_apps.detector.onnx_runner import load_detector, model_path, sha256_hex
from serve_apps.detector.onnx_to_torch import op_types
from serve_apps.detector.postprocess import anchor_grid
from serve_apps.detector.preprocess import letterbox
from serve_apps.detector.torch_runner import TorchDetector, load_torch_detector, strict_fp32

RESULT_NAME = "torch_detector_check"


# ------------------------------------------------------------------------------------- frames


def read_clip_frames(path: Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread over the clip."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open clip {path}")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or count
        frames: list[np.ndarray] = []
        for index in np.linspace(0, max(total - 1, 0), count).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, frame = cap.read()
            if ok and frame is not None:
                frames.append(frame)
    finally:
        cap.release()
    return frames


def load_frames(args: argparse.Namespace) -> tuple[list[np.ndarray], str]:
    frames: list[np.ndarray] = []
    sources: list[str] = []
    for npy in args.frames_npy:
        array = np.load(npy)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
            raise SystemExit(f"{npy}: expected uint8 (N, H, W, 3) BGR frames, got {array.dtype} {array.shape}")
        frames.extend(array)
        sources.append(str(npy))
    for clip in args.clip:
        frames.extend(read_clip_frames(Path(clip), args.frames_per_clip))
        sources.append(str(clip))
    if not frames:
        rng = np.random.default_rng(0)
        frames = list(rng.integers(0, 256, size=(4, 480, 640, 3), dtype=np.uint8))
        sources.append("random pixels (no --clip or --frames-npy): agreement figures are not representative")
    return frames, "; ".join(sources)


# ---------------------------------------------------------------------------------- agreement


def compare_raw(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    diff = np.abs(got.astype(np.float32) - ref.astype(np.float32))
    confident = ref[..., 4] > 0.1
    return {
        "max_abs": float(diff.max()),
        "p99_abs": float(np.percentile(diff, 99)),
        "max_abs_confident_anchors": float(diff[confident].max()) if confident.any() else float("nan"),
        "max_abs_score_columns": float(diff[..., 4:].max()),
        "confident_anchors": int(confident.sum()),
        "output_abs_max": float(np.abs(ref).max()),
    }


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def compare_detections(got: list[tuple[Detection, ...]], ref: list[tuple[Detection, ...]]) -> dict[str, Any]:
    """Greedy same-class matching at IoU > 0.5, per frame, reference detections in score order."""
    matched, ious, shifts = 0, [], []
    for got_frame, ref_frame in zip(got, ref, strict=True):
        free = list(got_frame)
        for r in ref_frame:
            best = max(
                (g for g in free if g.class_id == r.class_id), key=lambda g, r=r: _iou(g.box, r.box), default=None
            )
            if best is None or _iou(best.box, r.box) <= 0.5:
                continue
            free.remove(best)
            matched += 1
            ious.append(_iou(best.box, r.box))
            shifts.append(max(abs(p - q) for p, q in zip(best.box, r.box, strict=True)))
    ref_count = sum(len(f) for f in ref)
    return {
        "ref_count": ref_count,
        "count": sum(len(f) for f in got),
        "per_frame_counts_equal": [len(g) for g in got] == [len(r) for r in ref],
        "matched": matched,
        "match_ratio": matched / ref_count if ref_count else 1.0,
        "mean_iou": float(np.mean(ious)) if ious else float("nan"),
        "max_box_shift_px": float(max(shifts)) if shifts else 0.0,
    }


def agreement(
    models_dir: Path, model: str, size: int, device: str, frames: list[np.ndarray], threads: int
) -> dict[str, Any]:
    ort_det = load_detector(models_dir, model, input_size=size, intra_op_threads=threads)
    fp32 = load_torch_detector(models_dir, model, input_size=size, device=device, half=False)
    fp16 = load_torch_detector(models_dir, model, input_size=size, device=device, half=True)
    images = np.stack([letterbox(f, size).image for f in frames])
    raw_ort, raw16, raw_tf32 = ort_det.run_raw(images), fp16.run_raw(images), fp32.run_raw(images)
    dets_ort, dets16 = ort_det.detect_frames(frames), fp16.detect_frames(frames)
    with strict_fp32():  # CUDA runs fp32 convolutions in TF32 unless told not to
        raw32, dets32 = fp32.run_raw(images), fp32.detect_frames(frames)
    return {
        "size": size,
        "anchors": int(raw32.shape[1]),
        "anchors_expected": int(anchor_grid(size, size)[0].shape[0]),
        "frames": len(frames),
        "raw": {
            "torch_fp32_vs_ort": compare_raw(raw32, raw_ort),
            "torch_fp16_vs_torch_fp32": compare_raw(raw16, raw32),
            "torch_fp16_vs_ort": compare_raw(raw16, raw_ort),
            "torch_fp32_tf32_allowed_vs_ort": compare_raw(raw_tf32, raw_ort),
        },
        "detections": {
            "torch_fp32_vs_ort": compare_detections(dets32, dets_ort),
            "torch_fp16_vs_torch_fp32": compare_detections(dets16, dets32),
            "torch_fp16_vs_ort": compare_detections(dets16, dets_ort),
        },
    }


# -------------------------------------------------------------------------------- throughput


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], object], device: torch.device, warmup: int, seconds: float, max_iters: int
) -> list[float]:
    """Seconds per call: ``warmup`` untimed calls, then calls until ``seconds`` (at least 3)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < max_iters):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: list[float], batch: int) -> dict[str, float | int]:
    ms = np.asarray(times) * 1000.0
    return {
        "iters": len(times),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "img_per_s": float(batch * len(times) / (ms.sum() / 1000.0)),
    }


def throughput_point(
    det: TorchDetector, scope: str, batch: int, args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, Any]:
    device = det.device
    size = det.input_size
    host = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if scope == "forward":
        on_device = torch.from_numpy(host).to(device)

        def fn() -> object:
            return det.run_raw_tensor(on_device)
    else:

        def fn() -> object:
            return det.infer(host)

    times = time_calls(fn, device, args.warmup, args.seconds, args.max_iters)
    point: dict[str, Any] = {"size": size, "batch": batch, "scope": scope, **summarize(times, batch)}
    if device.type == "cuda":
        point["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return point


def run_throughput(args: argparse.Namespace, deadline: float, report: dict[str, Any]) -> None:
    rng = np.random.default_rng(1)
    compile_flags = [False, True] if args.compile else [False]
    for size in args.sizes:
        for compiled in compile_flags:
            for p_index, precision in enumerate(args.precisions):
                if compiled and p_index > 0:
                    continue  # compile: the first precision only
                det = load_torch_detector(
                    args.models_dir,
                    args.model,
                    input_size=size,
                    device=args.device,
                    half=precision == "fp16",
                    channels_last=True,
                    compile=compiled,
                    compile_mode=args.compile_mode,
                )
                scopes = ["forward", "end_to_end"] if p_index == 0 and not compiled else ["forward"]
                batches = args.compile_batches if compiled else args.batches
                for scope in scopes:
                    for batch in batches:
                        label = {"size": size, "batch": batch, "precision": precision, "scope": scope}
                        label["compiled"] = compiled
                        if time.monotonic() > deadline:
                            report["skipped"].append({**label, "why": "--budget-s reached"})
                            continue
                        try:
                            t0 = time.perf_counter()
                            point = throughput_point(det, scope, batch, args, rng)
                            point.update(precision=precision, compiled=compiled)
                            point["wall_s"] = round(time.perf_counter() - t0, 2)
                        except torch.cuda.OutOfMemoryError as exc:
                            report["errors"].append({**label, "error": f"out of memory: {exc}"[:300]})
                            torch.cuda.empty_cache()
                            continue
                        report["throughput"].append(point)
                        print(
                            f"  {scope:10s} {precision} {'compiled ' if compiled else ''}size={size} batch={batch:4d}: "
                            f"{point['img_per_s']:9.1f} img/s  p50 {point['p50_ms']:8.2f} ms  "
                            f"p99 {point['p99_ms']:8.2f} ms  ({point['iters']} iters)",
                            flush=True,
                        )
                del det
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------- main


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            device_capability=f"{props.major}.{props.minor}",
            device_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    else:
        info["device_name"] = "cpu"
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="yolox_nano")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[416, 640])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--precisions", nargs="+", choices=["fp16", "fp32"], default=["fp16", "fp32"])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per point (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max-iters", type=int, default=500)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (forward only)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    parser.add_argument("--compile-batches", type=int, nargs="+", default=[64])
    parser.add_argument("--clip", action="append", default=[], help="a video to take agreement frames from")
    parser.add_argument("--frames-per-clip", type=int, default=4)
    parser.add_argument("--frames-npy", type=Path, action="append", default=[], help="uint8 (N, H, W, 3) BGR")
    parser.add_argument("--ort-threads", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no measurement after this")
    parser.add_argument("--quick", action="store_true", help="CPU dry run: batches 1 2, 0.2 s per point")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches = [1, 2]
        args.compile_batches = [2]
        args.seconds = 0.2
        args.warmup = 1
        args.frames_per_clip = min(args.frames_per_clip, 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_s
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but torch.cuda.is_available() is False (use --device cpu --quick here)")
        torch.backends.cudnn.benchmark = True  # fixed shapes per point; autotuned during warm-up
    path = model_path(args.models_dir, args.model)
    graph = onnx.load(str(path))
    report: dict[str, Any] = {
        "benchmark": RESULT_NAME,
        "provenance": provenance(),
        "environment": device_info(device),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": {
            "name": args.model,
            "path": str(path),
            "sha256": sha256_hex(path.read_bytes()),
            "op_types": op_types(graph),
            "note": (
                "the graph ends at the raw head output (grid-unit boxes, sigmoid scores); the anchor grid and "
                "strides are applied by the post-processing from input_size, Reshapes use -1 and Resize uses "
                "scale factors, so any multiple of 32 runs without re-export"
            ),
        },
        "agreement": [],
        "throughput": [],
        "skipped": [],
        "errors": [],
    }
    frames, source = load_frames(args)
    report["frames"] = {"source": source, "count": len(frames), "shapes": sorted({str(f.shape) for f in frames})}
    print(f"{report['environment']['device_name']}: torch {torch.__version__}, {len(frames)} frames from {source}")

    for size in args.sizes:
        try:
            result = agreement(args.models_dir, args.model, size, args.device, frames, args.ort_threads)
        except (RuntimeError, ValueError) as exc:
            report["errors"].append({"size": size, "stage": "agreement", "error": str(exc)[:500]})
            print(f"agreement at {size} failed: {exc}", flush=True)
            continue
        report["agreement"].append(result)
        raw, dets = result["raw"], result["detections"]
        print(
            f"agreement size={size} anchors={result['anchors']}/{result['anchors_expected']}: "
            f"fp32-vs-ort max {raw['torch_fp32_vs_ort']['max_abs']:.2e} "
            f"(confident {raw['torch_fp32_vs_ort']['max_abs_confident_anchors']:.2e}), "
            f"fp16-vs-fp32 max {raw['torch_fp16_vs_torch_fp32']['max_abs']:.2e} "
            f"(confident {raw['torch_fp16_vs_torch_fp32']['max_abs_confident_anchors']:.2e}); detections "
            f"fp32/ort {dets['torch_fp32_vs_ort']['count']}/{dets['torch_fp32_vs_ort']['ref_count']} "
            f"matched {dets['torch_fp32_vs_ort']['match_ratio']:.3f}, fp16/fp32 matched "
            f"{dets['torch_fp16_vs_torch_fp32']['match_ratio']:.3f} "
            f"(max shift {dets['torch_fp16_vs_torch_fp32']['max_box_shift_px']:.2f} px)",
            flush=True,
        )

    print("throughput (batch latency with device sync):", flush=True)
    run_throughput(args, deadline, report)
    report["elapsed_s"] = round(time.monotonic() - started, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    out_path = args.out / f"{RESULT_NAME}.json"
    out_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(
        f"wrote {out_path} ({report['elapsed_s']} s; {len(report['skipped'])} skipped, {len(report['errors'])} errors)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
