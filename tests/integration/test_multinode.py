"""Node loss and return on a real multi-node Ray (``ray.cluster_utils.Cluster``: head + 2 workers).

60 RTSP cameras from the simulator, ``shards_per_node: 2`` on the two worker nodes (they offer the
``decode_node`` resource; the head runs Serve and the controller), and one detector replica on each
worker (``replica_resources: {decode_node}``, ``max_replicas_per_node: 1``). With
``detector_routing: same_node_first`` every detector call of a shard is answered on its own node.
Removing a worker: every camera it ran streams again on the survivor within 30 s, and their calls
go to the survivor's replica. Adding a worker back: the controller gives it shards and rebalances;
only about the new node's fair share of cameras moves (≤ 1.3x).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from cluster.footage import prepare_stream
from cluster.rtsp_sim import RtspSimulator, system_ready
from cluster.runtime import Runtime
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig, IngestConfig
from contracts.cameras import CameraState
from serve_apps.metrics_export import free_port
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

N_CAMERAS = 60
NS = "cctv-multinode-test"
WORKER = {"num_cpus": 2, "resources": {"decode_node": 100}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, vtest_path: Path, models_dir: Path) -> Iterator[tuple]:
    from tests.conftest import CACHE_DIR

    ok, why = system_ready()
    assert ok, f"RTSP simulator cannot run here: {why}"
    stream = prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=1.0)
    state = tmp_path_factory.mktemp("multinode")
    sim = RtspSimulator({"vtest": stream}, cameras=N_CAMERAS, log_path=state / "sim.log")
    sim.start()
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        },
    )
    workers = [c.add_node(**WORKER) for _ in range(2)]
    c.wait_for_nodes()
    cams = [
        CameraConfig(id=f"cam-{i:02d}", url=url, decode_mode="keyframe", analytics_fps=0.2, nominal_resolution="360p")
        for i, url in enumerate(sim.camera_urls(), start=1)
    ]
    cfg = AppConfig(
        state_dir=state,
        cluster=ClusterConfig(
            ray_address=c.address,
            namespace=NS,
            shards_per_node=2,
            shard_num_cpus=0.5,
            shard_resources={"decode_node": 1},
            shard_liveness_timeout_s=3.0,
            serve_http_port=free_port(),
        ),
        detector=DetectorConfig(
            models_dir=models_dir,
            max_batch_size=8,
            num_cpus_per_replica=0.5,
            num_replicas=2,
            max_replicas_per_node=1,
            replica_resources={"decode_node": 1},
        ),
        ingest=IngestConfig(open_timeout_s=5, stall_timeout_s=4, reconnect_initial_s=0.5, reconnect_max_s=2),
        cameras=cams,
    )
    rt = Runtime(cfg, include_dashboard=False)
    try:
        with rt:
            yield c, workers, rt
    finally:
        sim.stop()
        c.shutdown()


def _status(rt: Runtime) -> dict:
    # By name: the handle stays valid across a controller restart.
    ctl = ray.get_actor("cctv-controller", namespace=NS)
    return {s.camera_id: s for s in ray.get(ctl.status.remote(), timeout=60)}


def _all_streaming_since(rt: Runtime, ids: list[str], t0: float, timeout_s: float) -> float:
    """Seconds after t0 at which every camera in ids received a packet after t0.

    Raises:
        WaitTimeout: not all of them within ``timeout_s``; the message has the laggards' states.
    """

    def streaming() -> float | None:
        st = _status(rt)
        if all(st[c].state is CameraState.STREAMING and (st[c].last_packet_ts or 0) > t0 for c in ids):
            return max(time.time() - t0, 1e-3)
        return None

    def laggards() -> dict:
        st = _status(rt)
        return {c: (st[c].state, st[c].reason, st[c].shard) for c in ids if (st[c].last_packet_ts or 0) <= t0}

    return wait_for(streaming, timeout_s, f"{len(ids)} cameras streaming again", detail=laggards)


def _calls_by_node(rt: Runtime) -> dict[str, tuple[int, int]]:
    """(same-node, other-node) detector calls of all shards of each node."""
    out: dict[str, tuple[int, int]] = {}
    for st in rt.stats():
        same, other = out.get(st.node_id, (0, 0))
        out[st.node_id] = (same + st.detector_calls_same_node, other + st.detector_calls_other_node)
    return out


def _replica_nodes() -> list[str]:
    return sorted(
        a.node_id
        for a in list_actors(filters=[("state", "=", "ALIVE")])
        if a.class_name.startswith("ServeReplica:detector")
    )


def _node_of_shard(shard_id: str, nodes: list) -> str:
    return next(n.node_id for n in nodes if shard_id.startswith(f"shard-{n.node_id[:8]}"))


def test_node_loss_reassigns_within_30_s_and_a_returning_node_takes_its_share(cluster: tuple) -> None:
    c, workers, rt = cluster
    ctl = rt.controller
    ids = [f"cam-{i:02d}" for i in range(1, N_CAMERAS + 1)]
    _all_streaming_since(rt, ids, time.time() - 3600, 120)
    assignment = ray.get(ctl.assignment.remote())  # type: ignore[union-attr]
    per_node: dict[str, list[str]] = {}
    for cid, sid in assignment.items():
        per_node.setdefault(_node_of_shard(sid, workers), []).append(cid)
    assert set(per_node) == {w.node_id for w in workers}, per_node.keys()  # cameras on both workers
    assert min(len(v) for v in per_node.values()) >= N_CAMERAS // 3

    # The control plane lives on the head, so losing a worker never takes the controller with it.
    head = next(n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
    ctl_node = next(a.node_id for a in list_actors(filters=[("name", "=", "cctv-controller")]) if a.state == "ALIVE")
    assert ctl_node == head

    # Frames stay on the node that decoded them: one replica per worker, every call answered there.
    assert _replica_nodes() == sorted(w.node_id for w in workers), _replica_nodes()
    wait_for(
        lambda: all(_calls_by_node(rt).get(w.node_id, (0, 0))[0] >= 5 for w in workers) or None,
        60,
        "detector calls from the shards of both workers",
        detail=lambda: _calls_by_node(rt),
    )
    calls = _calls_by_node(rt)
    assert all(calls[w.node_id][1] == 0 for w in workers), calls  # no call crossed to the other worker

    lost, survivor = workers
    on_lost = per_node[lost.node_id]
    t_kill = time.time()
    c.remove_node(lost)
    took_s = _all_streaming_since(rt, on_lost, t_kill, 30)
    after_loss = ray.get(ctl.assignment.remote())  # type: ignore[union-attr]
    assert all(sid.startswith(f"shard-{survivor.node_id[:8]}") for sid in after_loss.values())
    assert {c_ for c_ in ids if after_loss[c_] != assignment[c_]} == set(on_lost)  # only the lost node's moved
    # ... and their calls went with them, to the survivor's own replica (Serve cannot place a second one there).
    before = _calls_by_node(rt).get(survivor.node_id, (0, 0))
    wait_for(
        lambda: _calls_by_node(rt)[survivor.node_id][0] >= before[0] + 10 or None,
        60,
        "detector calls for the moved cameras on the survivor",
        detail=lambda: _calls_by_node(rt),
    )
    assert _calls_by_node(rt)[survivor.node_id][1] == calls[survivor.node_id][1] == 0, _calls_by_node(rt)
    print(f"\n{len(on_lost)} cameras of the lost node streaming again after {took_s:.1f} s")

    back = c.add_node(**WORKER)

    def moved_to_back() -> tuple[dict[str, str], set[str]] | None:
        now = ray.get(ctl.assignment.remote())  # type: ignore[union-attr]
        moved = {c_ for c_ in ids if now[c_] != after_loss[c_]}
        if moved and all(now[c_].startswith(f"shard-{back.node_id[:8]}") for c_ in moved):
            return now, moved
        return None

    now, moved = wait_for(moved_to_back, 120, "cameras moved onto the returning node", interval_s=1.0)
    fair_share = N_CAMERAS / 2
    assert moved, "no camera moved to the returning node"
    assert all(now[c_].startswith(f"shard-{back.node_id[:8]}") for c_ in moved)  # only onto the new node
    assert len(moved) <= 1.3 * fair_share, len(moved)
    assert _all_streaming_since(rt, sorted(moved), time.time(), 60) is not None
    print(f"rebalanced {len(moved)} cameras onto the returning node (fair share {fair_share:.0f})")
