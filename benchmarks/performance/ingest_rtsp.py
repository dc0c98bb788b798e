"""Live RTSP cameras per core: our CameraStream against a plain PyAV reader, on the real simulator.

``benchmarks/performance/ingest.py`` measures decode work on files. A city's cameras arrive over RTSP, where
receiving costs too: FFmpeg reads RTP packets one or two system calls at a time (over TCP, a
4-byte interleave header and then the payload). This benchmark runs K cameras of the project's
GStreamer RTSP simulator (360p, 1 s GOP, 30 fps) into this process, keyframe-only at 1 analytics
fps, and measures the CPU of this process alone (the simulator is a separate process; its CPU is
recorded beside). Two readers, in the same run, on the same simulator:

* ``raw``: one thread per camera, ``av.open(url)``; every packet demuxed, keyframes decoded and
  converted to BGR at 1 fps (what anyone would write; no ring, no state machine);
* ``ours``: :class:`actors.stream.CameraStream` (ring buffer, state machine, sampling, counters);
* ``ours_loop``: the same CameraStreams on the shard's one receive loop (``ingest.rtsp_receiver: loop``), the
  product path of the loop receiver;
* ``loop``: the issue-16 candidate, :class:`actors.rtsp_receive.RtspReceiver`: one thread receives every
  camera's RTP (large reads every ``poll_interval_s``), reassembles access units in Python, and the same
  keyframe decode and BGR conversion as ``raw`` run on that thread;
* ``gst``: GStreamer in-process, per camera ``rtspsrc ! rtph264depay ! h264parse ! appsink`` with Python
  seeing one access unit per frame (needs Debian's ``python3-gi``; skipped with the reason when absent).

A camera keeps up when its packets in the window are within 5 % of window x fps.

Run: ``.venv/bin/python -m benchmarks.performance.ingest_rtsp [--cameras 50 100] [--transports tcp udp]``;
JSON in ``benchmarks/results/ingest_rtsp.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from actors.frame_sampler import FrameSampler
from actors.packets import PacketRing
from actors.rtsp_receive import AccessUnit, RtspReceiver
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


class LoopReaders:
    """All cameras on one :class:`RtspReceiver`; keyframes decoded and converted as :class:`RawReader` does."""

    def __init__(self, urls: list[str], transport: str, poll_interval_s: float) -> None:
        self.urls, self.transport = urls, transport
        self.ids = [f"rtsp-{i}" for i in range(len(urls))]
        self.units = dict.fromkeys(self.ids, 0)
        self._codecs = {c: _keyframe_codec() for c in self.ids}
        self._samplers = {c: FrameSampler(ANALYTICS_FPS) for c in self.ids}
        self.rx = RtspReceiver(poll_interval_s=poll_interval_s)

    def _unit(self, unit: AccessUnit) -> None:
        self.units[unit.camera_id] += 1
        if not unit.is_keyframe:
            return
        for frame in self._codecs[unit.camera_id].decode(av.Packet(unit.data)):
            if self._samplers[unit.camera_id].take(unit.pts_90khz / 90_000):
                frame.to_ndarray(format="bgr24")

    def start(self) -> None:
        self.rx.start()
        for cam, url in zip(self.ids, self.urls, strict=True):
            self.rx.connect(cam, url, self.transport, on_unit=self._unit)
            time.sleep(1.0 / len(self.urls))  # spread the starts over a GOP, as for the other readers

    def stop(self) -> None:
        self.rx.stop()


def _keyframe_codec() -> av.codec.context.CodecContext:
    codec = av.CodecContext.create("h264", "r")
    codec.thread_count = 1  # one keyframe at a time: FFmpeg's frame threads would only add latency
    return codec


GST_PIPELINE = (
    "rtspsrc name=src protocols={transport} latency=0 ! rtph264depay ! h264parse config-interval=-1 ! "
    "video/x-h264,stream-format=byte-stream,alignment=au ! "
    "appsink name=sink emit-signals=true sync=false max-buffers=64 drop=true"
)


def _gst() -> tuple[Any, str]:
    """Debian's GStreamer bindings in this venv (only the ``gi`` package is loaded from there), or the reason not.

    The package is imported from its own directory by ``importlib`` rather than by adding Debian's
    ``dist-packages`` to ``sys.path``, so no other Debian module can shadow a venv one.
    """
    gi_dir = Path("/usr/lib/python3/dist-packages/gi")
    if not gi_dir.is_dir():
        return None, f"{gi_dir} not found (apt-get install python3-gi)"
    try:
        if "gi" not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                "gi", gi_dir / "__init__.py", submodule_search_locations=[str(gi_dir)]
            )
            if spec is None or spec.loader is None:
                return None, f"cannot load {gi_dir}"
            module = importlib.util.module_from_spec(spec)
            sys.modules["gi"] = module
            spec.loader.exec_module(module)
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as exc:
        sys.modules.pop("gi", None)
        return None, f"GStreamer bindings do not import: {exc}"
    Gst.init(None)
    return Gst, Gst.version_string()


class GstReader:
    """One GStreamer pipeline per camera; Python gets each access unit in an appsink callback."""

    def __init__(self, gst: Any, url: str, transport: str) -> None:
        self._gst = gst
        self.packets = 0
        self._codec = _keyframe_codec()
        self._sampler = FrameSampler(ANALYTICS_FPS)
        self.pipe = gst.parse_launch(GST_PIPELINE.format(transport=transport))
        self.pipe.get_by_name("src").set_property("location", url)
        self.pipe.get_by_name("sink").connect("new-sample", self._on_sample)

    def _on_sample(self, sink: Any) -> Any:
        gst = self._gst
        buf = sink.emit("pull-sample").get_buffer()
        data = buf.extract_dup(0, buf.get_size())
        self.packets += 1
        if not buf.has_flags(gst.BufferFlags.DELTA_UNIT):
            pts_s = buf.pts / 1e9 if buf.pts != gst.CLOCK_TIME_NONE else 0.0
            for frame in self._codec.decode(av.Packet(data)):
                if self._sampler.take(pts_s):
                    frame.to_ndarray(format="bgr24")
        return gst.FlowReturn.OK

    def start(self) -> None:
        self.pipe.set_state(self._gst.State.PLAYING)

    def stop(self) -> None:
        self.pipe.set_state(self._gst.State.NULL)


def _ours(url: str, cam_id: str, transport: str, receiver: RtspReceiver | None = None) -> CameraStream:
    cfg = CameraConfig(
        id=cam_id, url=url, decode_mode="keyframe", analytics_fps=ANALYTICS_FPS, rtsp_transport=transport
    )
    ring = PacketRing(max_seconds=RING_SECONDS, max_bytes=RING_BYTES)
    return CameraStream(cfg, shard="bench", ingest=INGEST, ring=ring, on_frame=_sink, receiver=receiver)


def measure(
    reader: str,
    urls: list[str],
    transport: str,
    fps: float,
    warmup_s: float,
    window_s: float,
    *,
    gst: Any = None,
    poll_interval_s: float = 0.05,
) -> dict:
    """K cameras of one reader kind: this process's CPU over the window, and who kept up."""
    k = len(urls)
    threads_before = threading.active_count()
    rss_start = _rss_bytes()
    if reader in ("raw", "gst"):
        raws: list[Any] = [RawReader(u, transport) if reader == "raw" else GstReader(gst, u, transport) for u in urls]
        starters, count = raws, (lambda: [r.packets for r in raws])
        stoppers = [r.stop for r in raws]
    elif reader == "loop":
        loop = LoopReaders(urls, transport, poll_interval_s)
        loop.start()
        starters, count, stoppers = [], (lambda: list(loop.units.values())), [loop.stop]
    else:
        rx = RtspReceiver(poll_interval_s=poll_interval_s) if reader == "ours_loop" else None
        streams = [_ours(u, f"rtsp-{i}", transport, rx) for i, u in enumerate(urls)]
        starters, count = streams, (lambda: [s.counters.packets for s in streams])
        stoppers = [lambda s=s: s.stop(timeout_s=0) for s in streams]
        if rx is not None:
            rx.start()
            stoppers.append(rx.stop)
    for s in starters:
        s.start()
        time.sleep(1.0 / k)  # spread the starts over a GOP, as real cameras are not in step
    time.sleep(warmup_s)
    threads = threading.active_count() - threads_before
    rss0 = _rss_bytes()  # after the warm-up: rings full, decoders open
    before, snap0 = count(), cpu_snapshot()
    with cpu_timer() as t:
        time.sleep(window_s)
    after, snap1 = count(), cpu_snapshot()
    ring_bytes = sum(s.ring.bytes for s in streams) if reader in ("ours", "ours_loop") else None
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
        "python_threads": threads,
        "rss_mib": round(rss0 / 2**20, 1),
        "rss_growth_mib": round((rss0 - rss_start) / 2**20, 1),
        "ring_mib": None if ring_bytes is None else round(ring_bytes / 2**20, 2),
        "packets_expected_per_camera": round(expected, 1),
        "packets_min_frac": round(worst, 3),
        "keeps_up": worst >= 1.0 - KEEP_UP_TOLERANCE,
        "simulator_cores": roles.get("rtsp_simulator_cores"),
        "machine_busy_cores": roles.get("machine_busy_cores"),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--transports", nargs="+", choices=["tcp", "udp"], default=["tcp", "udp"])
    readers = ["raw", "ours", "ours_loop", "loop", "gst"]
    ap.add_argument("--readers", nargs="+", choices=readers, default=readers)
    ap.add_argument("--poll-interval-s", type=float, default=0.05, help="the loop reader's sleep between rounds")
    ap.add_argument("--warmup-s", type=float, default=5.0)
    ap.add_argument("--window-s", type=float, default=15.0)
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument(
        "--name",
        default="ingest_rtsp",
        help="result file name: ingest_rtsp (the comparison) or e.g. ingest_rtsp_scale (cameras per process)",
    )
    ap.add_argument(
        "--fresh-process",
        action="store_true",
        help="measure each point in a new Python process, so its memory growth is its own (the scale table)",
    )
    ap.add_argument("--point-json", action="store_true", help=argparse.SUPPRESS)  # one point, JSON on stdout
    args = ap.parse_args(argv)
    ok, why = system_ready()
    if not ok:
        print(f"RTSP simulator unavailable: {why}", file=sys.stderr)
        return 2
    stream = prepare_stream(args.source, REPO / ".cache" / "streams", gop_s=1.0, max_height=360)
    fps = probe(stream).fps
    readers = list(args.readers)
    gst, gst_note = _gst() if "gst" in readers else (None, "not asked for")
    if "gst" in readers and gst is None:
        print(f"gst reader skipped: {gst_note}", file=sys.stderr)
        readers.remove("gst")
    points: list[dict[str, Any]] = []
    t_start = time.time()
    for k in args.cameras:
        for transport in args.transports:
            for reader in readers:  # a fresh simulator per point: no session carries over
                if args.fresh_process:
                    p = _point_in_child(args, reader, transport, k)
                else:
                    with RtspSimulator({"s": stream}, cameras=k) as sim:
                        p = measure(
                            reader,
                            sim.camera_urls(),
                            transport,
                            fps,
                            args.warmup_s,
                            args.window_s,
                            gst=gst,
                            poll_interval_s=args.poll_interval_s,
                        )
                if args.point_json:
                    print(json.dumps(p))
                    return 0
                points.append(p)
                print(
                    f"{reader:>4} {transport} K={k}: {p['cores_used']} cores "
                    f"({p['cameras_per_core']} cameras/core, user {p['user_s']} s sys {p['sys_s']} s), "
                    f"worst camera {p['packets_min_frac']} of its packets, simulator {p['simulator_cores']} cores"
                )
    ratios = {r: _ratios(points, r, args.cameras, args.transports) for r in readers if r != "raw"}
    record = {
        "command": " ".join([sys.executable, *sys.argv]),
        "source": str(args.source),
        "stream": {"path": str(stream.relative_to(REPO)), "fps": fps, "gop_s": 1.0, "height_px": 360},
        "settings": {
            "decode_mode": "keyframe",
            "analytics_fps": ANALYTICS_FPS,
            "window_s": args.window_s,
            "loop_poll_interval_s": args.poll_interval_s,
        },
        "gstreamer": gst_note,
        "fresh_process_per_point": args.fresh_process,
        "points": points,
        "ratio_ours_over_raw_per_core": ratios.get("ours", {}),
        "ratio_over_raw_per_core": ratios,
        "keyframe_decode_ms": _keyframe_decode_ms(stream),
        "run_wall_s": round(time.time() - t_start, 1),
    }
    record["per_camera"] = _per_camera(points)
    path = write_result(args.name, record, args.out)
    print(f"cameras per core over raw's: {ratios}; wrote {path}")
    return 0


