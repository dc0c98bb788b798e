"""End to end: how many live cameras the product holds at 1 analytics fps, against the baseline program.

Both run in the same run, on the same RTSP simulator serving the same footage, with the same pass
criteria for a camera count N:

* every camera analysed at >= 0.9 of its 1 analytics fps over the measured window, and
* p99 frame age <= 1 s (packet received -> detections applied).

``product``: the real pipeline (:class:`cluster.runtime.Runtime`: local Ray, SeaweedFS, Serve
detector, decoder shards in keyframe mode). Cameras are added live between points (the control
plane's own ``add_cameras``), so one runtime serves the whole sweep. Frame age comes from the
shards' ``cctv_e2e_latency_seconds`` histograms (bucket deltas over the window: the fraction of
frames at or under 1 s is exact because 1 s is a bucket bound; p50/p99 are interpolated), the
per-camera rate from each camera's ``detections_received``. Where the time goes: the shards'
per-stage histogram ``cctv_frame_stage_seconds`` (decode, queue, preprocess, detector call, rules;
the stage means add up to the end-to-end mean), the decoder's own time
(``cctv_decode_seconds_total``: CPU-ms per decoded frame, cores spent decoding) and the replica's
forward pass (``cctv_detector_inference_seconds``); the detector call less the forward pass is
Serve's routing plus the replica's batch wait.

``baseline``: the one-process program a user would write instead: one ``cv2.VideoCapture`` reader
thread per RTSP camera decoding every frame, and once a second per camera the latest frame goes
through YOLOX-Nano on onnxruntime (the same runner and thread count) behind a lock.

The sweep stops at the first failing count (the knee) after at least one pass.

Run: ``.venv/bin/python -m benchmarks.performance.e2e [--resolution 360p] [--counts 16 32 48 64 80 96]
[--baseline-counts 8 16 24 32]``; JSON in ``benchmarks/results/e2e_<resolution>.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import ray
from prometheus_client.parser import text_string_to_metric_families

from actors.metrics import FRAME_STAGES
from benchmarks.common import cpu_timer, loadavg, write_result
from benchmarks.performance.cpu_accounting import cores_between, cpu_snapshot
from benchmarks.performance.ingest import clip_of, raw_keyframe_bgr
from cluster.footage import prepare_stream, probe
from cluster.rtsp_sim import RtspSimulator, system_ready
from cluster.runtime import Runtime
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig, IngestConfig, ZoneConfig
from contracts.detector import Letterboxed
from serve_apps.detector.deployment import load_model
from serve_apps.detector.onnx_runner import DetectorBase
from serve_apps.detector.preprocess import letterbox
from serve_apps.metrics_export import TARGETS_ACTOR, free_port

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

log = logging.getLogger("benchmarks.performance.e2e")

HEIGHTS = {"360p": 360, "720p": None}  # the footage is 720p natively
MIN_RATE_FRAC = 0.9
MAX_P99_AGE_S = 1.0
ANALYTICS_FPS = 1.0


@dataclass(slots=True)
class Point:
    """One camera count of one program."""

    program: str
    cameras: int
    window_s: float
    rate_min_fps: float
    rate_median_fps: float
    cameras_below_rate: int
    age_p50_s: float
    age_p99_s: float
    frac_age_within_1s: float
    passed: bool
    machine_busy_cores: float
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- histogram windows


def _scrape(addresses: list[str]) -> tuple[dict[str, dict[float, float]], dict[str, float]]:
    """Histogram buckets (metric -> upper bound -> cumulative count) and plain values (sums, counts,
    counters), summed over the endpoints. A ``stage`` label becomes part of the key: ``name{stage}``."""
    buckets: dict[str, dict[float, float]] = {}
    values: dict[str, float] = {}
    for addr in addresses:
        text = httpx.get(f"http://{addr}/metrics", timeout=10).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                stage = s.labels.get("stage")
                if s.name.endswith("_bucket"):
                    key = s.name[: -len("_bucket")] + (f"{{{stage}}}" if stage else "")
                    per = buckets.setdefault(key, {})
                    le = float(s.labels["le"])
                    per[le] = per.get(le, 0.0) + s.value
                elif s.name.endswith(("_sum", "_count", "_total")):
                    key = s.name + (f"{{{stage}}}" if stage else "")
                    values[key] = values.get(key, 0.0) + s.value
    return buckets, values


def _stages(
    h0: dict[str, dict[float, float]],
    h1: dict[str, dict[float, float]],
    v0: dict[str, float],
    v1: dict[str, float],
    window_s: float,
) -> dict[str, object]:
    """Where an analysed frame's time goes, from the shards' ``cctv_frame_stage_seconds`` over the window."""
    out: dict[str, object] = {}
    means = 0.0
    for stage in FRAME_STAGES:
        key = f"cctv_frame_stage_seconds{{{stage}}}"
        n = v1.get(f"cctv_frame_stage_seconds_count{{{stage}}}", 0.0) - v0.get(
            f"cctv_frame_stage_seconds_count{{{stage}}}", 0.0
        )
        if n <= 0:
            continue
        total = v1.get(f"cctv_frame_stage_seconds_sum{{{stage}}}", 0.0) - v0.get(
            f"cctv_frame_stage_seconds_sum{{{stage}}}", 0.0
        )
        b = _window(h0.get(key, {}), h1.get(key, {}))
        mean = total / n
        if stage != "frame_rules":  # only cameras with water/fire rules pass there
            means += mean
        out[stage] = {
            "frames": int(n),
            "mean_s": _r(mean),
            "p50_s": _r(_quantile(b, 0.5)),
            "p99_s": _r(_quantile(b, 0.99)),
        }
    e2e_n = v1.get("cctv_e2e_latency_seconds_count", 0.0) - v0.get("cctv_e2e_latency_seconds_count", 0.0)
    e2e_sum = v1.get("cctv_e2e_latency_seconds_sum", 0.0) - v0.get("cctv_e2e_latency_seconds_sum", 0.0)
    dec_s = v1.get("cctv_decode_seconds_total", 0.0) - v0.get("cctv_decode_seconds_total", 0.0)
    dec_n = v1.get("cctv_frames_decoded_total", 0.0) - v0.get("cctv_frames_decoded_total", 0.0)
    out["e2e_mean_s"] = _r(e2e_sum / e2e_n) if e2e_n > 0 else None
    out["stage_means_sum_s"] = _r(means)
    out["decode_cpu_ms_per_frame"] = round(dec_s / dec_n * 1000.0, 3) if dec_n > 0 else None
    out["decode_cores"] = _r(dec_s / window_s)
    return out


def _window(a: dict[float, float], b: dict[float, float]) -> list[tuple[float, float]]:
    return sorted((le, b.get(le, 0.0) - a.get(le, 0.0)) for le in b)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Interpolated quantile from cumulative bucket counts (as PromQL's histogram_quantile)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0.0)
        prev_le, prev_c = le, c
    return prev_le


def _within(buckets: list[tuple[float, float]], bound: float) -> float:
    total = buckets[-1][1] if buckets else 0.0
    at = next((c for le, c in buckets if le == bound), None)
    return (at / total) if total > 0 and at is not None else float("nan")


# ------------------------------------------------------------------------------------ product


def product_sweep(args: argparse.Namespace, stream: Path, urls: list[str], state: Path) -> list[Point]:
    info = probe(stream).info
    zone = ZoneConfig(
        name="all",
        polygon=[(0, 0), (info.width, 0), (info.width, info.height), (0, info.height)],
        crowd_threshold_people=10_000,  # the rule runs on every frame; it never opens an event
    )
    cams = [
        CameraConfig(
            id=f"cam-{i:03d}",
            url=url,
            decode_mode="keyframe",
            analytics_fps=ANALYTICS_FPS,
            zones=[zone],
            nominal_resolution=args.resolution,
        )
        for i, url in enumerate(urls, start=1)
    ]
    cfg = AppConfig(
        state_dir=state,
        cluster=ClusterConfig(
            num_shards=2,
            shard_num_cpus=0.5,
            local_num_cpus=4,
            serve_http_port=free_port(),
            queue_size_per_shard=64,
            max_in_flight_per_shard=args.in_flight,
        ),
        detector=DetectorConfig(
            models_dir=args.models_dir,
            max_batch_size=32,
            num_replicas=args.replicas,
            num_cpus_per_replica=1,
            intra_op_threads=args.threads,
        ),
        ingest=IngestConfig(rtsp_receiver=args.rtsp_receiver),
        cameras=[],
    )
    points: list[Point] = []
    with Runtime(cfg, include_dashboard=False, ray_init_kwargs={"object_store_memory": 512 * 1024**2}) as rt:
        ctl = rt.controller
        targets = ray.get_actor(TARGETS_ACTOR, namespace=cfg.cluster.namespace)
        for n in args.counts:
            have = len(ray.get(ctl.assignment.remote()))  # type: ignore[union-attr]
            if n > have:
                ray.get(ctl.add_cameras.remote(cams[have:n]))  # type: ignore[union-attr]
            time.sleep(args.warmup_s)
            addrs = [s.metrics_address for s in rt.stats()]
            det_addrs = [t.address for t in ray.get(targets.targets.remote()) if t.job == "detector"]
            st0 = {s.camera_id: s for s in ray.get(ctl.status.remote())}  # type: ignore[union-attr]
            (h0, v0), (d0, dv0), c0, t0 = _scrape(addrs), _scrape(det_addrs), cpu_snapshot(), time.time()
            time.sleep(args.measure_s)
            st1 = {s.camera_id: s for s in ray.get(ctl.status.remote())}  # type: ignore[union-attr]
            (h1, v1), (d1, dv1), c1, t1 = _scrape(addrs), _scrape(det_addrs), cpu_snapshot(), time.time()
            window = t1 - t0
            rates = [(st1[c.id].detections_received - st0[c.id].detections_received) / window for c in cams[:n]]
            e2e = _window(h0.get("cctv_e2e_latency_seconds", {}), h1.get("cctv_e2e_latency_seconds", {}))
            call = _window(h0.get("cctv_detector_call_seconds", {}), h1.get("cctv_detector_call_seconds", {}))
            inf = _window(d0.get("cctv_detector_inference_seconds", {}), d1.get("cctv_detector_inference_seconds", {}))
            batch = _window(d0.get("cctv_detector_batch_size", {}), d1.get("cctv_detector_batch_size", {}))
            frames = _window(h0.get("cctv_detector_call_frames", {}), h1.get("cctv_detector_call_frames", {}))
            p = _point("product", n, window, rates, _quantile(e2e, 0.5), _quantile(e2e, 0.99), _within(e2e, 1.0))
            cores = cores_between(c0, c1)
            p.machine_busy_cores = round(cores["machine_busy_cores"], 2)
            p.extra = {
                "cores_by_role": cores,
                "stages_s": {
                    "e2e_p50": _r(_quantile(e2e, 0.5)),
                    "e2e_p99": _r(_quantile(e2e, 0.99)),
                    "detector_call_p50": _r(_quantile(call, 0.5)),
                    "detector_call_p99": _r(_quantile(call, 0.99)),
                    "replica_forward_p50": _r(_quantile(inf, 0.5)),
                    "replica_forward_p99": _r(_quantile(inf, 0.99)),
                    "rest_p50 (decode + queue + rules)": _r(_quantile(e2e, 0.5) - _quantile(call, 0.5)),
                },
                "stage_breakdown": _stages(h0, h1, v0, v1, window),
                "replica_forward_busy_frac": _r(  # per replica: 1.0 = its forward thread never idle
                    (
                        dv1.get("cctv_detector_inference_seconds_sum", 0.0)
                        - dv0.get("cctv_detector_inference_seconds_sum", 0.0)
                    )
                    / window
                    / args.replicas
                ),
                "forward_batch_p50": _r(_quantile(batch, 0.5)),
                "frames_per_call_p50": _r(_quantile(frames, 0.5)),
                "frames_dropped": sum(st1[c.id].frames_dropped - st0[c.id].frames_dropped for c in cams[:n]),
                "loadavg": loadavg(),
            }
            points.append(p)
            _log(p)
            if not p.passed and any(q.passed for q in points):
                break
    return points


# ----------------------------------------------------------------------------------- baseline


def baseline_point(args: argparse.Namespace, urls: list[str], n: int) -> Point:
    """The one-process program: reader thread per camera (every frame decoded), detector behind a lock.

    The window starts ``warmup_s`` after the LAST camera delivered its first frame: opening a
    ``cv2.VideoCapture`` holds the GIL while FFmpeg probes the stream, so with a fixed warm-up the
    last of 24 cameras started measuring seconds late and looked slow (the same 4 cameras at 0.77 fps).
    """
    runner = _runner(args)
    lock = threading.Lock()
    stop = threading.Event()
    window = [float("inf"), float("inf")]  # [start, end], set once every camera is streaming
    opened = threading.Semaphore(0)
    counts = [0] * n
    ages: list[float] = []

    def camera(i: int, url: str) -> None:
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        next_due = time.time()
        first = True
        while not stop.is_set():
            ok, frame = cap.read()  # decodes every frame, as cv2 does
            got_at = time.time()
            if not ok:
                time.sleep(0.1)
                continue
            if first:
                first = False
                opened.release()
            if got_at < next_due:
                continue
            next_due += 1.0 / ANALYTICS_FPS
            if next_due < got_at:
                next_due = got_at + 1.0 / ANALYTICS_FPS
            with lock:
                runner.detect([letterbox(frame, runner.input_size)])
            done = time.time()
            if window[0] <= got_at and done <= window[1]:
                counts[i] += 1
                ages.append(done - got_at)
        cap.release()

    threads = [threading.Thread(target=camera, args=(i, u), daemon=True) for i, u in enumerate(urls[:n])]
    t_open = time.time()
    for t in threads:
        t.start()
    open_deadline = t_open + 120.0
    streaming = sum(opened.acquire(timeout=max(0.0, open_deadline - time.time())) for _ in threads)
    all_open_s = time.time() - t_open
    window[1] = time.time() + args.warmup_s + args.measure_s
    window[0] = window[1] - args.measure_s
    time.sleep(max(0.0, window[0] - time.time()))
    c0 = cpu_snapshot()
    time.sleep(max(0.0, window[1] - time.time()))
    c1 = cpu_snapshot()
    stop.set()
    for t in threads:
        t.join(10)
    rates = [c / args.measure_s for c in counts]
    ages.sort()
    p50 = ages[len(ages) // 2] if ages else float("nan")
    p99 = ages[min(len(ages) - 1, int(0.99 * len(ages)))] if ages else float("nan")
    within = sum(a <= 1.0 for a in ages) / len(ages) if ages else float("nan")
    p = _point("baseline", n, args.measure_s, rates, p50, p99, within)
    cores = cores_between(c0, c1)
    p.machine_busy_cores = round(cores["machine_busy_cores"], 2)
    p.extra = {"cores_by_role": cores, "cameras_streaming": streaming, "all_cameras_open_s": round(all_open_s, 1)}
    _log(p)
    return p


def _runner(args: argparse.Namespace) -> DetectorBase:
    """The detector runner both programs and the raw measurement use (same model, same threads)."""
    cfg = DetectorConfig(models_dir=args.models_dir, intra_op_threads=args.threads)
    return load_model(cfg, None, None, Path(tempfile.gettempdir())).runner


def raw_detector_cost(
    args: argparse.Namespace, stream: Path, batch: int = 8, duration_s: float = 6.0
) -> dict[str, float]:
    """The detector alone, in this process, on frames of the same stream: its CPU-ms per image at its
    best batch (the floor any serving of 1 image per camera-second pays), measured in the same run."""
    runner = _runner(args)
    cap = cv2.VideoCapture(str(stream))
    frames: list[Letterboxed] = []
    while len(frames) < batch:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(letterbox(frame, runner.input_size))
    cap.release()
    runner.detect(frames)  # warm-up
    images = 0
    with cpu_timer() as cpu:
        t_end = time.perf_counter() + duration_s
        while time.perf_counter() < t_end:
            runner.detect(frames)
            images += len(frames)
    return {
        "batch": batch,
        "images_per_s": round(images / cpu.wall_s, 1),
        "cpu_ms_per_image": round(cpu.cpu_s / images * 1000.0, 2),
        "onnxruntime_threads": args.threads,
    }


def raw_decode_cost(stream: Path, passes: int = 30) -> dict[str, float]:
    """A plain PyAV loop on the same stream file, demuxing every packet and decoding keyframes only
    (BGR at 1 fps): the CPU-ms one camera-second of ingest cannot go below."""
    clip = clip_of("e2e", str(stream), stream)
    with cpu_timer() as cpu:
        raw_keyframe_bgr(clip, passes)
    return {"cpu_ms_per_camera_s": round(cpu.cpu_s / (passes * clip.duration_s) * 1000.0, 3), "passes": passes}


def ceiling(
    raw_det: dict[str, float], raw_dec: dict[str, float], product: list[Point], cores: int
) -> dict[str, float] | None:
    """Cameras this machine could hold if only the unavoidable work ran: per camera-second one image
    through the raw detector, the raw keyframe decode, and what the RTSP simulator (which both
    programs share) spent per camera at the product's best passing point. Ray, Serve, the shards'
    hand-offs and the operating system count as free, so no program on this machine can pass it.

    The simulator's share comes from the product's largest passing point, or from its largest
    measured point when none passed (a loaded machine, a window too short): the ceiling is a
    property of the machine and the streams, not of whether the product kept up.
    """
    if not product:
        return None
    passing = [p for p in product if p.passed]
    best = max(passing or product, key=lambda p: p.cameras)
    by_role = best.extra["cores_by_role"]
    sim_ms = by_role.get("rtsp_simulator_cores", 0.0) / best.cameras * 1000.0
    det_ms = raw_det["cpu_ms_per_image"] * ANALYTICS_FPS
    per_camera_ms = det_ms + raw_dec["cpu_ms_per_camera_s"] + sim_ms
    return {
        "detector_cpu_ms_per_camera_s": round(det_ms, 2),
        "decode_cpu_ms_per_camera_s": raw_dec["cpu_ms_per_camera_s"],
        "simulator_cpu_ms_per_camera_s": round(sim_ms, 2),
        "simulator_measured_at_cameras": best.cameras,
        "simulator_measured_at_passing_point": best.passed,
        "cores": cores,
        "cameras_ceiling": round(cores * 1000.0 / per_camera_ms, 1),
    }


def baseline_sweep(args: argparse.Namespace, urls: list[str]) -> list[Point]:
    points: list[Point] = []
    for n in args.baseline_counts:
        points.append(baseline_point(args, urls, n))
        if not points[-1].passed and any(q.passed for q in points):
            break
    return points


# -------------------------------------------------------------------------------------- common


def _r(v: float) -> float | None:
    return None if v != v else round(v, 4)


def _point(program: str, n: int, window_s: float, rates: list[float], p50: float, p99: float, within: float) -> Point:
    below = sum(r < MIN_RATE_FRAC * ANALYTICS_FPS for r in rates)
    passed = below == 0 and within >= 0.99 and bool(rates)
    return Point(
        program,
        n,
        round(window_s, 2),
        round(min(rates), 3) if rates else 0.0,
        round(statistics.median(rates), 3) if rates else 0.0,
        below,
        _r(p50) or 0.0,
        _r(p99) or 0.0,
        _r(within) or 0.0,
        passed,
        0.0,
    )


def _log(p: Point) -> None:
    log.info(
        "%s N=%d: rate min %.2f median %.2f (%d below), age p50 %.2f p99 %.2f s (%.3f <= 1 s), busy %.2f -> %s",
        p.program,
        p.cameras,
        p.rate_min_fps,
        p.rate_median_fps,
        p.cameras_below_rate,
        p.age_p50_s,
        p.age_p99_s,
        p.frac_age_within_1s,
        p.machine_busy_cores,
        "PASS" if p.passed else "fail",
    )


def _held(points: list[Point]) -> int:
    return max((p.cameras for p in points if p.passed), default=0)


def _held_is_lower_bound(points: list[Point]) -> bool:
    """True when the sweep's largest count passed: the program may hold more than the sweep tried."""
    return bool(points) and points[-1].passed


