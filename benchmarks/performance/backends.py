"""Detector backends on this CPU, side by side: CPU-ms per image by batch size, and agreement with onnxruntime.

The same ONNX file (yolox_nano at 416, and any other ``--models``) is run by each CPU backend the product can
be configured with (``DetectorConfig.backend``: onnxruntime, openvino, torch), one thread each, pinned to one
CPU, on letterboxed frames of real footage. Backends and batch sizes are measured in alternating rounds so
a change in the machine's load falls on all of them alike; each point is the median of its rounds.

Reported per (model, backend, batch): CPU-ms per image (this process's CPU time, all threads), images per
second per core (1000 / CPU-ms), wall ms per forward pass. Agreement with onnxruntime (the reference path) on
the real frames: max |raw difference| over all anchors, and the share of onnxruntime's detections the
backend reproduces (same label, IoU >= 0.9). A backend is only a candidate for the product if it agrees.

Run: ``.venv/bin/python -m benchmarks.performance.backends``; JSON in ``benchmarks/results/backends.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from benchmarks.common import cpu_timer, loadavg, pinned_to_one_cpu, write_result
from serve_apps.detector.backends import BACKENDS, make_detector
from serve_apps.detector.onnx_runner import DetectorBase
from serve_apps.detector.preprocess import letterbox

REPO = Path(__file__).resolve().parents[2]
CPU_BACKENDS = BACKENDS  # all of them run on the CPU (torch also on CUDA: benchmarks/gpu)
MATCH_IOU = 0.9


def real_frames(sources: list[Path], per_source: int) -> list[np.ndarray]:
    """Every 10th frame of each source, ``per_source`` of each, as BGR arrays."""
    frames: list[np.ndarray] = []
    for source in sources:
        taken = 0
        with av.open(str(source)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % 10 == 0:
                    frames.append(frame.to_ndarray(format="bgr24"))
                    taken += 1
                if taken >= per_source:
                    break
    return frames


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def agreement(runner: DetectorBase, reference: DetectorBase, frames: list[np.ndarray]) -> dict[str, Any]:
    """How closely ``runner`` reproduces ``reference`` on ``frames`` (raw head output and detections)."""
    images = [letterbox(f, reference.input_size).image for f in frames]
    raw_diff = float(np.abs(runner.run_raw(images) - reference.run_raw(images)).max())
    want = reference.detect_frames(frames)
    got = runner.detect_frames(frames)
    matched = total = 0
    for g_frame, w_frame in zip(got, want, strict=True):
        for w in w_frame:
            total += 1
            if any(g.label == w.label and _iou(g.box, w.box) >= MATCH_IOU for g in g_frame):
                matched += 1
    return {
        "raw_max_abs_diff": round(raw_diff, 6),
        "reference_detections": total,
        "detections_reproduced": matched,
        "match_ratio": round(matched / total, 4) if total else None,
    }


def measure(runner: DetectorBase, images: np.ndarray, batch: int, duration_s: float) -> dict[str, float]:
    """Forward passes of ``batch`` images for about ``duration_s`` CPU-seconds after one warm-up pass."""
    x = images[:batch]
    runner.run_raw(x)
    passes = 0
    walls: list[float] = []
    with cpu_timer() as t:
        stop_at_cpu_s = time.process_time() + duration_s
        while passes == 0 or time.process_time() < stop_at_cpu_s:
            w0 = time.perf_counter()
            runner.run_raw(x)
            walls.append(time.perf_counter() - w0)
            passes += 1
    return {
        "cpu_ms_per_image": 1000.0 * t.cpu_s / (passes * batch),
        "wall_ms_per_pass": 1000.0 * statistics.median(walls),
        "passes": passes,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=REPO.parent / "shared" / "models")
    ap.add_argument("--models", nargs="+", default=["yolox_nano"], help="model names under --models-dir")
    ap.add_argument("--backends", nargs="+", choices=CPU_BACKENDS, default=list(CPU_BACKENDS))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--duration-s", type=float, default=2.0, help="CPU-seconds per point and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--sources",
        type=Path,
        nargs="+",
        default=[
            REPO.parent / "shared" / "data" / "clips" / "street_people_walking.mp4",
            REPO.parent / "shared" / "data" / "clips" / "town_centre_pedestrians.mp4",
        ],
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    frames = real_frames(args.sources, per_source=max(8, max(args.batches)))
    load_start = loadavg()
    results: dict[str, Any] = {}
    with pinned_to_one_cpu() as cpu:
        for model in args.models:
            runners = {
                b: make_detector(b, args.models_dir, model, **({"device": "cpu"} if b == "torch" else {}))
                for b in args.backends
            }
            reference = runners.get("onnxruntime") or make_detector("onnxruntime", args.models_dir, model)
            size = reference.input_size
            images = np.stack([letterbox(frames[i % len(frames)], size).image for i in range(max(args.batches))])
            rounds: dict[str, dict[int, list[dict[str, float]]]] = {b: {n: [] for n in args.batches} for b in runners}
            for r in range(args.rounds):
                for n in args.batches:
                    for b, runner in runners.items():
                        rounds[b][n].append(measure(runner, images, n, args.duration_s))
                print(f"{model}: round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            per_backend: dict[str, Any] = {}
            for b, runner in runners.items():
                points = []
                for n in args.batches:
                    cpu_ms = statistics.median(p["cpu_ms_per_image"] for p in rounds[b][n])
                    points.append(
                        {
                            "batch": n,
                            "cpu_ms_per_image": round(cpu_ms, 3),
                            "images_per_s_per_core": round(1000.0 / cpu_ms, 2),
                            "wall_ms_per_pass": round(
                                statistics.median(p["wall_ms_per_pass"] for p in rounds[b][n]), 2
                            ),
                            "rounds_cpu_ms_per_image": [round(p["cpu_ms_per_image"], 3) for p in rounds[b][n]],
                        }
                    )
                best = min(points, key=lambda p: p["cpu_ms_per_image"])
                per_backend[b] = {
                    "runner": repr(runner),
                    "points": points,
                    "best": {"batch": best["batch"], "images_per_s_per_core": best["images_per_s_per_core"]},
                    "agreement_with_onnxruntime": agreement(runner, reference, frames[:8]),
                }
            ort_best = per_backend.get("onnxruntime", {}).get("best")
            for entry in per_backend.values():
                if ort_best:
                    entry["best_over_onnxruntime_best"] = round(
                        entry["best"]["images_per_s_per_core"] / ort_best["images_per_s_per_core"], 3
                    )
            results[model] = {"input_size": size, "backends": per_backend}
    for model, r in results.items():
        print(f"\n{model}@{r['input_size']}: CPU-ms per image (1 thread, one core) by batch")
        print("  backend       " + "".join(f"B={n:<7}" for n in args.batches) + "best img/s/core  agreement")
        for b, e in r["backends"].items():
            cells = "".join(f"{p['cpu_ms_per_image']:<9.2f}" for p in e["points"])
            a = e["agreement_with_onnxruntime"]
            print(
                f"  {b:<13} {cells} {e['best']['images_per_s_per_core']:>6.1f} (B={e['best']['batch']})"
                f"   raw diff {a['raw_max_abs_diff']:.1e}, {a['detections_reproduced']}/{a['reference_detections']}"
            )
    payload = {
        "command": " ".join([".venv/bin/python", "-m", "benchmarks.performance.backends", *(argv or sys.argv[1:])]),
        "settings": {
            "threads_per_backend": 1,
            "pinned_cpu": cpu,
            "duration_cpu_s_per_point_round": args.duration_s,
            "rounds": args.rounds,
            "statistic": "median of rounds",
            "sources": [str(s.name) for s in args.sources],
            "match_iou": MATCH_IOU,
        },
        "units": {
            "cpu_ms_per_image": "CPU time of this process (all threads) per image, forward pass only (run_raw)",
            "images_per_s_per_core": "1000 / cpu_ms_per_image",
        },
        "load_average_start_end": [load_start, loadavg()],
        "results": results,
        "run_wall_s": round(time.perf_counter() - t_start, 1),
    }
    path = write_result("backends", payload, args.out)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
