"""Live RTSP cameras per core: our CameraStream against a plain PyAV reader, on the real simulator.

``benchmarks/performance/ingest.py`` measures decode work on files. A city's cameras arrive over RTSP, where
receiving costs too: FFmpeg reads RTP packets one or two system calls at a time (over TCP, a
4-byte interleave header and then the payload). This benchmark runs K cameras of the project's
GStreamer RTSP simulator (360p, 1 s GOP, 30 fps) into this process, keyframe-only at 1 analytics
fps, and measures the CPU of this process alone (the simulator is a separate process; its CPU is
recorded beside). Two readers, in the same run, on the same simulator:

* ``raw``: one thread per camera, ``av.open(url)``; every packet demuxed, keyframes decoded and
  converted to BGR at 1 fps (what anyone would write; no ring, no state machine);
* ``ours``: :class:`actors.stream.CameraStream` (ring buffer, state machine, sampling, counters).

A camera keeps up when its packets in the window are within 5 % of window x fps.

Run: ``.venv/bin/python -m benchmarks.performance.ingest_rtsp [--cameras 50 100] [--transports tcp udp]``;
JSON in ``benchmarks/results/ingest_rtsp.json``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av

from actors.frame_sampler import FrameSampler
from actors.packets import PacketRing
from actors.stream import CameraStream
from benchmarks.common import cpu_timer, write_result
from benchmarks.performance.cpu_accounting import cores_between, cpu_snapshot
from benchmarks.performance.ingest import (
    ANALYTICS_FPS,
    INGEST,
    KEEP_UP_TOLERANCE,
    RING_BYTES,
    RING_SECONDS,
    _sink,
)
from cluster.footage import prepare_stream, probe
from cluster.rtsp_sim import RtspSimulator, system_ready
from configs.schema import CameraConfig

REPO = Path(__file__).resolve().parents[2]

SOURCE = REPO.parent / "shared" / "data" / "clips" / "street_people_walking.mp4"


class RawReader:
    """A plain PyAV RTSP reader thread: demux everything, decode keyframes, BGR at 1 fps."""

    def __init__(self, url: str, transport: str) -> None:
        self.url, self.transport = url, transport
        self.packets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        sampler = FrameSampler(ANALYTICS_FPS)
        with av.open(self.url, options={"rtsp_transport": self.transport}, timeout=(10.0, 10.0)) as container:
            video = container.streams.video[0]
            codec = video.codec_context
            codec.skip_frame = "NONKEY"
            for packet in container.demux(video):
                if self._stop.is_set():
                    return
                if packet.size == 0:
                    continue
                self.packets += 1
                if not packet.is_keyframe:
                    continue
                for frame in codec.decode(packet):
                    if sampler.take(frame.time or 0.0):
                        frame.to_ndarray(format="bgr24")


def _ours(url: str, cam_id: str, transport: str) -> CameraStream:
    cfg = CameraConfig(
        id=cam_id, url=url, decode_mode="keyframe", analytics_fps=ANALYTICS_FPS, rtsp_transport=transport
    )
    ring = PacketRing(max_seconds=RING_SECONDS, max_bytes=RING_BYTES)
    return CameraStream(cfg, shard="bench", ingest=INGEST, ring=ring, on_frame=_sink)


def measure(reader: str, urls: list[str], transport: str, fps: float, warmup_s: float, window_s: float) -> dict:
    """K cameras of one reader kind: this process's CPU over the window, and who kept up."""
    k = len(urls)
    if reader == "raw":
        raws = [RawReader(u, transport) for u in urls]
        starters, count = raws, (lambda: [r.packets for r in raws])
        stoppers = [r.stop for r in raws]
    else:
        streams = [_ours(u, f"rtsp-{i}", transport) for i, u in enumerate(urls)]
        starters, count = streams, (lambda: [s.counters.packets for s in streams])
        stoppers = [lambda s=s: s.stop(timeout_s=0) for s in streams]
    for s in starters:
        s.start()
        time.sleep(1.0 / k)  # spread the starts over a GOP, as real cameras are not in step
    time.sleep(warmup_s)
    before, snap0 = count(), cpu_snapshot()
    with cpu_timer() as t:
        time.sleep(window_s)
    after, snap1 = count(), cpu_snapshot()
    for stop in stoppers:
        stop()
    time.sleep(1.0)
    packets = [a - b for a, b in zip(after, before, strict=True)]
    expected = t.wall_s * fps
    worst = min(packets) / expected if expected else 0.0
    roles = cores_between(snap0, snap1)
    return {
        "reader": reader,
        "transport": transport,
        "cameras": k,
        "window_s": round(t.wall_s, 2),
        "cores_used": round(t.cores_used, 3),
        "user_s": round(t.user_s, 2),
        "sys_s": round(t.sys_s, 2),
        "cameras_per_core": round(k / t.cores_used, 1) if t.cores_used > 0 else None,
        "packets_expected_per_camera": round(expected, 1),
        "packets_min_frac": round(worst, 3),
        "keeps_up": worst >= 1.0 - KEEP_UP_TOLERANCE,
        "simulator_cores": roles.get("rtsp_simulator_cores"),
        "machine_busy_cores": roles.get("machine_busy_cores"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--transports", nargs="+", choices=["tcp", "udp"], default=["tcp", "udp"])
    ap.add_argument("--warmup-s", type=float, default=5.0)
    ap.add_argument("--window-s", type=float, default=15.0)
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    ok, why = system_ready()
    if not ok:
        print(f"RTSP simulator unavailable: {why}", file=sys.stderr)
        return 2
    stream = prepare_stream(args.source, REPO / ".cache" / "streams", gop_s=1.0, max_height=360)
    fps = probe(stream).fps
    points: list[dict[str, Any]] = []
    t_start = time.time()
    for k in args.cameras:
        for transport in args.transports:
            for reader in ("raw", "ours"):  # a fresh simulator per point: no session carries over
                with RtspSimulator({"s": stream}, cameras=k) as sim:
                    p = measure(reader, sim.camera_urls(), transport, fps, args.warmup_s, args.window_s)
                points.append(p)
                print(
                    f"{reader:>4} {transport} K={k}: {p['cores_used']} cores "
                    f"({p['cameras_per_core']} cameras/core, user {p['user_s']} s sys {p['sys_s']} s), "
                    f"worst camera {p['packets_min_frac']} of its packets, simulator {p['simulator_cores']} cores"
                )
    ratios = {}
    for k in args.cameras:
        for transport in args.transports:
            raw = next(p for p in points if (p["reader"], p["transport"], p["cameras"]) == ("raw", transport, k))
            ours = next(p for p in points if (p["reader"], p["transport"], p["cameras"]) == ("ours", transport, k))
            # A reader that fell behind received less and so looks cheaper: no ratio for that point.
            if raw["cores_used"] and ours["cores_used"] and raw["keeps_up"] and ours["keeps_up"]:
                ratios[f"{transport}/{k}"] = round(raw["cores_used"] / ours["cores_used"], 3)
    record = {
        "command": " ".join([sys.executable, *sys.argv]),
        "source": str(args.source),
        "stream": {"path": str(stream.relative_to(REPO)), "fps": fps, "gop_s": 1.0, "height_px": 360},
        "settings": {"decode_mode": "keyframe", "analytics_fps": ANALYTICS_FPS, "window_s": args.window_s},
        "points": points,
        "ratio_ours_over_raw_per_core": ratios,
        "run_wall_s": round(time.time() - t_start, 1),
    }
    path = write_result("ingest_rtsp", record, args.out)
    print(f"ours/raw cameras per core: {ratios}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
