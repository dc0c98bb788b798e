"""Drop queue policies, rendezvous sharding and the camera state machine."""

from __future__ import annotations

import threading
import time

import pytest

from actors.backpressure import DropQueue
from actors.camera_state import InvalidTransition, StateMachine
from cluster.sharding import assign, shard_for
from contracts.cameras import CameraState


def test_drop_newest_rejects_the_new_item() -> None:
    q: DropQueue[int] = DropQueue(2, "drop_newest")
    assert q.put(1) is None and q.put(2) is None
    assert q.put(3) == 3
    assert [q.get(0), q.get(0)] == [1, 2]
    assert q.dropped == 1


def test_drop_oldest_evicts_the_oldest_item() -> None:
    q: DropQueue[int] = DropQueue(2, "drop_oldest")
    q.put(1)
    q.put(2)
    assert q.put(3) == 1
    assert [q.get(0), q.get(0)] == [2, 3]
    assert q.dropped == 1


def test_put_never_blocks_and_close_wakes_consumers() -> None:
    q: DropQueue[int] = DropQueue(1, "drop_oldest")
    got: list[int | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(10.0)))
    t.start()
    left = q.close()
    t.join(2.0)
    assert not t.is_alive() and got == [None] and left == []
    assert q.put(5) == 5  # closed: counted as a drop


def test_get_many_takes_what_is_queued_without_waiting_for_more() -> None:
    q: DropQueue[int] = DropQueue(8, "drop_oldest")
    for i in range(5):
        q.put(i)
    assert q.get_many(3, timeout_s=0) == [0, 1, 2]
    t0 = time.monotonic()
    assert q.get_many(10, timeout_s=5.0) == [3, 4]  # two queued: returned at once, no wait for ten
    assert time.monotonic() - t0 < 1.0
    assert q.get_many(4, timeout_s=0.01) == []
    got: list[list[int]] = []
    t = threading.Thread(target=lambda: got.append(q.get_many(4, timeout_s=10.0)))
    t.start()
    q.put(7)
    t.join(2.0)
    assert got == [[7]]
    with pytest.raises(ValueError, match="0"):
        q.get_many(0)


def test_bad_policy_and_size_are_refused() -> None:
    with pytest.raises(ValueError, match="drop_sideways"):
        DropQueue(1, "drop_sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0"):
        DropQueue(0, "drop_newest")


def test_rendezvous_moves_only_the_new_shards_share() -> None:
    cams = [f"cam-{i:05d}" for i in range(4000)]
    shards = [f"shard-{i:03d}" for i in range(8)]
    before = assign(cams, shards)
    after = assign(cams, [*shards, "shard-008"])
    moved = [c for c in cams if before[c] != after[c]]
    assert all(after[c] == "shard-008" for c in moved)
    assert 0.7 * len(cams) / 9 < len(moved) < 1.3 * len(cams) / 9
    counts = {s: sum(1 for v in before.values() if v == s) for s in shards}
    assert max(counts.values()) / min(counts.values()) < 1.3


def test_shard_for_is_deterministic_and_needs_shards() -> None:
    assert shard_for("cam-1", ["a", "b", "c"]) == shard_for("cam-1", ["c", "b", "a"])
    with pytest.raises(ValueError):
        shard_for("cam-1", [])


def test_state_machine_allows_the_documented_path_only() -> None:
    sm = StateMachine()
    assert sm.state is CameraState.CONNECTING
    sm.to(CameraState.STREAMING, "ok")
    sm.to(CameraState.STALLED, "no packet")
    sm.to(CameraState.RECONNECTING, "timeout")
    with pytest.raises(InvalidTransition, match="reconnecting -> streaming"):
        sm.to(CameraState.STREAMING, "skipping connect")
    sm.to(CameraState.DOWN, "3 failures")
    sm.to(CameraState.STREAMING, "a retry of the down camera got packets")
    sm.to(CameraState.DOWN, "failed again")
    sm.to(CameraState.CONNECTING, "camera re-added")
    sm.to(CameraState.RETIRED, "removed")
    assert sm.to(CameraState.CONNECTING, "late") is False and sm.state is CameraState.RETIRED
