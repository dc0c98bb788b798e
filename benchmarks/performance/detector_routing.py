"""Where a shard's detector calls go: Serve's locality-aware routing against a per-node deployment.

Issue 16 asks that frames stay on the node that decoded them, by Serve's locality-aware routing or by
a deployment per node, measured. This runs both on a real multi-node Ray (``ray.cluster_utils.Cluster``:
a head and two worker nodes) with a caller pinned to worker 0 that behaves like a decoder shard: it
sends letterboxed 416x416x3 frames (519 KB, through the object store as a shard's are) at a fixed
rate, open loop, and records for every call the node that answered, its latency and its error.

Variants:

* ``same_node_first``: one deployment, a replica on each worker (``max_replicas_per_node: 1``), the
  handle made by the product's :func:`serve_apps.detector.routing.detector_handle` (what shards use);
* ``any_node``: the same deployment, a plain handle (Serve's power-of-two choice over all replicas);
* ``per_node_deployment``: one deployment per worker, each pinned by a custom resource of its node; the
  caller calls its own node's deployment, and another node's only when its own fails the call with an
  actor or replica error (a replica died under it); a ``BackPressureError`` ends the call (full, not gone).

The replica is a stand-in that holds each request for ``--service-ms`` (asyncio, so it serves
``--max-ongoing`` at once): this measures routing and frame transport, not inference, and sets each
replica's capacity to ``max_ongoing / service_s`` exactly. Load is offered at multiples of that
capacity: below it every variant should stay local; above it the variants differ in what they do with
the excess (spill to another node, queue, reject). Both worker nodes share this machine, so "another
node" is a second raylet and object store on the same host: a cross-node call pays the object
transfer between stores, not a real network.

Then, for each variant, the replica on the caller's node is killed a quarter into a run at half its
capacity (``ray.kill``; Serve starts a new one on that node): calls lost and why, calls answered on the
other node and when they were sent relative to the kill, and the slowest answer.

Run: ``.venv/bin/python -m benchmarks.performance.detector_routing``; JSON in
``benchmarks/results/detector_routing.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from ray.util.state import list_actors
from ray.util.state.common import ActorState

from benchmarks.common import write_result
from configs.schema import DetectorConfig
from serve_apps.detector.routing import detector_handle

REPO = Path(__file__).resolve().parents[2]
Variant = Literal["same_node_first", "any_node", "per_node_deployment"]
VARIANTS: tuple[Variant, ...] = ("same_node_first", "any_node", "per_node_deployment")
SHARED_APP = "routing-shared"
FRAME_SHAPE = (416, 416, 3)
NS = "cctv-routing-bench"
LOSS_LOAD_X = 0.5


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One detector call as the caller saw it."""

    node_id: str | None  # the node that answered; None: the call failed
    latency_ms: float
    error: str | None  # exception class name of a failed call
    sent_s: float  # when the call was sent, seconds after the run started


@dataclass(frozen=True, slots=True)
class RoutingPoint:
    """One variant at one offered load, summarised."""

    variant: str
    load_x: float  # offered calls/s over one replica's capacity
    offered_per_s: float
    calls: int
    answered: int
    same_node_share: float | None  # of the answered calls
    failed_by_error: dict[str, int]
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    same_node_latency_ms_p50: float | None
    other_node_latency_ms_p50: float | None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q))


def _failures_by_error(records: list[CallRecord]) -> dict[str, int]:
    """Unanswered calls counted by the error type each raised."""
    return dict(Counter(r.error or "unknown" for r in records if r.node_id is None))


