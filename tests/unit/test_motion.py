"""Motion gate on synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

from actors.motion import MotionGate


def frame(value: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    img = np.full((360, 640, 3), value, dtype=np.uint8)
    if box is not None:
        x1, y1, x2, y2 = box
        img[y1:y2, x1:x2] = 255
    return img


def test_static_frames_are_skipped_and_counted() -> None:
    gate = MotionGate(threshold=2.0, max_skip_s=10.0)
    assert gate.decide(frame(100), 0.0).analyse  # first frame always analysed
    assert not gate.decide(frame(100), 1.0).analyse
    assert not gate.decide(frame(101), 2.0).analyse  # 1 grey level of sensor noise
    assert gate.skipped == 2


def test_a_moving_object_is_motion() -> None:
    gate = MotionGate(threshold=2.0, max_skip_s=10.0)
    gate.decide(frame(50), 0.0)
    d = gate.decide(frame(50, box=(100, 100, 300, 300)), 1.0)
    assert d.analyse and d.score > 2.0


def test_slow_drift_accumulates_against_the_last_analysed_frame() -> None:
    gate = MotionGate(threshold=3.0, max_skip_s=100.0)
    gate.decide(frame(100), 0.0)
    decisions = [gate.decide(frame(100 + i), float(i)).analyse for i in range(1, 6)]
    assert decisions == [False, False, True, False, False]


def test_static_scene_is_still_analysed_every_max_skip_s() -> None:
    gate = MotionGate(threshold=2.0, max_skip_s=5.0)
    gate.decide(frame(10), 0.0)
    assert not gate.decide(frame(10), 4.9).analyse
    assert gate.decide(frame(10), 5.0).analyse


def test_reset_and_bad_arguments() -> None:
    gate = MotionGate(threshold=2.0, max_skip_s=5.0)
    gate.decide(frame(10), 0.0)
    gate.reset()
    assert gate.decide(frame(10), 0.1).analyse
    with pytest.raises(ValueError, match="-1"):
        MotionGate(threshold=-1, max_skip_s=1)
