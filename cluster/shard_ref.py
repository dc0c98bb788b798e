"""A shard actor as the control plane holds it: its handle, node, incarnation and liveness."""

from __future__ import annotations

from dataclasses import dataclass

import ray

from actors.shard import Incarnation
from serve_apps.remote_call import ActorCaller


@dataclass(slots=True)
class ShardRef:
    """One shard actor as the controller sees it."""

    shard_id: str
    actor: ray.actor.ActorHandle
    node_id: str | None = None
    incarnation: Incarnation | None = None
    last_seen_ts: float = 0.0
    live: bool = True

    def caller(self, namespace: str) -> ActorCaller:
        """Calls to this shard through the shared retry policy (its handle, never looked up again:
        the controller itself tells a restarted shard from a new one by its incarnation)."""
        return ActorCaller(f"cctv-{self.shard_id}", namespace, self.actor)