def summarise(
    variant: str, load_x: float, offered_per_s: float, records: list[CallRecord], caller_node: str
) -> RoutingPoint:
    """Counts, same-node share and latency percentiles of one point's calls."""
    ok = [r for r in records if r.node_id is not None]
    local = [r.latency_ms for r in ok if r.node_id == caller_node]
    remote = [r.latency_ms for r in ok if r.node_id != caller_node]
    failed = _failures_by_error(records)
    lat = [r.latency_ms for r in ok]
    return RoutingPoint(
        variant=variant,
        load_x=load_x,
        offered_per_s=offered_per_s,
        calls=len(records),
        answered=len(ok),
        same_node_share=len(local) / len(ok) if ok else None,
        failed_by_error=failed,
        latency_ms_p50=_pct(lat, 50),
        latency_ms_p99=_pct(lat, 99),
        same_node_latency_ms_p50=statistics.median(local) if local else None,
        other_node_latency_ms_p50=statistics.median(remote) if remote else None,
    )


@dataclass(frozen=True, slots=True)
class ReplicaLoss:
    """One variant while the replica on the caller's node is killed mid-run (Serve starts a new one there)."""

    variant: str
    load_x: float
    killed_at_s: float  # into the run
    calls: int
    answered: int
    failed_by_error: dict[str, int]
    other_node_calls: int
    first_other_node_after_kill_s: float | None  # sent this long after the kill, answered on the other node
    last_other_node_after_kill_s: float | None
    latency_ms_max: float | None  # of the answered calls


def summarise_loss(
    variant: str, load_x: float, killed_at_s: float, records: list[CallRecord], caller_node: str
) -> ReplicaLoss:
    """Failures, calls that went elsewhere, and when, relative to the kill."""
    ok = [r for r in records if r.node_id is not None]
    other = sorted(r.sent_s - killed_at_s for r in ok if r.node_id != caller_node)
    failed = _failures_by_error(records)
    return ReplicaLoss(
        variant=variant,
        load_x=load_x,
        killed_at_s=killed_at_s,
        calls=len(records),
        answered=len(ok),
        failed_by_error=failed,
        other_node_calls=len(other),
        first_other_node_after_kill_s=other[0] if other else None,
        last_other_node_after_kill_s=other[-1] if other else None,
        latency_ms_max=max((r.latency_ms for r in ok), default=None),
    )


def _replicas_on(app: str, node_id: str) -> list[ActorState]:
    return [
        a
        for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
        if a.class_name == f"ServeReplica:{app}:StandInReplica" and a.node_id == node_id
    ]


def _kill_replica(app: str, node_id: str) -> None:
    (replica,) = _replicas_on(app, node_id)
    ray.kill(ray.get_actor(replica.name, namespace=replica.ray_namespace), no_restart=True)


def _wait_replica(app: str, node_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not _replicas_on(app, node_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no replica of {app} came back on node {node_id[:8]} within {timeout_s:g} s")
        time.sleep(0.5)


@serve.deployment
class StandInReplica:
    """Holds each frame for a fixed service time, reads one byte of it, and says which node it ran on."""

    def __init__(self, service_s: float) -> None:
        self._service_s = service_s
        self._node_id = ray.get_runtime_context().get_node_id()

    async def __call__(self, frame: np.ndarray) -> tuple[str, int]:
        await asyncio.sleep(self._service_s)
        return self._node_id, int(frame[0, 0, 0])


@ray.remote(num_cpus=0)
class Caller:
    """A shard-like caller: fixed-rate frames to a detector, every call recorded.

    One caller per variant: Serve hands a process one cached handle per deployment, and a handle's
    routing is fixed at its first use.
    """

    def __init__(self, variant: Variant, apps: list[str]) -> None:
        self._node_id = ray.get_runtime_context().get_node_id()
        self._variant = variant
        if variant == "per_node_deployment":
            self._handles = [serve.get_deployment_handle("StandInReplica", app_name=a) for a in apps]
        else:
            self._handles = [detector_handle("StandInReplica", apps[0], variant)]

    def node_id(self) -> str:
        return self._node_id

    async def run(self, rate_per_s: float, duration_s: float) -> list[CallRecord]:
        """Offer ``rate_per_s`` calls for ``duration_s``; per_node_deployment tries its apps in order."""
        handles = self._handles
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 255, FRAME_SHAPE, dtype=np.uint8)
        records: list[CallRecord] = []

        async def one(due: float) -> None:
            # Latency from the call's due time: a late start of the task (event-loop lag) counts against it.
            last_error = "none"
            for h in handles:
                try:
                    node, _ = await h.remote(frame)
                except BackPressureError:
                    # Full, not gone: a per-node deployment drops the frame rather than send it away.
                    records.append(
                        CallRecord(None, (time.perf_counter() - due) * 1e3, "BackPressureError", due - start)
                    )
                    return
                except (RayActorError, DeploymentUnavailableError, ReplicaUnavailableError) as exc:
                    last_error = type(exc).__name__
                    continue  # this node's deployment is gone: the next one
                except Exception as exc:  # any other failure is counted by its type, not lost with the run
                    last_error = type(exc).__name__
                    break
                records.append(CallRecord(node, (time.perf_counter() - due) * 1e3, None, due - start))
                return
            records.append(CallRecord(None, (time.perf_counter() - due) * 1e3, last_error, due - start))

        tasks = []
        period_s = 1.0 / rate_per_s
        start = time.perf_counter()
        n = 0
        while (now := time.perf_counter()) - start < duration_s:
            due = start + n * period_s
            if now < due:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.ensure_future(one(due)))
            n += 1
        await asyncio.gather(*tasks)
        return records


