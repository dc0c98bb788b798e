"""NVDEC vs CPU decode of camera streams, for a GPU node without Ray.

Decodes prepared H.264 camera streams (``cctv footage prepare`` output: 1 s GOP) with
``actors.decoder.open_decoder`` — the same choice the ingest path makes — once on the CPU
and once with NVDEC (``h264_cuvid``), with 1..N concurrent streams (threads; PyAV releases
the GIL), in every-frame and keyframe-only modes, and writes frames/s to JSON.

Run here (CPU only: NVDEC reports "unavailable" and falls back):
    .venv/bin/python benchmarks/gpu/nvdec_ingest.py --streams .cache/streams --out /tmp/nvdec --quick
On a GPU node (no Ray needed; carry .cache/streams):
    python3 benchmarks/gpu/nvdec_ingest.py --streams .cache/streams --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from actors.decoder import open_decoder


def decode_file(path: Path, backend: str, keyframe_only: bool, seconds: float, out: dict[str, float]) -> None:
    """Decode ``path`` in a loop for ``seconds``; adds frames, stream seconds and the backend used to ``out``."""
    deadline = time.perf_counter() + seconds
    frames = 0
    stream_s = 0.0
    used = "cpu"
    while time.perf_counter() < deadline:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            choice = open_decoder(stream, backend, keyframe_only=keyframe_only)  # type: ignore[arg-type]
            used = choice.backend
            for packet in container.demux(stream):
                if packet.size == 0 or (keyframe_only and not packet.is_keyframe):
                    continue
                frames += len(choice.codec_context.decode(packet))
                if time.perf_counter() >= deadline:
                    break
            stream_s += float(stream.duration * stream.time_base) if stream.duration else 0.0
    out["frames"] = out.get("frames", 0) + frames
    out["stream_s"] = out.get("stream_s", 0.0) + stream_s
    out["backend_used"] = used  # type: ignore[assignment]


def run(path: Path, backend: str, keyframe_only: bool, streams: int, seconds: float) -> dict[str, object]:
    results: list[dict[str, float]] = [{} for _ in range(streams)]
    threads = [
        threading.Thread(target=decode_file, args=(path, backend, keyframe_only, seconds, results[i]))
        for i in range(streams)
    ]
    t0 = time.perf_counter()
    c0 = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - t0
    cpu_s = time.process_time() - c0
    frames = sum(r.get("frames", 0) for r in results)
    return {
        "file": path.name,
        "backend_asked": backend,
        "backend_used": results[0].get("backend_used", "cpu"),
        "keyframe_only": keyframe_only,
        "streams": streams,
        "wall_s": round(wall_s, 2),
        "cpu_s": round(cpu_s, 2),
        "frames_per_s": round(frames / wall_s, 1),
        "frames_per_cpu_s": round(frames / cpu_s, 1) if cpu_s else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=Path, required=True, help="directory of prepared .mp4 camera streams")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    p.add_argument("--quick", action="store_true", help="one file, 2 s per measurement")
    args = p.parse_args()
    files = sorted(args.streams.glob("*.mp4"))
    if not files:
        print(f"no .mp4 streams in {args.streams}", file=sys.stderr)
        return 2
    if args.quick:
        files, args.seconds = files[:1], 2.0
    cores = os.cpu_count() or 1
    concurrency = [1, 4, 16] if not args.quick else [1, 2]
    rows = []
    for f in files:
        for backend in ("cpu", "nvdec"):
            for keyframe_only in (False, True):
                for n in concurrency:
                    row = run(f, backend, keyframe_only, n, args.seconds)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "cpus": cores},
        "versions": {"python": platform.python_version(), "av": av.__version__},
        "results": rows,
    }
    (args.out / "nvdec_ingest.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
