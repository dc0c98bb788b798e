"""The one sampling rule (actors/frame_sampler.py) that the stream and the benchmarks' raw loops share."""

from __future__ import annotations

import pytest

from actors.frame_sampler import FrameSampler


def taken(sampler: FrameSampler, times: list[float]) -> list[float]:
    return [t for t in times if sampler.take(t)]


def test_one_frame_per_interval_of_stream_time() -> None:
    frames = [i / 25 for i in range(25 * 10)]  # 10 s at 25 fps
    got = taken(FrameSampler(1.0), frames)
    assert got == pytest.approx([float(s) for s in range(10)])
    assert len(taken(FrameSampler(2.0), frames)) == 20


def test_a_jump_ahead_does_not_burst_and_rounding_does_not_skip() -> None:
    s = FrameSampler(1.0)
    assert taken(s, [0.0, 1.0, 2.0]) == [0.0, 1.0, 2.0]
    # the stream jumps 100 s ahead (a gap): 4 s of it at 25 fps give at most one frame per second plus one,
    # not the ~100 frames a catch-up to the missed due times would take
    after_gap = taken(s, [102.0 + i / 25 for i in range(100)])
    assert after_gap[0] == 102.0 and 4 <= len(after_gap) <= 5, after_gap
    # a time base that rounds a frame 0.5 ms early still takes it
    s = FrameSampler(1.0)
    assert s.take(0.0) and s.take(0.9995)


@pytest.mark.parametrize("fps", [0.0, -1.0, float("nan")])
def test_a_rate_that_is_not_positive_is_refused_naming_it(fps: float) -> None:
    with pytest.raises(ValueError, match="analytics fps"):
        FrameSampler(fps)


def test_the_stream_and_the_ingest_benchmark_use_it() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for path in ("actors/stream.py", "benchmarks/performance/ingest.py"):
        text = (root / path).read_text(encoding="utf-8")
        assert "FrameSampler(" in text, path
        assert "interval_s * 0.5" not in text, f"{path} has its own copy of the sampling rule"
