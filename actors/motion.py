"""A cheap motion gate: skip inference when a frame barely differs from the last analysed one.

The comparison runs on a 64x36 grey thumbnail (a few microseconds), against the last frame
that was *analysed*, so slow drift still accumulates into motion. A static scene is still
analysed at least every ``max_skip_s`` so a rule's state never goes stale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMB_SIZE = (64, 36)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Grey 64x36 float32 thumbnail of a BGR (or grey) frame."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


@dataclass(frozen=True, slots=True)
class GateDecision:
    analyse: bool
    score: float  # mean absolute grey-level difference to the reference thumbnail


class MotionGate:
    """Decides per sampled frame whether it must go to the detector."""

    def __init__(self, threshold: float, max_skip_s: float) -> None:
        if threshold <= 0 or max_skip_s <= 0:
            raise ValueError(f"threshold and max_skip_s must be > 0 (got {threshold}, {max_skip_s})")
        self.threshold = threshold
        self.max_skip_s = max_skip_s
        self._ref: np.ndarray | None = None
        self._ref_ts = float("-inf")
        self.skipped = 0

    def reset(self) -> None:
        """Forget the reference (a new stream or resolution)."""
        self._ref, self._ref_ts = None, float("-inf")

    def decide(self, image: np.ndarray, ts: float) -> GateDecision:
        thumb = thumbnail(image)
        if self._ref is None or ts - self._ref_ts >= self.max_skip_s:
            score = float("inf") if self._ref is None else float(np.abs(thumb - self._ref).mean())
            self._ref, self._ref_ts = thumb, ts
            return GateDecision(True, score)
        score = float(np.abs(thumb - self._ref).mean())
        if score >= self.threshold:
            self._ref, self._ref_ts = thumb, ts
            return GateDecision(True, score)
        self.skipped += 1
        return GateDecision(False, score)