def _print_stages(points: list[Point]) -> None:
    """Per-stage mean / p99 (ms) of each product point, as a table on stdout."""
    cols = [s for s in FRAME_STAGES if any(s in p.extra.get("stage_breakdown", {}) for p in points)]
    if not cols:
        return
    print("\nwhere an analysed frame's time goes (mean / p99 ms, from cctv_frame_stage_seconds)")
    print(f"{'cameras':>8} " + " ".join(f"{c:>16}" for c in cols) + f" {'e2e mean':>9} {'decode ms/frame':>16}")
    for p in points:
        b = p.extra.get("stage_breakdown", {})

        def ms(v: object) -> str:
            return "-" if not isinstance(v, float | int) else f"{v * 1000:.0f}"

        cells = [f"{ms(b[c]['mean_s'])} / {ms(b[c]['p99_s'])}" if c in b else "-" for c in cols]
        dec = b.get("decode_cpu_ms_per_frame")
        print(
            f"{p.cameras:>8} "
            + " ".join(f"{x:>16}" for x in cells)
            + f" {ms(b.get('e2e_mean_s')):>9} {dec if dec is not None else '-':>16}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--resolution", choices=sorted(HEIGHTS), default="360p")
    ap.add_argument("--counts", type=int, nargs="+", default=[16, 32, 48, 64, 80, 96, 112, 128])
    ap.add_argument("--baseline-counts", type=int, nargs="+", default=[8, 12, 16, 20, 24, 28, 32, 40])
    ap.add_argument("--warmup-s", type=float, default=15.0)
    ap.add_argument("--measure-s", type=float, default=30.0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="onnxruntime threads, no spinning (both programs; the product default: on shared cores one thread "
        "costs 16 CPU-ms per image, two spinning threads 22-43; benchmarks/performance/ort_threads.py)",
    )
    ap.add_argument(
        "--source", type=Path, default=REPO.parent / "shared" / "data" / "clips" / "street_people_walking.mp4"
    )
    ap.add_argument("--models-dir", type=Path, default=REPO.parent / "shared" / "models")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="product: detector replicas (one forward thread each; one replica tops out at ~40 images/s here)",
    )
    ap.add_argument(
        "--in-flight", type=int, default=4, help="product: detector calls in flight per shard (the config default)"
    )
    ap.add_argument(
        "--rtsp-receiver",
        choices=("ffmpeg", "loop"),
        default="ffmpeg",
        help="product: ingest.rtsp_receiver (loop: one receive thread per shard)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    ok, why = system_ready()
    if not ok:
        print(f"RTSP simulator unavailable: {why}", file=sys.stderr)
        return 2
    stream = prepare_stream(args.source, REPO / ".cache" / "streams", gop_s=1.0, max_height=HEIGHTS[args.resolution])
    info = probe(stream)
    n_max = max([*args.counts, *args.baseline_counts])
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="cctv-e2e-") as tmp:
        state = Path(tmp)
        with RtspSimulator({"street": stream}, cameras=n_max, log_path=state / "sim.log") as sim:
            urls = sim.camera_urls()
            baseline = [] if args.skip_baseline else baseline_sweep(args, urls)
            product = product_sweep(args, stream, urls, state / "product")
    raw = raw_detector_cost(args, stream)
    raw_dec = raw_decode_cost(stream)
    limit = ceiling(raw, raw_dec, product, os.cpu_count() or 1)
    held_p, held_b = _held(product), _held(baseline)
    record = {
        "command": " ".join([sys.executable, *sys.argv]),
        "footage": {
            "source": str(args.source),
            "stream": str(stream.relative_to(REPO)),
            "width_px": info.info.width,
            "height_px": info.info.height,
            "fps": info.fps,
        },
        "criteria": {
            "analytics_fps": ANALYTICS_FPS,
            "min_rate_fraction": MIN_RATE_FRAC,
            "max_p99_frame_age_s": MAX_P99_AGE_S,
        },
        "settings": {
            "warmup_s": args.warmup_s,
            "measure_s": args.measure_s,
            "onnxruntime_threads": args.threads,
            "onnxruntime_spinning": False,
            "product": f"2 shards keyframe decode, {args.replicas} detector replica(s) (max_batch_size 32), lists per "
            "call merged behind the running forward pass",
            "product_in_flight_per_shard": args.in_flight,
            "product_rtsp_receiver": args.rtsp_receiver,
            "baseline": "cv2.VideoCapture thread per camera decoding every frame; detector behind a lock",
        },
        "product": [asdict(p) for p in product],
        "baseline": [asdict(p) for p in baseline],
        "cameras_held": {"product": held_p, "baseline": held_b},
        "cameras_held_is_lower_bound": {
            "product": _held_is_lower_bound(product),
            "baseline": _held_is_lower_bound(baseline),
        },
        "ratio_product_over_baseline": round(held_p / held_b, 2) if held_b else None,
        "target_ratio": 4.0,
        "raw_detector": raw,
        "raw_keyframe_decode": raw_dec,
        "machine_ceiling": limit,
        "ratio_product_over_ceiling": round(held_p / limit["cameras_ceiling"], 2) if limit else None,
        "ratio_ceiling_over_baseline": round(limit["cameras_ceiling"] / held_b, 2) if limit and held_b else None,
        "run_wall_s": round(time.time() - t_start, 1),
    }
    path = write_result(f"e2e_{args.resolution}", record, args.out)
    _print_stages(product)
    print(
        f"\n{args.resolution}: product held {held_p} cameras, baseline {held_b}"
        f" -> {record['ratio_product_over_baseline']}x (target 4x); this machine's ceiling "
        f"{limit['cameras_ceiling'] if limit else '-'} cameras (raw detector {raw['cpu_ms_per_image']} CPU-ms/image); "
        f"wrote {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
