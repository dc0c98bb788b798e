"""CameraController: the one writer of "which camera runs on which shard".

A named Ray actor. It creates the decoder shards, assigns cameras to them with
rendezvous hashing, applies live additions and removals, and answers status queries
for the CLI and the control API (which reach it by name, not by import).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import ray

from actors.camera_state import CameraStatus
from actors.shard import EventNotice, RemoteDecoderShard, ShardSettings, ShardStats
from cluster.sharding import assign
from configs.schema import CameraConfig

log = logging.getLogger(__name__)

CONTROLLER_NAME = "cctv-controller"


@dataclass(frozen=True, slots=True)
class ShardRef:
    shard_id: str
    actor: ray.actor.ActorHandle


class CameraController:
    """Creates shards and owns the camera → shard assignment."""

    def __init__(self, base: ShardSettings, num_shards: int) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._base = base
        self._shards: dict[str, ShardRef] = {}
        self._cameras: dict[str, CameraConfig] = {}
        self._assignment: dict[str, str] = {}
        for i in range(num_shards):
            shard_id = f"shard-{i:03d}"
            settings = dataclasses.replace(base, shard_id=shard_id)
            actor = RemoteDecoderShard.options(
                name=f"cctv-{shard_id}",
                num_cpus=base.cluster.shard_num_cpus,
                scheduling_strategy="SPREAD",
            ).remote(settings)
            self._shards[shard_id] = ShardRef(shard_id, actor)
        ray.get([s.actor.ready.remote() for s in self._shards.values()])

    def shard_ids(self) -> list[str]:
        return sorted(self._shards)

    def add_cameras(self, cameras: list[CameraConfig]) -> dict[str, str]:
        """Assign and start cameras; returns camera id → shard id of those added."""
        new = [c for c in cameras if c.id not in self._cameras]
        placement = assign([c.id for c in new], self.shard_ids())
        by_shard: dict[str, list[CameraConfig]] = {}
        for cam in new:
            by_shard.setdefault(placement[cam.id], []).append(cam)
        ray.get([self._shards[sid].actor.add_cameras.remote(cams) for sid, cams in by_shard.items()])
        for cam in new:
            self._cameras[cam.id] = cam
            self._assignment[cam.id] = placement[cam.id]
        return placement

    def remove_cameras(self, camera_ids: list[str]) -> list[str]:
        by_shard: dict[str, list[str]] = {}
        for cid in camera_ids:
            if cid in self._assignment:
                by_shard.setdefault(self._assignment[cid], []).append(cid)
        removed: list[str] = []
        for ids in ray.get([self._shards[sid].actor.remove_cameras.remote(ids) for sid, ids in by_shard.items()]):
            removed.extend(ids)
        for cid in removed:
            self._cameras.pop(cid, None)
            self._assignment.pop(cid, None)
        return removed

    def assignment(self) -> dict[str, str]:
        return dict(self._assignment)

    def status(self) -> list[CameraStatus]:
        out: list[CameraStatus] = []
        for part in ray.get([s.actor.status.remote() for s in self._shards.values()]):
            out.extend(part)
        return sorted(out, key=lambda s: s.camera_id)

    def stats(self) -> list[ShardStats]:
        return ray.get([s.actor.stats.remote() for s in self._shards.values()])

    def events(self, since_ts: float = 0.0) -> list[EventNotice]:
        out: list[EventNotice] = []
        for part in ray.get([s.actor.recent_events.remote(since_ts) for s in self._shards.values()]):
            out.extend(part)
        return sorted(out, key=lambda e: e.received_ts)

    def stop(self, drain_timeout_s: float = 60.0) -> list[ShardStats]:
        """Stop every shard (each finishes its clips and drains its upload spool)."""
        refs = [s.actor.stop.remote(drain_timeout_s) for s in self._shards.values()]
        stats = ray.get(refs)
        for s in self._shards.values():
            ray.kill(s.actor, no_restart=True)
        self._shards.clear()
        return stats


RemoteCameraController = ray.remote(num_cpus=0, max_concurrency=4)(CameraController)
