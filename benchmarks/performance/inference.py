"""Detector throughput: the raw ONNX runner against the same runner behind Ray Serve.

YOLOX-Nano at 416 px on onnxruntime (CPU), at batch sizes 1, 2, 4, 8, 16, 32 and 64:

* ``raw``: the runner in this process, ``runner.detect(batch of B letterboxed frames)``;
  img/s = images / wall, latency = one batch.
* ``raw_jpeg``: the same, plus the per-image work the HTTP route does before batching
  (``cv2.imdecode`` of the JPEG and ``letterbox``): the fair baseline for the HTTP series.
* ``serve_handle``: one replica, ``max_batch_size = B``, ``batch_wait_timeout_s`` small
  (``--batch-wait-s``, 0.01), called through a ``DeploymentHandle`` by B closed-loop callers
  (asyncio, each keeps one request in flight); latency is per request; the batch sizes the
  replica formed (``DetectResult.batch_size``) are recorded.
* ``serve_http``: as ``serve_handle``, but B concurrent httpx clients POST the frames as JPEG
  to ``/detect/<model>``; the replica decodes and letterboxes each (that cost is in this path).
* ``serve_handle_list``: the shards' path. 2 closed-loop callers (a shard's detector workers)
  each send lists of B frames in one ``detect_frames`` call; the replica runs a list in one
  forward pass, so Serve's per-call cost is paid once per B frames.
* ``serve_http_list``: the same over HTTP: 2 clients POST multipart bodies of B JPEGs to
  ``/detect/<model>``; its fair baseline is ``raw_jpeg``.
* ``serve_handle_fill``, ``serve_http_fill``: the same as ``serve_handle``/``serve_http`` with ``batch_wait_timeout_s =
  --fill-wait-s`` (0.5) so a batch waits until B requests are there; ``serve_handle_fill_2x``
  with 2B callers, so the next full batch is queued while one runs.

Why the ``_fill`` series: in Ray Serve 2.60 ``@serve.batch`` forms the next batch while the
current one still runs (``_process_batches`` calls ``wait_for_batch`` again before the
``max_concurrent_batches`` semaphore is free). Under load a batch therefore closes after
``batch_wait_timeout_s`` with whatever arrived in that window, and queues behind the running
one: with a small timeout the formed batches stay small however large B is.

The runner is built exactly as the replica builds it (:func:`load_model` from the same
:class:`DetectorConfig`), with the same ``intra_op_threads``; the replica asks Ray for that
many CPUs. Every series runs in this one process. For each batch size all series are
measured in turn, in ``--rounds`` alternating rounds (pooled; each round's rate is kept), so
a slow spell of a shared machine hits every series, and a point during which other processes
used CPU is measured again. Throughput of a closed loop is exact per caller
(its requests sent after warm-up over the span from the first send to the last answer),
summed over callers, so it does not depend on where a window cuts a batch.

Where the time goes is measured, not assumed: CPU seconds per process group (this driver,
the replica, the Serve proxy and controller, raylet/GCS, everything else on the machine)
over each measurement, the replica's own forward-pass time per batch (``inference_ms``) and
its busy fraction. Ratio ~ (raw batch time / replica batch time) x busy fraction, at equal
batch size. When the machine is saturated (every series here keeps all cores busy), the
ratio is also ~ raw CPU-ms per image / Serve CPU-ms per image summed over all processes:
the ``*_cpu_ms_per_image`` fields say which process the extra went to.

Run: ``.venv/bin/python -m benchmarks.performance.inference [--quick] [--models-dir ../shared/models]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import ray
from ray import serve

from benchmarks.common import loadavg, write_result
from benchmarks.performance.cpu_accounting import CpuSnapshot, cores_between, cpu_snapshot
from cluster.ray_session import shutdown_ray
from configs.schema import DetectorConfig
from contracts.detector import DetectRequest, DetectResult, Letterboxed
from serve_apps.detector.deployment import (
    DETECTOR_DEPLOYMENT,
    build_detector_app,
    detector_route,
    load_model,
)
from serve_apps.detector.onnx_runner import DetectorBase
from serve_apps.detector.preprocess import letterbox
from serve_apps.metrics_export import free_port

REPO = Path(__file__).resolve().parents[2]
# A local benchmark cluster: no usage reporting, no token auth (read when Ray starts, as in cluster/runtime.py).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

log = logging.getLogger("benchmarks.performance.inference")

MODEL = "yolox_nano"
INPUT_SIZE = 416
APP = f"detector-{MODEL}"  # batch_wait_timeout_s small
APP_FILL = f"detector-{MODEL}-fill"  # batch_wait_timeout_s = fill wait
NAMESPACE = "cctv-bench-inference"
VTEST = REPO / ".cache" / "footage" / "vtest.avi"
FULL_BATCHES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCHES = (1, 8, 32)
RATIO_TARGET = 0.85
LIST_CALLERS = 2
SERVE_SERIES = (
    "serve_handle",
    "serve_http",
    "serve_handle_list",
    "serve_http_list",
    "serve_handle_fill",
    "serve_handle_fill_2x",
    "serve_http_fill",
)
JPEG_SERIES = ("serve_http", "serve_http_list", "serve_http_fill")
SERIES = ("raw", "raw_jpeg", *SERVE_SERIES)


# --------------------------------------------------------------------------------- measurements


@dataclass(slots=True)
class Point:
    """One series at one batch size."""

    series: str
    batch: int
    callers: int
    images: int = 0
    wall_s: float = 0.0
    images_per_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    cores: dict[str, float] = field(default_factory=dict)
    loadavg_before: list[float] | None = None
    loadavg_after: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    images_per_call: int = 1

    def to_json(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        out: dict[str, Any] = {
            "callers": self.callers,
            "images_per_call": self.images_per_call,
            "images": self.images,
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(self.images_per_s, 2),
            "latency_samples": len(lat),
            "latency_p50_ms": round(_pct(lat, 50), 2),
            "latency_p99_ms": round(_pct(lat, 99), 2),
            "latency_mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            **self.extra,
        }
        if self.batch_sizes:
            # Each batch's forward time is carried by all its requests: a request of k images in a batch of
            # b carries k / b of it, so summing (k / b) x inference_ms over requests gives the replica's
            # compute time for those batches, and summing k / b the batch count.
            k = self.images_per_call
            batches = sum(k / b for b in self.batch_sizes)
            compute_ms = sum(i * k / b for i, b in zip(self.inference_ms, self.batch_sizes, strict=True))
            out.update(
                {
                    "batch_size_mean_per_batch": round(len(self.batch_sizes) * k / batches, 2),
                    "batch_size_mean_per_request": round(statistics.fmean(self.batch_sizes), 2),
                    "batch_size_min": min(self.batch_sizes),
                    "batch_size_max": max(self.batch_sizes),
                    "requests_in_full_batches_fraction": round(
                        sum(b == self.batch for b in self.batch_sizes) / len(self.batch_sizes), 3
                    ),
                    "replica_inference_ms_per_batch_mean": round(compute_ms / batches, 2),
                    "replica_busy_fraction": round(min(1.0, compute_ms / 1000.0 / self.wall_s), 3)
                    if self.wall_s > 0
                    else None,
                }
            )
        out.update(self.cores)
        if self.images_per_s > 0:  # where the CPU went, per image served
            for key, cores in self.cores.items():
                if key != "machine_busy_cores":
                    out[key.replace("_cores", "_cpu_ms_per_image")] = round(cores * 1000.0 / self.images_per_s, 2)
        out["loadavg_before"] = self.loadavg_before
        out["loadavg_after"] = self.loadavg_after
        return out


def pool_points(points: list[Point]) -> Point:
    """Rounds of one series as one point: rates weighted by wall time, samples concatenated.

    Each round's rate stays in ``round_images_per_s`` (the spread between rounds is the noise).
    """
    first = points[0]
    wall = sum(p.wall_s for p in points)
    cores = {k: round(sum(p.cores.get(k, 0.0) * p.wall_s for p in points) / wall, 3) for k in first.cores}
    return Point(
        first.series,
        first.batch,
        first.callers,
        images=sum(p.images for p in points),
        wall_s=wall,
        images_per_s=sum(p.images_per_s * p.wall_s for p in points) / wall,
        latencies_ms=[v for p in points for v in p.latencies_ms],
        batch_sizes=[v for p in points for v in p.batch_sizes],
        inference_ms=[v for p in points for v in p.inference_ms],
        cores=cores,
        loadavg_before=first.loadavg_before,
        loadavg_after=points[-1].loadavg_after,
        images_per_call=first.images_per_call,
        extra={
            "rounds": len(points),
            "round_images_per_s": [round(p.images_per_s, 2) for p in points],
            "round_foreign_cores": [p.cores.get("foreign_cores") for p in points],
            "round_attempts": [p.extra.get("attempts", 1) for p in points],
        },
    )


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def measure_raw(
    series: str,
    batch: int,
    make_batch: Callable[[int], list[Letterboxed]],
    runner: DetectorBase,
    warmup_s: float,
    duration_s: float,
    min_answers: int,
) -> Point:
    """Sequential batches in this thread; ``make_batch`` is inside the timed region (raw_jpeg decodes there)."""
    point = Point(series, batch, callers=1, loadavg_before=loadavg())
    i = 0
    t_end_warm = time.perf_counter() + warmup_s
    while i < 2 or time.perf_counter() < t_end_warm:
        runner.detect(make_batch(i))
        i += 1
    snap0 = cpu_snapshot()
    t0 = time.perf_counter()
    rounds = 0
    while rounds < min_answers or time.perf_counter() - t0 < duration_s:
        ts = time.perf_counter()
        runner.detect(make_batch(i))
        point.latencies_ms.append((time.perf_counter() - ts) * 1000.0)
        i += 1
        rounds += 1
    snap1 = cpu_snapshot()
    point.wall_s = time.perf_counter() - t0
    point.images = rounds * batch
    point.images_per_s = point.images / point.wall_s
    point.cores = cores_between(snap0, snap1)
    point.loadavg_after = loadavg()
    return point


async def measure_closed_loop(
    series: str,
    batch: int,
    callers: int,
    call: Callable[[int, int], Awaitable[tuple[int, float]]],
    warmup_s: float,
    duration_s: float,
    min_answers: int,
    images_per_call: int = 1,
) -> Point:
    """``callers`` coroutines, each with one request in flight; ``call(caller, i)`` -> (batch_size, inference_ms).

    A call carries ``images_per_call`` images (1, or B for the list series); rates count images.

    A request counts when it was sent after the warm-up. Throughput is exact per caller
    (its counted requests over the span from its first counted send to its last answer) and
    summed over callers; every caller stops once ``duration_s`` has passed and each has
    ``min_answers`` counted answers.
    """
    point = Point(series, batch, callers=callers, images_per_call=images_per_call)
    loop_t0 = time.perf_counter()
    t_measure = loop_t0 + warmup_s
    stop = asyncio.Event()
    counted = [0] * callers
    spans: list[tuple[float, float, int]] = [(0.0, 0.0, 0)] * callers

    async def caller(j: int) -> None:
        first_send: float | None = None
        last_done = 0.0
        n = 0
        i = 0
        while not stop.is_set():
            ts = time.perf_counter()
            bs, inf_ms = await call(j, i)
            td = time.perf_counter()
            i += 1
            if ts >= t_measure:
                if first_send is None:
                    first_send = ts
                n += 1
                last_done = td
                counted[j] = n
                point.latencies_ms.append((td - ts) * 1000.0)
                point.batch_sizes.append(bs)
                point.inference_ms.append(inf_ms)
                if td - t_measure >= duration_s and min(counted) >= min_answers:
                    stop.set()
        spans[j] = (first_send or 0.0, last_done, n)

    async def sampler() -> tuple[CpuSnapshot, CpuSnapshot, list[float] | None]:
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        load = loadavg()
        a = cpu_snapshot()
        await stop.wait()
        return a, cpu_snapshot(), load

    results = await asyncio.gather(sampler(), *(caller(j) for j in range(callers)))
    snap0, snap1, point.loadavg_before = results[0]
    point.loadavg_after = loadavg()
    point.cores = cores_between(snap0, snap1)
    rate = 0.0
    walls: list[float] = []
    for first, last, n in spans:
        if n > 0 and last > first:
            rate += n * images_per_call / (last - first)
            walls.append(last - first)
    point.images = sum(n for _, _, n in spans) * images_per_call
    point.wall_s = statistics.fmean(walls) if walls else 0.0
    point.images_per_s = rate
    return point


# ------------------------------------------------------------------------------------- workload


def load_frames(path: Path, count: int, size: int) -> tuple[list[np.ndarray], list[Letterboxed], list[bytes]]:
    """``count`` frames spread over the clip: BGR, letterboxed, and JPEG-encoded (cv2 default quality)."""
    if not path.is_file():
        raise SystemExit(f"{path} missing: run scripts/fetch_vtest.sh {path.parent}")
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    step = max(1, total // count)
    frames: list[np.ndarray] = []
    idx = 0
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            idx = 0
            continue
        if idx % step == 0:
            frames.append(frame)
        idx += 1
    cap.release()
    boxed = [letterbox(f, size) for f in frames]
    jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
    return frames, boxed, jpegs


def detector_cfg(models_dir: Path, batch: int, wait_s: float, threads: int) -> DetectorConfig:
    """One replica of ``threads`` CPUs and onnxruntime threads; room for 2B requests in flight."""
    return DetectorConfig(
        model_name=MODEL,
        models_dir=models_dir,
        input_size=INPUT_SIZE,
        max_batch_size=batch,
        batch_wait_timeout_s=wait_s,
        num_cpus_per_replica=threads,
        intra_op_threads=threads,
        max_ongoing_requests=max(4, 2 * batch),
        max_queued_requests=max(64, 8 * batch),
    )


def deploy(apps: dict[str, tuple[DetectorConfig, str]]) -> float:
    """(Re)deploy one detector app per ``name -> (config, route)``; returns seconds until all serve.

    Both apps stay resident; only the one being measured gets requests (an idle replica used
    under 0.05 cores in every measurement here: see ``serve_replica_cores`` of the raw points).
    """
    t0 = time.perf_counter()
    existing = serve.status().applications
    for name in apps:
        if name in existing:
            serve.delete(name)
    for name, (cfg, route) in apps.items():
        serve.run(build_detector_app(cfg, NAMESPACE, "127.0.0.1"), name=name, route_prefix=route)
    return time.perf_counter() - t0


def compare_outputs(runner: DetectorBase, handle: Any, boxed: Letterboxed) -> dict[str, Any]:
    """The replica's answer for one frame against the raw runner's."""
    raw = runner.detect([boxed])[0]
    req = DetectRequest(camera_id="check", frame_seq=0, capture_ts=time.time(), letterboxed=boxed)
    served: DetectResult = handle.detect.remote(req).result(timeout_s=120)
    same_count = len(raw) == len(served.detections)
    diff = (
        max(
            (
                abs(a - b)
                for r, s in zip(raw, served.detections, strict=True)
                for a, b in zip(r.box, s.box, strict=True)
            ),
            default=0.0,
        )
        if same_count
        else None
    )
    return {
        "raw_detections": len(raw),
        "served_detections": len(served.detections),
        "max_box_diff_px": None if diff is None else round(diff, 4),
        "match": bool(same_count and diff is not None and diff < 0.5),
        "served_model": served.model,
    }


def wait_for_quiet(max_load: float, max_wait_s: float) -> dict[str, Any]:
    """Wait (up to ``max_wait_s``) for the 1-minute load average to drop below ``max_load``."""
    t0 = time.perf_counter()
    load = loadavg()
    while load is not None and load[0] >= max_load and time.perf_counter() - t0 < max_wait_s:
        log.info("load average %.2f >= %.2f; waiting", load[0], max_load)
        time.sleep(10)
        load = loadavg()
    return {
        "max_load": max_load,
        "waited_s": round(time.perf_counter() - t0, 1),
        "loadavg_at_start": load,
        "quiet_at_start": load is None or load[0] < max_load,
    }


def wait_for_no_foreign_load(max_cores: float, max_wait_s: float, probe_s: float = 2.0) -> dict[str, Any]:
    """Wait (up to ``max_wait_s``) until processes outside this run use under ``max_cores`` cores.

    Checked before each batch size: the load average cannot tell our own Ray processes from
    another job, the per-process accounting can.
    """
    t0 = time.perf_counter()
    while True:
        a = cpu_snapshot()
        time.sleep(probe_s)
        foreign = cores_between(a, cpu_snapshot())["foreign_cores"]
        if foreign < max_cores or time.perf_counter() - t0 >= max_wait_s:
            return {"foreign_cores": foreign, "waited_s": round(time.perf_counter() - t0, 1)}
        log.info("other processes use %.2f cores; waiting", foreign)


# ------------------------------------------------------------------------------------- the run


@dataclass(slots=True)
class Workload:
    boxed: list[Letterboxed]
    jpegs: list[bytes]
    reqs: list[DetectRequest]
    base_url: str
    warmup_s: float
    duration_s: float
    min_answers: int


async def handle_point(series: str, batch: int, callers: int, handle: Any, w: Workload) -> Point:
    n = len(w.reqs)

    async def call(j: int, i: int) -> tuple[int, float]:
        res: DetectResult = await handle.detect.remote(w.reqs[(j + i * callers) % n])
        return res.batch_size, res.inference_ms

    return await measure_closed_loop(series, batch, callers, call, w.warmup_s, w.duration_s, w.min_answers)


async def handle_list_point(series: str, batch: int, handle: Any, w: Workload) -> Point:
    n = len(w.reqs)

    async def call(j: int, i: int) -> tuple[int, float]:
        first = (j + i * LIST_CALLERS) * batch
        res: list[DetectResult] = await handle.detect_frames.remote([w.reqs[(first + k) % n] for k in range(batch)])
        return res[0].batch_size, res[0].inference_ms

    return await measure_closed_loop(
        series, batch, LIST_CALLERS, call, w.warmup_s, w.duration_s, w.min_answers, images_per_call=batch
    )


async def http_list_point(series: str, batch: int, route: str, w: Workload) -> Point:
    n = len(w.jpegs)
    url = w.base_url + route
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0)) as client:

        async def call(j: int, i: int) -> tuple[int, float]:
            first = (j + i * LIST_CALLERS) * batch
            files = [(f"cam{k}", (f"{k}.jpg", w.jpegs[(first + k) % n], "image/jpeg")) for k in range(batch)]
            r = await client.post(url, files=files)
            r.raise_for_status()
            body = r.json()
            return int(body["batch_size"]), float(body["inference_ms"])

        return await measure_closed_loop(
            series, batch, LIST_CALLERS, call, w.warmup_s, w.duration_s, w.min_answers, images_per_call=batch
        )


async def http_point(series: str, batch: int, route: str, w: Workload) -> Point:
    n = len(w.jpegs)
    url = w.base_url + route
    limits = httpx.Limits(max_connections=batch + 4, max_keepalive_connections=batch + 4)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as client:

        async def call(j: int, i: int) -> tuple[int, float]:
            r = await client.post(url, content=w.jpegs[(j + i * batch) % n], params={"camera": f"cam{j}"})
            r.raise_for_status()
            body = r.json()
            return int(body["batch_size"]), float(body["inference_ms"])

        return await measure_closed_loop(series, batch, batch, call, w.warmup_s, w.duration_s, w.min_answers)


def _sync(point: Callable[..., Awaitable[Point]], *point_args: Any) -> Point:
    return asyncio.run(point(*point_args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    batches = QUICK_BATCHES if args.quick else tuple(args.batches)
    duration_s = args.duration_s if args.duration_s is not None else (2.0 if args.quick else 5.0)
    warmup_s = args.warmup_s if args.warmup_s is not None else (1.0 if args.quick else 2.0)
    rounds_n = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    models_dir = args.models_dir.resolve()
    quiet = wait_for_quiet(args.max_load, args.wait_load_s)

    n_frames = max(64, max(batches) * 2)
    _, boxed, jpegs = load_frames(VTEST, n_frames, INPUT_SIZE)
    decode_ms = _decode_cost_ms(jpegs)
    reqs = [DetectRequest(camera_id=f"cam{k}", frame_seq=k, capture_ts=0.0, letterboxed=b) for k, b in enumerate(boxed)]

    cfg0 = detector_cfg(models_dir, batches[0], args.batch_wait_s, args.threads)
    # The same construction as the replica's (load_model from the same config), in this process.
    runner = load_model(cfg0, None, None, Path(tempfile.gettempdir())).runner
    log.info("raw runner %r, %d threads; %d frames", runner, args.threads, n_frames)

    # Two replicas of `threads` CPUs are resident (small wait and fill wait); only one is busy at a time.
    ray.init(
        address="local",
        num_cpus=2 * args.threads,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=512 * 1024**2,
        namespace=NAMESPACE,
        logging_level=logging.WARNING,
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    route = detector_route(cfg0)
    route_fill = f"/fill{route}"
    w = Workload(boxed, jpegs, reqs, f"http://127.0.0.1:{port}", warmup_s, duration_s, args.min_answers)
    results: dict[str, dict[str, Any]] = {s: {} for s in SERIES}
    deploy_s: dict[str, float] = {}
    check: dict[str, Any] = {}
    t_start = time.perf_counter()
    quiet_per_batch: dict[str, Any] = {}

    def clean(measure: Callable[..., Point], *measure_args: Any) -> Point:
        """Measure; while other processes took CPU during it, wait for them and measure again."""
        for attempt in range(1, args.retries + 2):
            point = measure(*measure_args)
            foreign = point.cores.get("foreign_cores", 0.0)
            point.extra["attempts"] = attempt
            if foreign <= args.max_foreign_cores or attempt > args.retries:
                return point
            log.info("%s@%d: other processes used %.2f cores; measuring again", point.series, point.batch, foreign)
            wait_for_no_foreign_load(args.max_foreign_cores, args.wait_load_s)
        raise AssertionError("unreachable")

    try:
        for batch in batches:
            deploy_s[str(batch)] = round(
                deploy(
                    {
                        APP: (detector_cfg(models_dir, batch, args.batch_wait_s, args.threads), route),
                        APP_FILL: (detector_cfg(models_dir, batch, args.fill_wait_s, args.threads), route_fill),
                    }
                ),
                2,
            )
            handle = serve.get_deployment_handle(DETECTOR_DEPLOYMENT, app_name=APP)
            handle_fill = serve.get_deployment_handle(DETECTOR_DEPLOYMENT, app_name=APP_FILL)
            if not check:
                check = compare_outputs(runner, handle, boxed[0])
                log.info("served vs raw on one frame: %s", check)

            def raw_batch(i: int, b: int = batch) -> list[Letterboxed]:
                return [boxed[(i * b + k) % n_frames] for k in range(b)]

            def jpeg_batch(i: int, b: int = batch) -> list[Letterboxed]:
                return [
                    letterbox(
                        cv2.imdecode(np.frombuffer(jpegs[(i * b + k) % n_frames], np.uint8), cv2.IMREAD_COLOR),
                        INPUT_SIZE,
                    )
                    for k in range(b)
                ]

            # series -> measurement; every round measures all of them in this order, so a slow spell of
            # the machine hits every series instead of one.
            plan: dict[str, Callable[[], Point]] = {
                "raw": partial(measure_raw, "raw", batch, raw_batch, runner, warmup_s, duration_s, args.min_answers),
                "raw_jpeg": partial(
                    measure_raw, "raw_jpeg", batch, jpeg_batch, runner, warmup_s, duration_s, args.min_answers
                ),
                "serve_handle": partial(_sync, handle_point, "serve_handle", batch, batch, handle, w),
                "serve_http": partial(_sync, http_point, "serve_http", batch, route, w),
                "serve_handle_list": partial(_sync, handle_list_point, "serve_handle_list", batch, handle, w),
                "serve_http_list": partial(_sync, http_list_point, "serve_http_list", batch, route, w),
                "serve_handle_fill": partial(_sync, handle_point, "serve_handle_fill", batch, batch, handle_fill, w),
                "serve_handle_fill_2x": partial(
                    _sync, handle_point, "serve_handle_fill_2x", batch, 2 * batch, handle_fill, w
                ),
                "serve_http_fill": partial(_sync, http_point, "serve_http_fill", batch, route_fill, w),
            }
            rounds: dict[str, list[Point]] = {name: [] for name in plan}
            quiet_per_batch[str(batch)] = wait_for_no_foreign_load(args.max_foreign_cores, args.wait_load_s)
            for r in range(rounds_n):
                for name, measure in plan.items():
                    rounds[name].append(clean(measure))
                log.info("B=%d round %d/%d done", batch, r + 1, rounds_n)
            points = [pool_points(rounds[name]) for name in plan]
            for pt in points:
                results[pt.series][str(batch)] = pt.to_json()
            _print_progress(batch, points)
    finally:
        shutdown_ray()  # Serve (ours) ends with Ray; a graceful serve.shutdown() first only cost 2-3 s

    return {
        "model": f"{MODEL}@{INPUT_SIZE}",
        "model_id": runner.model_id,
        "backend": "onnxruntime CPUExecutionProvider",
        "settings": {
            "batch_sizes": list(batches),
            "intra_op_threads": args.threads,
            "replica_num_cpus": args.threads,
            "ray_num_cpus": 2 * args.threads,
            "rounds": rounds_n,
            "batch_wait_timeout_s": args.batch_wait_s,
            "fill_batch_wait_timeout_s": args.fill_wait_s,
            "warmup_s": warmup_s,
            "min_duration_s": duration_s,
            "min_answers_per_caller": args.min_answers,
            "frames": n_frames,
            "footage": str(VTEST.relative_to(REPO)),
            "frame_size_px": [int(boxed[0].frame_width), int(boxed[0].frame_height)],
            "jpeg_bytes_mean": round(statistics.fmean(len(j) for j in jpegs)),
            "letterboxed_bytes": int(boxed[0].image.nbytes),
            "quick": args.quick,
        },
        "quiet_check": quiet,
        "foreign_load_before_each_batch": quiet_per_batch,
        "points_with_foreign_load": [
            f"{series}@{b}"
            for series, per in results.items()
            for b, point in per.items()
            if point.get("foreign_cores", 0.0) > args.max_foreign_cores
        ],
        "run_wall_s": round(time.perf_counter() - t_start, 1),
        "jpeg_decode_letterbox_ms_per_image": decode_ms,
        "deploy_both_apps_s": deploy_s,
        "served_vs_raw_output": check,
        "series_description": {
            "raw": "runner.detect(B letterboxed frames) in the driver; latency = one batch",
            "raw_jpeg": "as raw plus cv2.imdecode + letterbox of each JPEG (the HTTP route's per-image work)",
            "serve_handle": "DeploymentHandle.detect.remote, B closed-loop callers, max_batch_size=B, "
            "batch_wait_timeout_s small",
            "serve_http": "httpx AsyncClient POSTing JPEGs to the route, B concurrent; replica decodes; small wait",
            "serve_handle_list": f"DeploymentHandle.detect_frames.remote(list of B frames), {LIST_CALLERS} closed-loop "
            "callers (a shard's workers); one forward pass per list",
            "serve_http_list": f"httpx POSTing multipart bodies of B JPEGs, {LIST_CALLERS} concurrent clients; "
            "replica decodes; one forward pass per body",
            "serve_handle_fill": "as serve_handle with batch_wait_timeout_s = fill wait (batch closes at B)",
            "serve_handle_fill_2x": "as serve_handle_fill with 2B callers (next batch queued while one runs)",
            "serve_http_fill": "as serve_http with the fill wait",
        },
        "results": results,
        "ratios": _ratios(results, batches),
        "loadavg_end": loadavg(),
    }


def _decode_cost_ms(jpegs: list[bytes]) -> float:
    t0 = time.perf_counter()
    for j in jpegs:
        letterbox(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR), INPUT_SIZE)
    return round((time.perf_counter() - t0) * 1000.0 / len(jpegs), 3)


def _ratios(results: dict[str, dict[str, Any]], batches: tuple[int, ...]) -> dict[str, Any]:
    def ips(series: str, b: int) -> float:
        return float(results[series][str(b)]["images_per_s"])

    def rounds(series: str, b: int) -> list[float]:
        return [float(v) for v in results[series][str(b)]["round_images_per_s"]]

    per_batch: dict[str, dict[str, Any]] = {}
    for b in batches:
        row: dict[str, Any] = {}
        for s in SERVE_SERIES:
            row[f"{s}_over_raw"] = round(ips(s, b) / ips("raw", b), 3)
            # Same-round ratios: each round measured raw and every Serve series back to back.
            row[f"{s}_over_raw_per_round"] = [
                round(x / y, 3) for x, y in zip(rounds(s, b), rounds("raw", b), strict=True)
            ]
        for s in JPEG_SERIES:
            row[f"{s}_over_raw_jpeg"] = round(ips(s, b) / ips("raw_jpeg", b), 3)
        per_batch[str(b)] = row
    best_raw = max(batches, key=lambda b: ips("raw", b))
    best: dict[str, Any] = {"raw_batch": best_raw, "raw_images_per_s": ips("raw", best_raw), "target": RATIO_TARGET}
    for s in SERVE_SERIES:
        bs = max(batches, key=lambda b, s=s: ips(s, b))
        best[f"{s}_batch"] = bs
        best[f"{s}_images_per_s"] = ips(s, bs)
        best[f"{s}_over_raw_best_vs_best"] = round(ips(s, bs) / ips("raw", best_raw), 3)
        best[f"{s}_over_raw_at_raw_best_batch"] = per_batch[str(best_raw)][f"{s}_over_raw"]
    return {"per_batch": per_batch, "best": best}


def _print_progress(batch: int, points: list[Point]) -> None:
    for p in points:
        j = p.to_json()
        extra = ""
        if "batch_size_mean_per_batch" in j:
            extra = (
                f" batch~{j['batch_size_mean_per_batch']:.1f}"
                f" inf/batch {j['replica_inference_ms_per_batch_mean']:.0f}ms busy {j['replica_busy_fraction']:.2f}"
            )
        if "round_images_per_s" in j:
            extra += f" rounds {j['round_images_per_s']}"
        print(
            f"  B={batch:<3} {p.series:<21} {j['images_per_s']:7.1f} img/s  p50 {j['latency_p50_ms']:8.1f} ms"
            f"  p99 {j['latency_p99_ms']:8.1f} ms  machine {j['machine_busy_cores']:.2f} cores"
            f" (foreign {j['foreign_cores']:.2f}){extra}",
            flush=True,
        )


def _cell(res: dict[str, Any], ratio: float | None) -> str:
    mean_b = f"{res['batch_size_mean_per_batch']:5.1f}" if "batch_size_mean_per_batch" in res else "    -"
    r = f"{ratio:5.2f}" if ratio is not None else "    -"
    return f"{res['images_per_s']:6.1f} {res['latency_p50_ms']:6.0f} {res['latency_p99_ms']:6.0f} {mean_b} {r}"


def print_summary(record: dict[str, Any]) -> None:
    res, ratios = record["results"], record["ratios"]
    s = record["settings"]
    print(
        f"\n{record['model']} ({record['backend']}, {s['intra_op_threads']} threads, replica num_cpus "
        f"{s['replica_num_cpus']}). Per series: img/s, latency p50 / p99 ms, mean formed batch, ratio to raw img/s."
    )
    for title, series in (
        (f"batch_wait_timeout_s = {s['batch_wait_timeout_s']}", ("serve_handle", "serve_http")),
        (f"lists of B frames per call, {LIST_CALLERS} callers", ("serve_handle_list", "serve_http_list")),
        (
            f"batch_wait_timeout_s = {s['fill_batch_wait_timeout_s']} (fill)",
            ("serve_handle_fill", "serve_handle_fill_2x", "serve_http_fill"),
        ),
    ):
        cols = ("raw", "raw_jpeg", *series)
        head = f"{'B':>3} | " + " | ".join(f"{c:<33}" for c in cols)
        print(f"\n{title}\n{head}\n{'-' * len(head)}")
        for b in s["batch_sizes"]:
            q = ratios["per_batch"][str(b)]
            cells = [_cell(res["raw"][str(b)], None), _cell(res["raw_jpeg"][str(b)], None)]
            cells += [_cell(res[c][str(b)], q[f"{c}_over_raw"]) for c in series]
            print(f"{b:>3} | " + " | ".join(cells))
    best = ratios["best"]
    print(f"\nbest raw: B={best['raw_batch']} {best['raw_images_per_s']:.1f} img/s (target ratio {best['target']})")
    for c in SERVE_SERIES:
        print(
            f"  {c:<21} at B={best['raw_batch']}: {best[f'{c}_over_raw_at_raw_best_batch']:.2f} "
            f"(per round {ratios['per_batch'][str(best['raw_batch'])][f'{c}_over_raw_per_round']}); "
            f"its best B={best[f'{c}_batch']} {best[f'{c}_images_per_s']:.1f} img/s -> best vs best "
            f"{best[f'{c}_over_raw_best_vs_best']:.2f}"
        )
    if record["points_with_foreign_load"]:
        print(f"WARNING: other processes used CPU during {record['points_with_foreign_load']}")
    print(
        f"JPEG decode + letterbox: {record['jpeg_decode_letterbox_ms_per_image']:.2f} ms/image "
        "(done by the replica in the HTTP series; raw_jpeg includes it)"
    )


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = record["settings"]["batch_sizes"]
    styles = {
        "raw": ("raw runner (driver)", "k", "-", "o"),
        "raw_jpeg": ("raw + JPEG decode/letterbox", "0.55", "--", "o"),
        "serve_handle": ("Serve handle, B callers", "tab:blue", "-", "s"),
        "serve_http": ("Serve HTTP JPEG, B clients", "tab:orange", "-", "^"),
        "serve_handle_list": ("Serve handle, lists of B, 2 callers", "tab:purple", "-", "P"),
        "serve_http_list": ("Serve HTTP multipart of B, 2 clients", "tab:brown", "-", "X"),
        "serve_handle_fill": ("Serve handle, fill wait", "tab:green", "-", "s"),
        "serve_handle_fill_2x": ("Serve handle, fill wait, 2B callers", "tab:green", ":", "D"),
        "serve_http_fill": ("Serve HTTP, fill wait", "tab:red", "-", "^"),
    }
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
    ax, ax2, ax3 = axes
    for series, (label, color, ls, marker) in styles.items():
        ys = [record["results"][series][str(b)]["images_per_s"] for b in batches]
        ax.plot(batches, ys, label=label, color=color, linestyle=ls, marker=marker)
        if series.startswith("serve"):
            per = [record["ratios"]["per_batch"][str(b)] for b in batches]
            ratio = [q[f"{series}_over_raw"] for q in per]
            spread = [
                [r - min(q[f"{series}_over_raw_per_round"]) for r, q in zip(ratio, per, strict=True)],
                [max(q[f"{series}_over_raw_per_round"]) - r for r, q in zip(ratio, per, strict=True)],
            ]
            ax2.errorbar(batches, ratio, yerr=spread, label=label, color=color, linestyle=ls, marker=marker, capsize=3)
            formed = [record["results"][series][str(b)]["batch_size_mean_per_batch"] for b in batches]
            ax3.plot(batches, formed, label=label, color=color, linestyle=ls, marker=marker)
    ax3.plot(batches, batches, color="k", linewidth=0.8, linestyle="--", label="max_batch_size B")
    ax2.axhline(RATIO_TARGET, color="r", linewidth=0.8, linestyle="--", label=f"target {RATIO_TARGET}")
    s = record["settings"]
    load = record["quiet_check"]["loadavg_at_start"]
    titles = (
        f"{record['model']} onnxruntime CPU, {s['intra_op_threads']} threads: images/s",
        f"Serve / raw images/s; bars: range over rounds (loadavg at start {load[0] if load else '?'})",
        f"mean formed batch (wait {s['batch_wait_timeout_s']} s vs fill {s['fill_batch_wait_timeout_s']} s)",
    )
    for a, title, ylabel in zip(axes, titles, ("images / s", "ratio to raw", "images per batch"), strict=True):
        a.set_xscale("log", base=2)
        a.set_xticks(batches, [str(b) for b in batches])
        a.set_xlabel("batch size B (replica max_batch_size)")
        a.set_ylabel(ylabel)
        a.set_title(title, fontsize=10)
        a.grid(True, alpha=0.3)
        a.legend(fontsize=7)
    ax.set_ylim(bottom=0)
    ax2.set_ylim(0, 1.2)
    ax3.set_yscale("log", base=2)
    ax3.set_yticks(batches, [str(b) for b in batches])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--models-dir", type=Path, default=REPO.parent / "shared" / "models")
    p.add_argument("--quick", action="store_true", help="batches 1, 8, 32; 2 s per point")
    p.add_argument("--batches", type=int, nargs="+", default=list(FULL_BATCHES))
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra_op_threads (raw and replica)")
    p.add_argument("--batch-wait-s", type=float, default=0.01, help="replica batch_wait_timeout_s (small)")
    p.add_argument("--fill-wait-s", type=float, default=0.5, help="batch_wait_timeout_s of the _fill series")
    p.add_argument("--duration-s", type=float, default=None, help="measured seconds per point (5; quick 2)")
    p.add_argument("--warmup-s", type=float, default=None, help="warm-up seconds per point (2; quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds of all series per B (2; quick 1)")
    p.add_argument("--min-answers", type=int, default=5, help="at least this many batches / answers per caller")
    p.add_argument("--max-load", type=float, default=1.5, help="wait for the 1-min load average below this")
    p.add_argument("--max-foreign-cores", type=float, default=0.15, help="before each B, wait for others below")
    p.add_argument("--retries", type=int, default=3, help="re-measure a point disturbed by other processes")
    p.add_argument("--wait-load-s", type=float, default=600.0, help="give up waiting for a quiet machine after")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--name", default="inference", help="result file stem")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` shuts Serve and Ray down
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    record = run(args)
    path = write_result(args.name, record, args.out)
    png = args.out / f"{args.name}.png"
    plot(record, png)
    print_summary(record)
    print(f"\nwrote {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
