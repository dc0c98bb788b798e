"""Camera → shard placement: rendezvous hashing with bounded, cost-weighted loads. Pure logic.

Each (camera, shard) pair has a hash score; a camera prefers shards in score order (rendezvous,
or highest-random-weight, hashing). Cameras cost different amounts — a 1080p camera decoding
every frame needs ~30x the CPU of a 360p keyframe-only one — so a shard takes a camera only while
its summed cost stays within ``(1 + epsilon)`` x the mean shard load ("consistent hashing with
bounded loads", Mirrokni et al. 2016). Placement is sticky:

* adding or removing cameras places or frees only those cameras;
* a shard that disappears frees only its cameras, which go to their next-preferred shards;
* a shard that appears (a node came back) is filled by *rebalancing*: shards above the bound give
  up the cameras that score lowest for them, and those go to the shards with room; about the new
  shard's fair share moves, nothing else.

Costs are in CPU cores, from the per-core figures ``benchmarks/performance/ingest.py`` measured
(:data:`CAMERAS_PER_CORE_30FPS`); a test checks this table against
``benchmarks/results/ingest.json`` so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Literal, get_args

import numpy as np

from configs.schema import CameraConfig

Resolution = Literal["360p", "720p", "1080p", "4k"]
DecodeMode = Literal["keyframe", "sampled", "all"]

REFERENCE_FPS = 30.0
"""Frame rate of the footage behind :data:`CAMERAS_PER_CORE_30FPS`."""

CAMERAS_PER_CORE_30FPS: dict[tuple[str, str], float] = {
    ("360p", "keyframe"): 328.0,
    ("360p", "sampled"): 64.7,
    ("360p", "all"): 53.6,
    ("720p", "keyframe"): 119.9,
    ("720p", "sampled"): 20.4,
    ("720p", "all"): 17.0,
    ("1080p", "keyframe"): 80.3,
    ("1080p", "sampled"): 12.0,
    ("1080p", "all"): 9.7,
}
"""Real-time cameras one core ingests (ours, ``cameras_per_core_derived`` in
``benchmarks/results/ingest.json``: H.264 at 30 fps, 1 s GOP, 1 analytics fps)."""

_PIXELS = {"360p": 640 * 360, "720p": 1280 * 720, "1080p": 1920 * 1080, "4k": 3840 * 2160}


def camera_cost_cores(resolution: Resolution, nominal_fps: float, decode_mode: DecodeMode) -> float:
    """CPU cores one camera's ingest needs.

    ``sampled`` and ``all`` decode every frame, so their cost scales with the frame rate;
    ``keyframe`` decodes one frame per GOP (1 s), so it does not. 4K is not measured: it is
    extrapolated from 1080p by pixel count (4x).
    """
    if nominal_fps <= 0:
        raise ValueError(f"nominal_fps must be > 0, got {nominal_fps}")
    if decode_mode not in get_args(DecodeMode):
        raise ValueError(f"unknown decode mode {decode_mode!r}")
    if resolution == "4k":
        per_core = CAMERAS_PER_CORE_30FPS[("1080p", decode_mode)] * _PIXELS["1080p"] / _PIXELS["4k"]
    elif (resolution, decode_mode) in CAMERAS_PER_CORE_30FPS:
        per_core = CAMERAS_PER_CORE_30FPS[(resolution, decode_mode)]
    else:
        raise ValueError(f"unknown resolution {resolution!r} (one of {', '.join(_PIXELS)})")
    scale = 1.0 if decode_mode == "keyframe" else nominal_fps / REFERENCE_FPS
    return scale / per_core


@lru_cache(maxsize=65536)
def _key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that spreads every input bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _scores(camera_id: str, shard_ids: Sequence[str]) -> np.ndarray:
    """Score of ``camera_id`` on each shard (vectorised: 10k cameras x 400 shards in well under 1 s)."""
    shards = np.fromiter((_key(s) for s in shard_ids), dtype=np.uint64, count=len(shard_ids))
    return _mix(shards ^ np.uint64(_key(camera_id)))


def camera_cost(camera: CameraConfig) -> float:
    """:func:`camera_cost_cores` of a configured camera."""
    return camera_cost_cores(camera.nominal_resolution, camera.nominal_fps, camera.decode_mode)


def _score(camera_id: str, shard_id: str) -> int:
    return int(_scores(camera_id, [shard_id])[0])


def shard_for(camera_id: str, shard_ids: Sequence[str]) -> str:
    """The shard ``camera_id`` prefers most (plain rendezvous, no load bound)."""
    if not shard_ids:
        raise ValueError("no shards to assign cameras to")
    return list(shard_ids)[int(np.argmax(_scores(camera_id, shard_ids)))]


def assign(camera_ids: Iterable[str], shard_ids: Sequence[str]) -> dict[str, str]:
    """Camera id → shard id by plain rendezvous (equal costs, no load bound)."""
    return {cid: shard_for(cid, shard_ids) for cid in camera_ids}


def place(
    costs: Mapping[str, float],
    shard_ids: Sequence[str],
    current: Mapping[str, str] | None = None,
    *,
    epsilon: float = 0.1,
    rebalance: bool = False,
) -> dict[str, str]:
    """Camera id → shard id for every camera in ``costs``, keeping ``current`` where it can.

    Args:
        costs: every camera that must be placed, with its cost (any unit, e.g. cores).
        shard_ids: the live shards.
        current: the placement so far; cameras whose shard is still live stay there.
        epsilon: a shard takes cameras while its load stays within ``(1 + epsilon)`` x the mean.
        rebalance: also move cameras off shards above that bound (use when shards were added).

    Returns:
        The new placement. Cameras absent from ``costs`` are dropped from it.

    Raises:
        ValueError: no shards, a negative cost or a negative ``epsilon``.
    """
    if not shard_ids:
        raise ValueError("no shards to assign cameras to")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    bad = [cid for cid, c in costs.items() if c < 0]
    if bad:
        raise ValueError(f"negative cost for cameras {bad[:5]}")
    live = set(shard_ids)
    total = sum(costs.values())
    bound = (1.0 + epsilon) * total / len(live) if total > 0 else 0.0
    loads = dict.fromkeys(shard_ids, 0.0)
    out: dict[str, str] = {}
    for cid, sid in (current or {}).items():
        if cid in costs and sid in live:
            out[cid] = sid
            loads[sid] += costs[cid]
    evicted: set[str] = set()
    if rebalance:
        for sid in shard_ids:
            if loads[sid] <= bound:
                continue
            mine = sorted((cid for cid, s in out.items() if s == sid), key=lambda c: _score(c, sid))
            for cid in mine:  # lowest score first: the cameras that like this shard least leave
                if loads[sid] <= bound:
                    break
                del out[cid]
                loads[sid] -= costs[cid]
                evicted.add(cid)
    # Cameras moved off a full shard go only to shards that were below the bound (the new ones),
    # never from one full shard to another.
    givers = {current[c] for c in evicted} if current else set()
    pending = sorted((cid for cid in costs if cid not in out), key=lambda c: (-costs[c], c))
    for cid in pending:
        cost = costs[cid]
        order = [s for s in shard_ids if s not in givers] if cid in evicted else list(shard_ids)
        order = order or list(shard_ids)
        scores = _scores(cid, order)
        target: str | None = order[int(np.argmax(scores))]
        if loads[target] + cost > bound:  # its favourite is full: the best-scoring shard with room
            target = next((order[i] for i in np.argsort(scores)[::-1] if loads[order[i]] + cost <= bound), None)
        if target is None:  # nothing has room (a camera above the bound): the least loaded shard
            target = min(order, key=lambda s: (loads[s], s))
        out[cid] = target
        loads[target] += cost
    return out


def shard_loads(placement: Mapping[str, str], costs: Mapping[str, float], shard_ids: Sequence[str]) -> dict[str, float]:
    """Summed cost per shard (shards without cameras at 0)."""
    loads = dict.fromkeys(shard_ids, 0.0)
    for cid, sid in placement.items():
        loads[sid] = loads.get(sid, 0.0) + costs[cid]
    return loads


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    """Cameras present in both placements whose shard changed."""
    return {cid for cid, sid in after.items() if cid in before and before[cid] != sid}
