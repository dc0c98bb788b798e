"""Placement: cost table against the measured ingest figures, bounded loads, sticky moves, city scale."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from cluster.inventory import GWANGJU_CAMERAS, gwangju_like_inventory
from cluster.sharding import (
    CAMERAS_PER_CORE_30FPS,
    camera_cost,
    camera_cost_cores,
    moved,
    place,
    shard_loads,
)

REPO = Path(__file__).resolve().parents[2]


def _shards(n: int, prefix: str = "shard") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(n)]


def _max_over_mean(placement: dict[str, str], costs: dict[str, float], shards: list[str]) -> float:
    loads = shard_loads(placement, costs, shards)
    return max(loads.values()) / statistics.fmean(loads.values())


def test_cost_table_is_the_measured_one() -> None:
    record = json.loads((REPO / "benchmarks" / "results" / "ingest.json").read_text())
    measured = record["cameras_per_core_derived"]
    for (res, mode), per_core in CAMERAS_PER_CORE_30FPS.items():
        assert per_core == pytest.approx(measured[res][f"ours_{mode}"], rel=0.02), (res, mode)
    fps = record["files"]["360p"]["decode"]["fps"]
    assert fps == pytest.approx(30.0, rel=0.01)  # the table is per 30 fps camera


def test_cost_grows_with_pixels_and_decoded_frames() -> None:
    assert camera_cost_cores("360p", 15, "keyframe") < camera_cost_cores("720p", 15, "keyframe")
    assert camera_cost_cores("720p", 15, "keyframe") < camera_cost_cores("720p", 15, "sampled")
    assert camera_cost_cores("1080p", 30, "all") == pytest.approx(2 * camera_cost_cores("1080p", 15, "all"))
    assert camera_cost_cores("360p", 30, "keyframe") == camera_cost_cores("360p", 5, "keyframe")  # one per GOP
    assert camera_cost_cores("4k", 15, "all") == pytest.approx(4 * camera_cost_cores("1080p", 15, "all"))
    with pytest.raises(ValueError, match="480p"):
        camera_cost_cores("480p", 15, "all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fps"):
        camera_cost_cores("360p", 0, "all")


def test_place_bounds_loads_and_is_deterministic() -> None:
    costs = {f"c{i}": 1.0 + (i % 7) for i in range(500)}
    shards = _shards(8)
    a = place(costs, shards)
    assert a == place(costs, list(reversed(shards)))
    assert set(a) == set(costs) and set(a.values()) <= set(shards)
    assert _max_over_mean(a, costs, shards) <= 1.1 + 1e-9
    with pytest.raises(ValueError, match="no shards"):
        place(costs, [])
    with pytest.raises(ValueError, match="negative"):
        place({"x": -1.0}, shards)


def test_losing_a_shard_moves_only_its_cameras_and_getting_it_back_moves_about_its_share() -> None:
    costs = {f"c{i}": 1.0 + (i % 3) for i in range(600)}
    shards = _shards(6)
    before = place(costs, shards)
    survivors = shards[:4]  # a node with two shards was lost
    after = place(costs, survivors, before)
    lost = {c for c, s in before.items() if s not in survivors}
    assert moved(before, after) == lost
    assert _max_over_mean(after, costs, survivors) <= 1.1 + 1e-9

    back = place(costs, shards, after, rebalance=True)
    went = moved(after, back)
    fair_share = 2 / 6 * len(costs)
    assert went and all(back[c] in shards[4:] for c in went)  # only onto the returning shards
    assert len(went) <= 1.3 * fair_share
    assert _max_over_mean(back, costs, shards) <= 1.1 + 1e-9
    assert place(costs, shards, back) == back  # without changes nothing moves


def test_camera_changes_move_only_those_cameras() -> None:
    costs = {f"c{i}": 1.0 for i in range(300)}
    shards = _shards(5)
    before = place(costs, shards)
    grown = {**costs, **{f"n{i}": 2.0 for i in range(30)}}
    after = place(grown, shards, before)
    assert not moved(before, after)
    shrunk = {c: v for c, v in grown.items() if not c.startswith("c1")}
    assert not moved(after, place(shrunk, shards, after))


def test_gwangju_scale_placement() -> None:
    """10,069 cameras on 400 shards, then the year's changes: 436 added, 320 replaced."""
    cams = gwangju_like_inventory(GWANGJU_CAMERAS, seed=7)
    costs = {c.id: camera_cost(c) for c in cams}
    shards = _shards(400)
    t0 = time.perf_counter()
    base = place(costs, shards)
    assign_s = time.perf_counter() - t0
    ratio = _max_over_mean(base, costs, shards)
    assert ratio <= 1.1 + 1e-9, ratio

    added = {c.id: camera_cost(c) for c in gwangju_like_inventory(436, seed=8, prefix="transfer")}
    replaced_old = sorted(costs)[::31][:320]
    replacements = {c.id: camera_cost(c) for c in gwangju_like_inventory(320, seed=9, prefix="new")}
    changed = {c: v for c, v in costs.items() if c not in set(replaced_old)} | added | replacements
    t0 = time.perf_counter()
    after = place(changed, shards, base)
    change_s = time.perf_counter() - t0
    assert not moved(base, after)  # no existing camera moved
    assert set(after) - set(base) == set(added) | set(replacements)
    assert _max_over_mean(after, changed, shards) <= 1.1 + 1e-9
    print(f"\nplace 10,069 cameras on 400 shards: {assign_s:.2f} s (max/mean {ratio:.3f}); changes {change_s:.2f} s")
