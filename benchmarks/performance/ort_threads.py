"""Detector CPU per image by onnxruntime thread setting, alone and beside a competing process.

Why ``DetectorConfig.intra_op_spinning`` is off by default: on cores shared with decoder shards a
spinning onnxruntime thread burns the CPU its peers need. This runs the project's runner
(:class:`serve_apps.detector.onnx_runner.OnnxDetector`, yolox_nano at 416) on frames of real
footage in three settings (2 threads spinning = onnxruntime's default, 2 threads not spinning,
1 thread), each alone and beside a process that keeps one core ~60 % busy in short bursts (as
shards and the RTSP simulator do), and records images/s and CPU-ms per image of this process.

Run: ``.venv/bin/python -m benchmarks.performance.ort_threads``; JSON in ``benchmarks/results/ort_threads.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import av

from benchmarks.common import cpu_timer, write_result
from serve_apps.detector.onnx_runner import load_detector
from serve_apps.detector.preprocess import letterbox

REPO = Path(__file__).resolve().parents[2]

SETTINGS = {"2 threads, spinning": (2, True), "2 threads, no spinning": (2, False), "1 thread": (1, False)}
BURNER = """
import time
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < 0.006:
        pass
    time.sleep(0.004)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=REPO.parent / "shared" / "models")
    ap.add_argument(
        "--source", type=Path, default=REPO.parent / "shared" / "data" / "clips" / "street_people_walking.mp4"
    )
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    runners = {
        name: load_detector(args.models_dir, "yolox_nano", intra_op_threads=th, intra_op_spinning=spin)
        for name, (th, spin) in SETTINGS.items()
    }
    frames = []
    with av.open(str(args.source)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 10 == 0:
                frames.append(letterbox(frame.to_ndarray(format="bgr24"), 416))
            if len(frames) >= 16:
                break
    points = []
    for load in ("alone", "beside a competing process"):
        burner = subprocess.Popen([sys.executable, "-c", BURNER]) if load != "alone" else None
        try:
            for batch in args.batches:
                for name, runner in runners.items():
                    images = 0
                    with cpu_timer() as t:
                        end = time.perf_counter() + args.duration_s
                        while time.perf_counter() < end:
                            for i in range(0, len(frames), batch):
                                runner.detect(frames[i : i + batch])
                                images += len(frames[i : i + batch])
                    p = {
                        "load": load,
                        "setting": name,
                        "batch": batch,
                        "images_per_s": round(images / t.wall_s, 1),
                        "cpu_ms_per_image": round(t.cpu_s / images * 1000.0, 2),
                    }
                    points.append(p)
                    print(f"{load:>27} B={batch} {name:>22}: {p['images_per_s']} img/s, {p['cpu_ms_per_image']} CPU-ms")
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
    path = write_result("ort_threads", {"command": " ".join([sys.executable, *sys.argv]), "points": points}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
