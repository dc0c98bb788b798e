"""PacketRing: GOP-granular eviction by seconds and bytes, snapshots, clear."""

from __future__ import annotations

import itertools
import pickle
import threading
from fractions import Fraction

import pytest

from actors.packets import EncodedPacket, PacketRing, StreamInfo

FPS = 10
GOP = 10  # packets per GOP, keyframe first: one GOP per second
TB = Fraction(1, FPS)


def make_packets(n: int, *, size_bytes: int = 100, t0: float = 1000.0, first_index: int = 0) -> list[EncodedPacket]:
    """``n`` packets at 10 fps, a keyframe every GOP packets (counted from index 0)."""
    return [
        EncodedPacket(
            data=bytes([i % 256]) * size_bytes,
            pts=i,
            dts=i,
            duration=1,
            time_base=TB,
            is_keyframe=i % GOP == 0,
            wall_ts=t0 + i / FPS,
        )
        for i in range(first_index, first_index + n)
    ]


def fill(ring: PacketRing, packets: list[EncodedPacket]) -> None:
    for p in packets:
        ring.append(p)


def test_bounded_by_seconds_in_whole_gops() -> None:
    ring = PacketRing(max_seconds=3.0, max_bytes=10**9)
    pkts = make_packets(100)
    fill(ring, pkts)
    # 100 packets = 10 GOPs of 1 s; the span of 3 whole GOPs is 2.9 s, of 4 GOPs 3.9 s.
    assert ring.num_gops == 3
    assert ring.num_packets == 30
    assert ring.seconds == pytest.approx(2.9)
    assert ring.seconds <= ring.max_seconds
    assert ring.evicted_packets == 70
    assert ring.evicted_bytes == 70 * 100
    assert ring.bytes == 30 * 100
    snap = ring.snapshot(since_wall_ts=0.0)
    assert snap[0].is_keyframe
    assert snap == pkts[70:]


def test_bounded_by_bytes_in_whole_gops() -> None:
    ring = PacketRing(max_seconds=3600.0, max_bytes=2_500)
    fill(ring, make_packets(100))  # 1,000 bytes per GOP
    assert ring.bytes <= 2_500
    assert ring.num_gops == 2
    assert ring.num_packets == 20
    assert ring.evicted_bytes == 80 * 100
    assert not ring.over_budget


def test_always_starts_at_a_keyframe() -> None:
    ring = PacketRing(max_seconds=2.0, max_bytes=10**9)
    for p in make_packets(95):
        ring.append(p)
        snap = ring.snapshot(since_wall_ts=0.0)
        assert snap[0].is_keyframe
        assert snap[-1] == p
        assert ring.seconds <= 2.0


def test_packets_before_the_first_keyframe_are_skipped() -> None:
    ring = PacketRing(max_seconds=10.0, max_bytes=10**9)
    pkts = make_packets(25, first_index=5)  # indices 5..29: keyframes at 10 and 20
    fill(ring, pkts)
    assert ring.skipped_packets == 5
    assert ring.num_packets == 20
    assert ring.snapshot(0.0)[0].pts == 10


def test_snapshot_starts_at_keyframe_at_or_before_since() -> None:
    ring = PacketRing(max_seconds=100.0, max_bytes=10**9)
    pkts = make_packets(50)  # keyframes at wall 1000, 1001, ..., 1004
    fill(ring, pkts)
    # Between keyframes: the earlier one.
    assert ring.snapshot(1002.5)[0].wall_ts == pytest.approx(1002.0)
    assert ring.snapshot(1002.5) == pkts[20:]
    # Exactly on a keyframe: that one.
    assert ring.snapshot(pkts[30].wall_ts)[0] == pkts[30]
    # Older than the ring: the first kept keyframe.
    assert ring.snapshot(0.0) == pkts
    # Newer than the newest keyframe: the newest GOP.
    assert ring.snapshot(5000.0) == pkts[40:]
    assert ring.snapshot(5000.0)[-1] == pkts[-1]


def test_snapshot_of_empty_ring_is_empty() -> None:
    assert PacketRing(max_seconds=1.0, max_bytes=1_000).snapshot(0.0) == []


def test_oversize_current_gop_is_kept_and_counted() -> None:
    ring = PacketRing(max_seconds=100.0, max_bytes=1_500)
    big = make_packets(30, size_bytes=200)  # 2,000 bytes per GOP: each alone exceeds the budget
    fill(ring, big[:10])
    assert ring.num_packets == 10  # never evicts the current GOP
    assert ring.over_budget
    assert ring.over_budget_gops == 1
    fill(ring, big[10:])
    # Each new GOP evicts the older ones, and is itself counted once.
    assert ring.num_gops == 1
    assert ring.snapshot(0.0) == big[20:]
    assert ring.over_budget_gops == 3
    assert ring.evicted_packets == 20


def test_long_gop_over_seconds_is_kept() -> None:
    ring = PacketRing(max_seconds=0.5, max_bytes=10**9)
    fill(ring, make_packets(10))
    assert ring.num_packets == 10
    assert ring.seconds == pytest.approx(0.9)
    assert ring.over_budget_gops == 1


def test_clear_drops_everything_and_waits_for_a_keyframe() -> None:
    ring = PacketRing(max_seconds=10.0, max_bytes=10**9)
    fill(ring, make_packets(25))
    ring.clear()
    assert (ring.num_packets, ring.num_gops, ring.bytes, ring.seconds) == (0, 0, 0, 0.0)
    assert ring.snapshot(0.0) == []
    fill(ring, make_packets(15, first_index=25, t0=2000.0))  # 25..29 non-key, keyframe at 30
    assert ring.skipped_packets == 5
    assert ring.snapshot(0.0)[0].pts == 30
    stats = ring.stats()
    assert stats.num_packets == 10 and stats.num_gops == 1 and stats.bytes == 1_000


@pytest.mark.parametrize(("max_seconds", "max_bytes"), [(0.0, 10), (-1.0, 10), (1.0, 0)])
def test_rejects_bad_bounds(max_seconds: float, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        PacketRing(max_seconds=max_seconds, max_bytes=max_bytes)


def test_concurrent_append_and_snapshot() -> None:
    ring = PacketRing(max_seconds=2.0, max_bytes=10**9)
    pkts = make_packets(5_000, size_bytes=10)
    errors: list[str] = []

    def reader() -> None:
        for _ in range(2_000):
            snap = ring.snapshot(0.0)
            if snap and not snap[0].is_keyframe:
                errors.append(f"snapshot starts at pts {snap[0].pts}")
            if any(b.pts != a.pts + 1 for a, b in itertools.pairwise(snap)):
                errors.append("snapshot has a gap")

    t = threading.Thread(target=reader)
    t.start()
    fill(ring, pkts)
    t.join()
    assert errors == []
    assert ring.num_packets + ring.evicted_packets == len(pkts)


def test_messages_pickle() -> None:
    pkt = make_packets(1)[0]
    info = StreamInfo("h264", 640, 360, b"\x01\x64", Fraction(1, 30000), 29.97)
    assert pickle.loads(pickle.dumps(pkt)) == pkt
    assert pickle.loads(pickle.dumps(info)) == info
