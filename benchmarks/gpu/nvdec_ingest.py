"""NVDEC vs CPU decode of camera streams, for a GPU node without Ray.

Decodes prepared H.264 camera streams (``cctv footage prepare`` output: 1 s GOP) with
``actors.decoder.open_decoder`` — the same choice the ingest path makes — once on the CPU
and once with NVDEC (``h264_cuvid``), with 1..N concurrent streams (threads; PyAV releases
the GIL), in every-frame and keyframe-only modes, and writes frames/s to JSON.

Run here (CPU only: NVDEC reports "unavailable" and falls back):
    .venv/bin/python -m benchmarks.gpu.nvdec_ingest --streams .cache/streams --out /tmp/nvdec --quick
On a GPU node (no Ray needed; carry .cache/streams, and PyAV as a wheel: the node has none):
    python3 -m benchmarks.gpu.nvdec_ingest --streams .cache/streams --out $OUT

``--files`` (name globs), ``--concurrency``, ``--modes`` and ``--budget-s`` (no measurement is
started that would end after it; skipped ones are listed) keep it inside a fixed device-time budget
(``benchmarks/gpu/run_all.py``). Without PyAV it writes a JSON that says so and exits 0.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

try:  # a bare GPU node has no PyAV unless its wheel is carried
    import av

    from actors.decoder import open_decoder

    AV_ERROR = ""
except ImportError as _exc:  # pragma: no cover - depends on the node
    AV_ERROR = f"{type(_exc).__name__}: {_exc}"


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=Path, required=True, help="directory of prepared .mp4 camera streams")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--files", nargs="*", default=[], help="file name globs inside --streams (default: all)")
    p.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="concurrent streams (threads)")
    p.add_argument("--backends", nargs="+", choices=["cpu", "nvdec"], default=["cpu", "nvdec"])
    p.add_argument("--modes", nargs="+", choices=["every", "keyframe"], default=["every", "keyframe"])
    p.add_argument("--budget-s", type=float, default=None, help="start no measurement that would end after this")
    p.add_argument("--quick", action="store_true", help="one file, 2 s per measurement")
    args = p.parse_args(argv)
    started = time.monotonic()
    files = sorted(
        f for f in args.streams.glob("*.mp4") if not args.files or any(fnmatch.fnmatch(f.name, g) for g in args.files)
    )
    if not files:
        print(f"no .mp4 streams in {args.streams}", file=sys.stderr)
        return 2
    if args.quick:
        files, args.seconds = files[:1], 2.0
        args.concurrency = [1, 2]
    cores = os.cpu_count() or 1
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, object] = {
        "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "cpus": cores},
        "versions": {"python": platform.python_version(), "av": None if AV_ERROR else av.__version__},
        "results": [],
        "skipped": [],
    }
    if AV_ERROR:
        doc["error"] = f"PyAV not importable ({AV_ERROR}): carry its wheel (make bench-gpu)"
        print(doc["error"], file=sys.stderr)
        (args.out / "nvdec_ingest.json").write_text(json.dumps(doc, indent=2))
        return 0
    doc["versions"]["h264_cuvid_in_av"] = "h264_cuvid" in av.codecs_available  # type: ignore[index]
    rows: list[dict[str, object]] = []
    skipped: list[dict[str, object]] = []
    for f in files:
        for backend in args.backends:
            for mode in args.modes:
                for n in args.concurrency:
                    if args.budget_s is not None and time.monotonic() - started + args.seconds + 1 > args.budget_s:
                        skipped.append({"file": f.name, "backend": backend, "mode": mode, "streams": n})
                        continue
                    row = run(f, backend, mode == "keyframe", n, args.seconds)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    doc["results"], doc["skipped"] = rows, skipped
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    (args.out / "nvdec_ingest.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
