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
per-camera rate from each camera's ``detections_received``. Where the time goes: the shard-side
detector call (``cctv_detector_call_seconds``) and the replica's forward pass
(``cctv_detector_inference_seconds``), the remainder being decode, queueing and rules.

``baseline``: the one-process program a user would write instead: one ``cv2.VideoCapture`` reader
thread per RTSP camera decoding every frame, and once a second per camera the latest frame goes
through YOLOX-Nano on onnxruntime (the same runner and thread count) behind a lock.

The sweep stops at the first failing count (the knee) after at least one pass.

Run: ``.venv/bin/python benchmarks/e2e.py [--resolution 360p] [--counts 16 32 48 64 80 96]
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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

import cv2  # noqa: E402
import httpx  # noqa: E402
import ray  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks.common import loadavg, write_result  # noqa: E402
from cluster.footage import prepare_stream, probe  # noqa: E402
from cluster.rtsp_sim import RtspSimulator, system_ready  # noqa: E402
from cluster.runtime import Runtime  # noqa: E402
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig, ZoneConfig  # noqa: E402
from serve_apps.detector.deployment import load_model  # noqa: E402
from serve_apps.detector.preprocess import letterbox  # noqa: E402
from serve_apps.metrics_export import TARGETS_ACTOR, free_port  # noqa: E402

log = logging.getLogger("benchmarks.e2e")

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


def _scrape(addresses: list[str]) -> dict[str, dict[float, float]]:
    """metric -> upper bound -> cumulative count, summed over the endpoints."""
    out: dict[str, dict[float, float]] = {}
    for addr in addresses:
        text = httpx.get(f"http://{addr}/metrics", timeout=10).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    per = out.setdefault(s.name[: -len("_bucket")], {})
                    per[le] = per.get(le, 0.0) + s.value
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


def _busy_cores(t0: tuple[float, float], t1: tuple[float, float]) -> float:
    busy = t1[0] - t0[0]
    return busy / (t1[1] - t0[1]) * os.cpu_count() if t1[1] > t0[1] else 0.0  # type: ignore[operator]


