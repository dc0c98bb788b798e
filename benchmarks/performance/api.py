"""Control API under concurrent load: event queries and snapshots, p50/p99 latency and throughput.

Starts the real job in-process (local Ray, embedded S3, the detector and the control API under
Serve, the camera controller with one decoder shard) with looped vtest cameras, one of them with a
crowd zone the footage fills so that events exist. Then, for each concurrency level, N closed-loop
HTTP clients (one asyncio task each, keep-alive connections, a viewer token) call one route as fast
as answers come for ``--duration-s`` seconds after a short warm-up:

* ``events``: ``GET /events?since_s=3600&limit=100`` (the controller gathers every shard's recent
  transitions; the API folds, filters and pages them);
* ``snapshot``: ``GET /cameras/{id}/snapshot`` (the shard JPEG-encodes the camera's latest frame),
  over all cameras in turn.

Everything (the load generator, Serve's proxy, the API replica, the controller, the shard decoding
the cameras, the detector) shares this machine's cores, so the figures are the whole path on one
box, not the API alone. Written to ``benchmarks/results/api.json`` with machine, versions, commit
and command.

    .venv/bin/python -m benchmarks.performance.api [--duration-s 15] [--concurrency 1 8 32] [--cameras 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import loadavg, write_result
from cluster.footage import prepare_stream
from cluster.runtime import Runtime
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig, ZoneConfig
from serve_apps.metrics_export import free_port
from tests.support.wait import WaitTimeout, wait_for

REPO = Path(__file__).resolve().parents[2]

VTEST = REPO / ".cache" / "footage" / "vtest.avi"
STREAMS = REPO / ".cache" / "streams"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


async def _load(
    url: str, token: str, paths: list[str], concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """``concurrency`` closed-loop clients over ``paths`` (round robin); latencies of the measured part."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    lat_ms: list[float] = []
    errors: dict[str, int] = {}
    measured = False
    stop = False

    async def worker(k: int, client: httpx.AsyncClient) -> None:
        i = k
        while not stop:
            path = paths[i % len(paths)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = await client.get(path)
                ok = r.status_code == 200
                key = str(r.status_code)
            except httpx.HTTPError as exc:
                ok, key = False, type(exc).__name__
            dt = (time.perf_counter() - t0) * 1000
            if measured:
                if ok:
                    lat_ms.append(dt)
                else:
                    errors[key] = errors.get(key, 0) + 1

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        tasks = [asyncio.create_task(worker(k, client)) for k in range(concurrency)]
        await asyncio.sleep(warmup_s)
        measured = True
        t0 = time.perf_counter()
        cpu0 = os.times()
        await asyncio.sleep(duration_s)
        measured = False
        wall = time.perf_counter() - t0
        cpu1 = os.times()
        stop = True
        await asyncio.gather(*tasks)
    return {
        "concurrency": concurrency,
        "requests": len(lat_ms),
        "errors": errors,
        "throughput_rps": round(len(lat_ms) / wall, 1),
        "p50_ms": round(pct(lat_ms, 50) or 0, 2),
        "p90_ms": round(pct(lat_ms, 90) or 0, 2),
        "p99_ms": round(pct(lat_ms, 99) or 0, 2),
        "max_ms": round(max(lat_ms), 2) if lat_ms else None,
        "duration_s": round(wall, 2),
        "load_generator_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 2),
        "loadavg_after": loadavg(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not VTEST.is_file():
        raise SystemExit(f"{VTEST} missing: run scripts/fetch_vtest.sh {VTEST.parent}")
    stream = prepare_stream(VTEST, STREAMS, gop_s=1.0)
    state = Path(args.state_dir).resolve()
    zone = ZoneConfig(
        name="plaza",
        polygon=[(0, 0), (768, 0), (768, 576), (0, 576)],
        crowd_threshold_people=5,
        min_duration_s=1.0,
        cooldown_s=2.0,
    )
    cams = [
        CameraConfig(
            id=f"bench-{i}",
            url=str(stream),
            loop=True,
            decode_mode="keyframe",
            district="seo-gu" if i % 2 else "buk-gu",
            purpose="crowd",
            analytics_fps=1.0,
            zones=[zone] if i == 0 else [],
        )
        for i in range(args.cameras)
    ]
    port = free_port()
    cfg = AppConfig(
        state_dir=state,
        cluster=ClusterConfig(
            namespace="cctv-api-bench", num_shards=1, shard_num_cpus=0.5, local_num_cpus=4, serve_http_port=port
        ),
        detector=DetectorConfig(models_dir=args.models_dir, max_batch_size=4, num_cpus_per_replica=0.5),
        cameras=cams,
    )
    token = "bench-viewer-" + os.urandom(12).hex()
    os.environ[cfg.api.tokens_env] = f"{token}:viewer:bench"
    url = f"http://127.0.0.1:{port}"
    results: dict[str, list[dict[str, Any]]] = {"events": [], "snapshot": []}
    with Runtime(cfg, include_dashboard=False, ray_init_kwargs={"object_store_memory": 256 * 1024**2}):
        h = {"Authorization": f"Bearer {token}"}
        ids = [c.id for c in cams]
        snap_ok = lambda: all(  # noqa: E731
            httpx.get(f"{url}/cameras/{cid}/snapshot", headers=h, timeout=30).status_code == 200 for cid in ids
        )
        wait_for(snap_ok, 120, "a snapshot of every camera", interval_s=2.0)
        events = lambda: httpx.get(f"{url}/events", params={"since_s": 3600}, headers=h, timeout=30).json()  # noqa: E731
        try:
            wait_for(lambda: events()["total"] >= args.min_events, args.events_wait_s, "events", interval_s=2.0)
        except WaitTimeout as exc:  # measured with the events there are
            print(f"fewer events than --min-events {args.min_events}: {exc}", flush=True)
        n_events = events()["total"]
        transitions = sum(e["transitions"] for e in events()["items"])
        print(f"{n_events} events ({transitions} transitions) held; measuring", flush=True)
        snap_size = len(httpx.get(f"{url}/cameras/{ids[0]}/snapshot", headers=h, timeout=30).content)
        for c in args.concurrency:
            for name, paths in (
                ("events", ["/events?since_s=3600&limit=100"]),
                ("snapshot", [f"/cameras/{cid}/snapshot" for cid in ids]),
            ):
                point = asyncio.run(_load(url, token, paths, c, args.warmup_s, args.duration_s))
                results[name].append(point)
                print(
                    f"{name:9s} c={c:3d}: {point['throughput_rps']:7.1f} req/s  p50 {point['p50_ms']:7.1f} ms"
                    f"  p99 {point['p99_ms']:7.1f} ms  errors {point['errors']}",
                    flush=True,
                )
    return {
        "setup": {
            "cameras": args.cameras,
            "shards": 1,
            "decode_mode": "keyframe",
            "events_held": n_events,
            "transitions_held": transitions,
            "snapshot_jpeg_bytes": snap_size,
            "api_replicas": 1,
            "warmup_s": args.warmup_s,
            "duration_s": args.duration_s,
            "client": "httpx.AsyncClient, closed loop, keep-alive, one event loop in the benchmark process",
            "note": "load generator, Serve proxy, API replica, controller, shard and detector share this machine",
        },
        "cpu_count": os.cpu_count(),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--models-dir", type=Path, default=REPO.parent / "shared" / "models")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--duration-s", type=float, default=15.0)
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--min-events", type=int, default=1, help="wait for this many events before measuring")
    p.add_argument("--events-wait-s", type=float, default=90.0)
    p.add_argument("--state-dir", default=str(REPO / "state" / "bench-api"))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    args.models_dir = args.models_dir.resolve()
    payload = run(args)
    path = write_result("api", payload, args.out)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