def _ratios(points: list[dict[str, Any]], reader: str, counts: list[int], transports: list[str]) -> dict[str, float]:
    """``reader``'s cameras per core over the raw reader's, per ``transport/K``; only where both kept up."""
    out = {}
    by_key = {(p["reader"], p["transport"], p["cameras"]): p for p in points}
    for k in counts:
        for transport in transports:
            raw, other = by_key.get(("raw", transport, k)), by_key.get((reader, transport, k))
            # A reader that fell behind received less and so looks cheaper: no ratio for that point.
            if raw and other and raw["cores_used"] and other["cores_used"] and raw["keeps_up"] and other["keeps_up"]:
                out[f"{transport}/{k}"] = round(raw["cores_used"] / other["cores_used"], 3)
    return out


def _point_in_child(args: argparse.Namespace, reader: str, transport: str, cameras: int) -> dict[str, Any]:
    """One point measured by a new interpreter (``--point-json``): its RSS growth belongs to that point alone."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.performance.ingest_rtsp",
        "--point-json",
        *("--cameras", str(cameras), "--transports", transport, "--readers", reader),
        *("--warmup-s", str(args.warmup_s), "--window-s", str(args.window_s), "--source", str(args.source)),
        *("--poll-interval-s", str(args.poll_interval_s)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"point {reader}/{transport}/{cameras} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _per_camera(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Per reader: CPU per camera where it kept up, and memory and threads per camera from the points' slope."""
    out: dict[str, Any] = {}
    for reader in dict.fromkeys(p["reader"] for p in points):
        mine = sorted((p for p in points if p["reader"] == reader), key=lambda p: p["cameras"])
        row: dict[str, Any] = {
            "cpu_ms_per_camera_s": {
                f"{p['transport']}/{p['cameras']}": round(1e3 / p["cameras_per_core"], 2)
                for p in mine
                if p["keeps_up"] and p["cameras_per_core"]
            },
            "threads_per_camera": {str(p["cameras"]): round(p["python_threads"] / p["cameras"], 2) for p in mine},
        }
        # RSS growth from before the readers started to after the warm-up, per camera (exact only with
        # --fresh-process: otherwise memory freed by an earlier point is reused and the growth is smaller).
        row["rss_growth_mib_per_camera"] = {
            str(p["cameras"]): round(p["rss_growth_mib"] / p["cameras"], 3) for p in mine
        }
        rings = [p["ring_mib"] / p["cameras"] for p in mine if p.get("ring_mib") is not None]
        if rings:
            row["ring_mib_per_camera"] = round(sum(rings) / len(rings), 3)
        out[reader] = row
    return out


def _keyframe_decode_ms(stream: Path) -> dict[str, float]:
    """CPU-ms per keyframe of the same stream, decode and BGR apart, one thread: the floor under every reader."""
    with av.open(str(stream)) as container:
        video = container.streams.video[0]
        keys = [bytes(p) for p in container.demux(video) if p.size and p.is_keyframe]
        extradata = video.codec_context.extradata
    codec = _keyframe_codec()
    codec.extradata = extradata
    decode_s = convert_s = 0.0
    n = 0
    for _ in range(5):
        for data in keys:
            t0 = time.thread_time()
            frames = codec.decode(av.Packet(data))
            t1 = time.thread_time()
            for frame in frames:
                np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
                n += 1
            decode_s += t1 - t0
            convert_s += time.thread_time() - t1
    n = max(n, 1)
    return {
        "decode": round(decode_s / n * 1e3, 3),
        "bgr": round(convert_s / n * 1e3, 3),
        "cameras_per_core_at_1_keyframe_per_s": round(1e3 / ((decode_s + convert_s) / n * 1e3), 1),
    }


if __name__ == "__main__":
    raise SystemExit(main())