def _cpu_times() -> tuple[float, float]:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [float(x) for x in fields]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


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
            models_dir=args.models_dir, max_batch_size=32, num_cpus_per_replica=1, intra_op_threads=args.threads
        ),
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
            h0, d0, c0, t0 = _scrape(addrs), _scrape(det_addrs), _cpu_times(), time.time()
            time.sleep(args.measure_s)
            st1 = {s.camera_id: s for s in ray.get(ctl.status.remote())}  # type: ignore[union-attr]
            h1, d1, c1, t1 = _scrape(addrs), _scrape(det_addrs), _cpu_times(), time.time()
            window = t1 - t0
            rates = [(st1[c.id].detections_received - st0[c.id].detections_received) / window for c in cams[:n]]
            e2e = _window(h0.get("cctv_e2e_latency_seconds", {}), h1.get("cctv_e2e_latency_seconds", {}))
            call = _window(h0.get("cctv_detector_call_seconds", {}), h1.get("cctv_detector_call_seconds", {}))
            inf = _window(d0.get("cctv_detector_inference_seconds", {}), d1.get("cctv_detector_inference_seconds", {}))
            batch = _window(d0.get("cctv_detector_batch_size", {}), d1.get("cctv_detector_batch_size", {}))
            frames = _window(h0.get("cctv_detector_call_frames", {}), h1.get("cctv_detector_call_frames", {}))
            p = _point("product", n, window, rates, _quantile(e2e, 0.5), _quantile(e2e, 0.99), _within(e2e, 1.0))
            p.machine_busy_cores = round(_busy_cores(c0, c1), 2)
            p.extra = {
                "stages_s": {
                    "e2e_p50": _r(_quantile(e2e, 0.5)),
                    "e2e_p99": _r(_quantile(e2e, 0.99)),
                    "detector_call_p50": _r(_quantile(call, 0.5)),
                    "detector_call_p99": _r(_quantile(call, 0.99)),
                    "replica_forward_p50": _r(_quantile(inf, 0.5)),
                    "replica_forward_p99": _r(_quantile(inf, 0.99)),
                    "rest_p50 (decode + queue + rules)": _r(_quantile(e2e, 0.5) - _quantile(call, 0.5)),
                },
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
    """The one-process program: reader thread per camera (every frame decoded), detector behind a lock."""
    runner = load_model(
        DetectorConfig(models_dir=args.models_dir, intra_op_threads=args.threads),
        None,
        None,
        Path(tempfile.gettempdir()),
    ).runner
    lock = threading.Lock()
    stop = threading.Event()
    t_measure = time.time() + args.warmup_s
    t_end = t_measure + args.measure_s
    counts = [0] * n
    ages: list[float] = []

    def camera(i: int, url: str) -> None:
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        next_due = time.time()
        while not stop.is_set():
            ok, frame = cap.read()  # decodes every frame, as cv2 does
            got_at = time.time()
            if not ok:
                time.sleep(0.1)
                continue
            if got_at < next_due:
                continue
            next_due += 1.0 / ANALYTICS_FPS
            if next_due < got_at:
                next_due = got_at + 1.0 / ANALYTICS_FPS
            with lock:
                runner.detect([letterbox(frame, runner.input_size)])
            done = time.time()
            if t_measure <= got_at and done <= t_end:
                counts[i] += 1
                ages.append(done - got_at)
        cap.release()

    threads = [threading.Thread(target=camera, args=(i, u), daemon=True) for i, u in enumerate(urls[:n])]
    c0 = None
    for t in threads:
        t.start()
    time.sleep(max(0.0, t_measure - time.time()))
    c0 = _cpu_times()
    time.sleep(max(0.0, t_end - time.time()))
    c1 = _cpu_times()
    stop.set()
    for t in threads:
        t.join(10)
    rates = [c / args.measure_s for c in counts]
    ages.sort()
    p50 = ages[len(ages) // 2] if ages else float("nan")
    p99 = ages[min(len(ages) - 1, int(0.99 * len(ages)))] if ages else float("nan")
    within = sum(a <= 1.0 for a in ages) / len(ages) if ages else float("nan")
    p = _point("baseline", n, args.measure_s, rates, p50, p99, within)
    p.machine_busy_cores = round(_busy_cores(c0, c1), 2)
    _log(p)
    return p


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--resolution", choices=sorted(HEIGHTS), default="360p")
    ap.add_argument("--counts", type=int, nargs="+", default=[16, 32, 48, 64, 80, 96, 112, 128])
    ap.add_argument("--baseline-counts", type=int, nargs="+", default=[8, 12, 16, 20, 24, 28, 32, 40])
    ap.add_argument("--warmup-s", type=float, default=15.0)
    ap.add_argument("--measure-s", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads (both programs)")
    ap.add_argument(
        "--source", type=Path, default=REPO.parent / "shared" / "data" / "clips" / "street_people_walking.mp4"
    )
    ap.add_argument("--models-dir", type=Path, default=REPO.parent / "shared" / "models")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--in-flight", type=int, default=4, help="product: detector calls in flight per shard (the config default)"
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
            "product": "2 shards keyframe decode, 1 detector replica (max_batch_size 32), lists per call",
            "product_in_flight_per_shard": args.in_flight,
            "baseline": "cv2.VideoCapture thread per camera decoding every frame; detector behind a lock",
        },
        "product": [asdict(p) for p in product],
        "baseline": [asdict(p) for p in baseline],
        "cameras_held": {"product": held_p, "baseline": held_b},
        "ratio_product_over_baseline": round(held_p / held_b, 2) if held_b else None,
        "target_ratio": 4.0,
        "run_wall_s": round(time.time() - t_start, 1),
    }
    path = write_result(f"e2e_{args.resolution}", record, args.out)
    print(
        f"\n{args.resolution}: product held {held_p} cameras, baseline {held_b}"
        f" -> {record['ratio_product_over_baseline']}x (target 4x); wrote {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
