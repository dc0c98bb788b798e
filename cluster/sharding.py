"""Camera → shard assignment by rendezvous (highest-random-weight) hashing. Pure logic.

Each camera goes to the shard with the highest hash score for the pair (camera, shard),
so adding or removing a shard moves only the cameras that gain or lose that shard:
about 1/N of them. No table of assignments has to be stored to recompute it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence


def _score(camera_id: str, shard_id: str) -> int:
    digest = hashlib.blake2b(f"{camera_id}\x00{shard_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_for(camera_id: str, shard_ids: Sequence[str]) -> str:
    """The shard that owns ``camera_id``."""
    if not shard_ids:
        raise ValueError("no shards to assign cameras to")
    return max(shard_ids, key=lambda s: _score(camera_id, s))


def assign(camera_ids: Iterable[str], shard_ids: Sequence[str]) -> dict[str, str]:
    """Camera id → shard id for every camera."""
    return {cid: shard_for(cid, shard_ids) for cid in camera_ids}