def _deploy(service_s: float, max_ongoing: int, max_queued: int, worker_resources: list[str]) -> None:
    common = {"max_ongoing_requests": max_ongoing, "max_queued_requests": max_queued}
    shared = StandInReplica.options(
        num_replicas=len(worker_resources),
        max_replicas_per_node=1,
        ray_actor_options={"num_cpus": 0, "resources": {"bench_worker": 0.01}},
        **common,
    )
    serve.run(shared.bind(service_s), name=SHARED_APP, route_prefix=None)
    for k, res in enumerate(worker_resources):
        pinned = StandInReplica.options(
            num_replicas=1, ray_actor_options={"num_cpus": 0, "resources": {res: 0.01}}, **common
        )
        serve.run(pinned.bind(service_s), name=f"routing-node-{k}", route_prefix=None)


def measure(
    *,
    loads_x: list[float],
    duration_s: float,
    service_ms: float,
    max_ongoing: int,
    max_queued: int,
    warmup_s: float,
    loss_run_s: float,
    loss_variants: tuple[str, ...] = VARIANTS,
) -> dict[str, object]:
    """Start the cluster, deploy the variants, offer every load to every variant; the result payload."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker_resources = ["bench_node_0", "bench_node_1"]
    for res in worker_resources:
        cluster.add_node(num_cpus=1, resources={"bench_worker": 1, res: 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=NS, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"location": "NoServer"})
        service_s = service_ms / 1e3
        _deploy(service_s, max_ongoing, max_queued, worker_resources)
        worker0 = next(n["NodeID"] for n in ray.nodes() if n["Resources"].get("bench_node_0"))
        capacity_per_s = max_ongoing / service_s
        apps = {"per_node_deployment": ["routing-node-0", "routing-node-1"]}
        pin = NodeAffinitySchedulingStrategy(worker0, soft=False)
        points = []
        losses = []
        for variant in VARIANTS:
            caller = Caller.options(scheduling_strategy=pin).remote(variant, apps.get(variant, [SHARED_APP]))
            caller_node = ray.get(caller.node_id.remote())
            ray.get(caller.run.remote(capacity_per_s * 0.25, warmup_s))  # handle and router warm
            for load_x in loads_x:
                rate = capacity_per_s * load_x
                records = ray.get(caller.run.remote(rate, duration_s))
                points.append(asdict(summarise(variant, load_x, rate, records, caller_node)))
            if loss_run_s > 0 and variant in loss_variants:
                # The replica on the caller's node dies a quarter into a run at half its capacity.
                local_app = apps.get(variant, [SHARED_APP])[0]
                run = caller.run.remote(capacity_per_s * LOSS_LOAD_X, loss_run_s)
                killed_at_s = loss_run_s / 4
                time.sleep(killed_at_s)
                _kill_replica(local_app, caller_node)
                records = ray.get(run)
                losses.append(asdict(summarise_loss(variant, LOSS_LOAD_X, killed_at_s, records, caller_node)))
                _wait_replica(local_app, caller_node)
            ray.kill(caller)
        return {
            "settings": {
                "nodes": "head (1 CPU) + 2 workers (1 CPU each) on this machine (ray.cluster_utils.Cluster)",
                "caller": "one async actor pinned to worker 0, open-loop fixed rate",
                "frame_bytes": int(np.prod(FRAME_SHAPE)),
                "service_ms": service_ms,
                "max_ongoing_requests": max_ongoing,
                "max_queued_requests": max_queued,
                "replica_capacity_per_s": capacity_per_s,
                "duration_s": duration_s,
                "warmup_s": warmup_s,
                "loss_run_s": loss_run_s,
                "loss_load_x": LOSS_LOAD_X,
                "loss_killed": "the replica on the caller's node (ray.kill, no restart: Serve starts a new one)",
            },
            "points": points,
            "replica_loss": losses,
        }
    finally:
        ray.shutdown()  # Serve ends with the cluster's nodes; a graceful serve.shutdown() first only cost 2-3 s
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--loads-x", type=float, nargs="+", default=[0.5, 0.9, 1.5], help="offered load / replica capacity")
    ap.add_argument("--duration-s", type=float, default=15.0, help="per variant and load")
    ap.add_argument("--warmup-s", type=float, default=3.0)
    ap.add_argument(
        "--service-ms", type=float, default=400.0, help="the stand-in replica's time per frame (a CPU batch of ~16)"
    )
    ap.add_argument(
        "--max-ongoing",
        type=int,
        default=DetectorConfig.model_fields["max_ongoing_requests"].default,
        help="max_ongoing_requests of every replica (default: the detector's)",
    )
    ap.add_argument(
        "--max-queued",
        type=int,
        default=DetectorConfig.model_fields["max_queued_requests"].default,
        help="max_queued_requests of every deployment (default: the detector's)",
    )
    ap.add_argument(
        "--loss-run-s", type=float, default=16.0, help="run in which the local replica is killed (0: skip it)"
    )
    ap.add_argument("--loss-variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    payload = measure(
        loads_x=args.loads_x,
        duration_s=args.duration_s,
        service_ms=args.service_ms,
        max_ongoing=args.max_ongoing,
        max_queued=args.max_queued,
        warmup_s=args.warmup_s,
        loss_run_s=args.loss_run_s,
        loss_variants=tuple(args.loss_variants),
    )
    for p in payload["points"]:  # type: ignore[union-attr]
        print(
            f"{p['variant']:>20} load {p['load_x']:.2f}x: {p['answered']}/{p['calls']} answered, "
            f"same node {p['same_node_share']}, failed {p['failed_by_error']}, "
            f"p50 {p['latency_ms_p50']} ms (same node {p['same_node_latency_ms_p50']}, "
            f"other {p['other_node_latency_ms_p50']})"
        )
    for p in payload["replica_loss"]:  # type: ignore[union-attr]
        print(
            f"{p['variant']:>20} local replica killed: {p['answered']}/{p['calls']} answered, failed "
            f"{p['failed_by_error']}, {p['other_node_calls']} on the other node (sent "
            f"{p['first_other_node_after_kill_s']} .. {p['last_other_node_after_kill_s']} s after the kill), "
            f"max latency {p['latency_ms_max']} ms"
        )
    path = write_result("detector_routing", {"command": " ".join([sys.executable, *sys.argv]), **payload}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
