"""Water level on a staff gauge (or a wall) from single decoded frames, and the barrier-alarm rule.

Underpass barriers close at 15 cm of water; the cameras that watch the gauges are decoded in
keyframe mode (one frame a second), so the reader must work on isolated, compressed frames
with rain, night, ripples and the gauge's own mirror image in the water.

How a frame is read (:class:`WaterLevelEstimator`):

1. The band ``band_px`` wide along the configured gauge line is resampled into a straight
   strip (``cv2.remap``), one row per pixel of line length, bottom to top, starting a little
   *below* the bottom mark (``MARGIN_FRAC`` of the line) so that a dry gauge still shows a
   "below" segment (the road) and reads 0.
2. Per row, four cues that tell water from gauge (each smoothed over ~2 cm, the period of the
   gauge's 1 cm bars):

   * edge energy (log of the mean gradient magnitude): the marks have edges, water is smooth;
   * spread across the band (log of the row's standard deviation): a gauge row is half bar,
     half white; a water row is one colour;
   * brightness: a white gauge is brighter than muddy water (weak weight: glints, silt stains);
   * change since the previous frame: ripples, droplets and the wobbling reflection change
     from one second to the next, the gauge does not (only when a previous strip exists).

3. The waterline is the row ``k`` where the cues best fit a *step* with the right polarity
   (water below, gauge above). For each cue the fit of a step at every ``k`` is its
   correlation with the step indicator (two cumulative sums, vectorised), which is scale
   free, bounded and signed; the cues' correlations are averaged with fixed weights and the
   maximum wins. The frame's **confidence** is that maximum (0..1: ~0.8-0.95 for a clean step
   in every cue) times a texture-contrast factor (the gauge rows must be markedly more
   textured than the water rows, ``CONTRAST_FLOOR``..``CONTRAST_FULL``), because a
   correlation is scale free and smoothed noise fits a step too: a grey, covered or
   fogged-up view scores ~0. Polarity is what keeps the mirror image below the waterline
   from winning: it has edges too, but fainter, darker and moving.
4. The row is converted to cm linearly between ``bottom_cm`` and ``top_cm`` (exact for a
   camera that is rolled, or turned sideways to the wall; approximate under strong pitch).
5. The level is the median of the last ``median_window`` *confident* raw readings; the rate
   of rise is the Theil-Sen slope (median of pairwise slopes, robust to a wrong frame) of the
   confident raw readings of the last ``RATE_WINDOW_S`` seconds.

Cost: one remap of a ~300 x 12 strip and a few row reductions, well under 1 ms per frame.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from actors.analytics.events import EventLifecycle, polygon_box
from configs.analytics import Severity, WaterGaugeConfig
from contracts.events import EventTransition

# Readings below this confidence are not used for the level and cannot open an event.
MIN_CONFIDENCE = 0.35
# Strip starts this fraction of the gauge length below the bottom mark (the road when dry).
MARGIN_FRAC = 0.08
# Smoothing of the row cues along the strip (cm): the gauge's bar period is 2 cm.
SMOOTH_CM = 2.0
# Neither segment may be shorter than this (cm): a step needs rows on both sides to fit.
MIN_SEGMENT_CM = 2.0
# Rate of rise: regression over the confident readings of this many seconds.
RATE_WINDOW_S = 60.0
# A level older than this (no confident reading since) is stale and holds no event open.
HOLD_S = 120.0
# The previous strip is used for the change cue only if it is at most this old.
MAX_CHANGE_GAP_S = 5.0
# Texture contrast (edge energy and spread, log units, gauge minus water) that counts as
# none / as full: a clean gauge over muddy water scores 1.1-2.4, a grey noisy frame 0.1-0.2.
CONTRAST_FLOOR, CONTRAST_FULL = 0.2, 0.6
# Cue weights (edge energy, across-band spread, brightness, change since previous frame).
W_EDGE, W_SPREAD, W_BRIGHT, W_CHANGE = 1.0, 1.0, 0.5, 1.0

SEVERITIES: tuple[Severity, ...] = ("warning", "severe", "critical")


@dataclass(frozen=True, slots=True)
class WaterReading:
    """One frame's reading of a gauge.

    Attributes:
        ts: Capture time of the frame (epoch s).
        level_cm: Median of the last ``median_window`` confident raw readings; None until one exists.
        raw_cm: This frame's own estimate (whatever its confidence).
        confidence: 0..1, how well this frame's strip fits "water below, gauge above".
        rate_cm_per_min: Rise rate (Theil-Sen over the last ``RATE_WINDOW_S`` s of confident readings).
        accepted: ``confidence >= min_confidence``: the raw reading entered the median.
        age_s: Seconds since the last confident reading (0 when this one is); inf if none yet.
    """

    ts: float
    level_cm: float | None
    raw_cm: float
    confidence: float
    rate_cm_per_min: float
    accepted: bool
    age_s: float


@dataclass(frozen=True, slots=True)
class StripProfile:
    """The single-frame analysis behind a raw reading (for tuning and tests)."""

    score: np.ndarray  # combined step fit for a waterline at each row (rows bottom to top)
    row: int  # first gauge row (the waterline)
    raw_cm: float
    confidence: float


def _step_correlation(features: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Correlation of each column with the step "0 below row k, 1 from row k", for k in [lo, hi).

    ``corr = (mean_above - mean_below) * sqrt(p (1 - p)) / std`` with ``p = k / n``: positive
    when the rows above are larger, scale free, in [-1, 1]. Two cumulative sums, O(n) per
    column; ``features`` is (n rows, c cues), the result (hi - lo, c).
    """
    n = features.shape[0]
    std = features.std(axis=0)
    cs = np.concatenate([np.zeros((1, features.shape[1])), np.cumsum(features, axis=0, dtype=np.float64)])
    k = np.arange(lo, hi, dtype=np.float64)[:, None]
    below = cs[lo:hi] / k
    above = (cs[n] - cs[lo:hi]) / (n - k)
    p = k / n
    return (above - below) * np.sqrt(p * (1.0 - p)) / np.maximum(std, 1e-6)


class WaterLevelEstimator:
    """Reads the water level of one gauge, frame by frame (see the module docstring).

    Args:
        cfg: The gauge: image line ``bottom`` -> ``top``, its cm, band width, median window.
        min_confidence: Raw readings under this are reported but not used for the level.
    """

    def __init__(self, cfg: WaterGaugeConfig, *, min_confidence: float = MIN_CONFIDENCE) -> None:
        self.cfg = cfg
        self.min_confidence = min_confidence
        bottom = np.array(cfg.bottom, np.float64)
        top = np.array(cfg.top, np.float64)
        self.length_px = float(np.linalg.norm(top - bottom))
        if self.length_px < 10:
            raise ValueError(f"gauge {cfg.name!r} is {self.length_px:.1f} px long; at least 10 px are needed")
        along = (top - bottom) / self.length_px
        across = np.array([-along[1], along[0]])
        self.cm_per_px = (cfg.top_cm - cfg.bottom_cm) / self.length_px
        self.margin_rows = max(3, round(MARGIN_FRAC * self.length_px))
        n_rows = self.margin_rows + math.ceil(self.length_px) + 1
        t = np.arange(n_rows, dtype=np.float64) - self.margin_rows  # px from the bottom mark, upwards
        o = np.arange(cfg.band_px, dtype=np.float64) - (cfg.band_px - 1) / 2.0
        pts = bottom + t[:, None, None] * along + o[None, :, None] * across
        self._map_x = np.ascontiguousarray(pts[..., 0], dtype=np.float32)
        self._map_y = np.ascontiguousarray(pts[..., 1], dtype=np.float32)
        self._smooth_rows = max(3, round(SMOOTH_CM / self.cm_per_px) | 1)
        self._min_seg_rows = max(3, round(MIN_SEGMENT_CM / self.cm_per_px))
        self._prev_strip: np.ndarray | None = None
        self._prev_ts = -math.inf
        self._last_ts = -math.inf
        self._accepted: deque[tuple[float, float]] = deque()  # (ts, raw_cm) of confident readings
        self._last_level: float | None = None

    # ------------------------------------------------------------------ single frame

    def strip(self, image_bgr: np.ndarray) -> np.ndarray:
        """The band along the gauge as a straight grey strip, rows bottom (below the mark) to top."""
        # Resample first, convert after: only the strip's few thousand pixels are touched.
        out = cv2.remap(image_bgr, self._map_x, self._map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if out.ndim == 3:
            out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
        return out.astype(np.float32)

    def profile(self, strip: np.ndarray, prev_strip: np.ndarray | None = None) -> StripProfile:
        """Find the waterline in a strip (and, if given, the previous frame's strip)."""
        g = cv2.GaussianBlur(strip, (0, 0), 0.8)
        d_along = np.abs(np.diff(g, axis=0, prepend=g[:1]))
        d_across = np.abs(np.diff(g, axis=1, prepend=g[:, :1]))
        cols = [
            np.log1p((d_along + d_across).mean(axis=1)),  # edge energy
            np.log1p(g.std(axis=1)),  # spread across the band
            g.mean(axis=1),  # brightness
        ]
        weights = [W_EDGE, W_SPREAD, W_BRIGHT]
        if prev_strip is not None:
            cols.append(np.log1p(np.abs(strip - prev_strip).mean(axis=1)))
            weights.append(-W_CHANGE)  # negative: water changes from frame to frame, the gauge does not
        cues = cv2.blur(np.stack(cols, axis=1), (1, self._smooth_rows), borderType=cv2.BORDER_REPLICATE)
        n = strip.shape[0]
        lo, hi = self._min_seg_rows, n - self._min_seg_rows
        w = np.asarray(weights)
        score = _step_correlation(cues, lo, hi) @ (w / np.abs(w).sum())
        best = int(np.argmax(score))
        row = lo + best
        # The correlation is scale free, so smoothed noise can fit a step too: also demand that
        # the gauge above is markedly more textured than the water below (log units).
        contrast = float((cues[row:, :2].mean(axis=0) - cues[:row, :2].mean(axis=0)).mean())
        strength = np.clip((contrast - CONTRAST_FLOOR) / (CONTRAST_FULL - CONTRAST_FLOOR), 0.0, 1.0)
        confidence = float(np.clip(score[best], 0.0, 1.0) * strength)
        # Row k is the first gauge row: the surface lies between rows k - 1 and k.
        pos_px = row - 0.5 - self.margin_rows
        raw_cm = float(np.clip(self.cfg.bottom_cm + pos_px * self.cm_per_px, self.cfg.bottom_cm, self.cfg.top_cm))
        full = np.full(n, np.nan)
        full[lo:hi] = score
        return StripProfile(score=full, row=row, raw_cm=raw_cm, confidence=confidence)

    # ------------------------------------------------------------------ over time

    def update(self, ts: float, image_bgr: np.ndarray) -> WaterReading:
        """Read one frame captured at ``ts`` (s); frames older than the last one are read but not kept."""
        strip = self.strip(image_bgr)
        prev = self._prev_strip if 0 < ts - self._prev_ts <= MAX_CHANGE_GAP_S else None
        prof = self.profile(strip, prev)
        accepted = prof.confidence >= self.min_confidence
        if ts >= self._last_ts:
            self._last_ts = ts
            self._prev_strip, self._prev_ts = strip, ts
            if accepted:
                self._accepted.append((ts, prof.raw_cm))
                while self._accepted and self._accepted[0][0] < ts - max(RATE_WINDOW_S, HOLD_S):
                    self._accepted.popleft()
        recent = [cm for _, cm in list(self._accepted)[-self.cfg.median_window :]]
        level = float(np.median(recent)) if recent else None
        age_s = ts - self._accepted[-1][0] if self._accepted else math.inf
        return WaterReading(
            ts=ts,
            level_cm=None if level is None else round(level, 2),
            raw_cm=round(prof.raw_cm, 2),
            confidence=round(prof.confidence, 3),
            rate_cm_per_min=round(self._rate_cm_per_min(ts), 2),
            accepted=accepted,
            age_s=max(0.0, age_s),
        )

    def _rate_cm_per_min(self, ts: float) -> float:
        """Theil-Sen slope of the confident raw readings of the last RATE_WINDOW_S seconds."""
        pts = np.array([(t, cm) for t, cm in self._accepted if t >= ts - RATE_WINDOW_S], np.float64)
        if len(pts) < 3:
            return 0.0
        i, j = np.triu_indices(len(pts), k=1)
        dt = pts[j, 0] - pts[i, 0]
        ok = dt > 0
        if not ok.any():
            return 0.0
        return float(np.median((pts[j, 1] - pts[i, 1])[ok] / dt[ok])) * 60.0


class WaterLevelRule:
    """Barrier alarm on one gauge: the level at or over the lowest threshold opens ``water_level``.

    * opens once the level held at or over ``thresholds_cm[0]`` for ``lifecycle.min_duration_s``;
    * severity follows the highest threshold reached: first ``warning``, second ``severe``,
      third and more ``critical`` (the event is updated when it rises or the level peaks);
    * closes once the level stayed under the lowest threshold for ``lifecycle.cooldown_s``.

    Confidence gating: a frame whose reading is not confident (``accepted`` false) counts as
    "condition absent" while no event is open, so an event only opens on
    ``min_duration_s`` of *consecutive confident* readings at or over the threshold (a pending
    one is reset). Once an event is open, an unconfident frame keeps the last confident level
    (the median holds) for up to ``HOLD_S`` seconds, so rain on the lens or a dark spell does
    not close a barrier alarm; after that the level is stale and counts as absent.
    """

    event_type = "water_level"

    def __init__(self, camera_id: str, cfg: WaterGaugeConfig, *, min_confidence: float = MIN_CONFIDENCE) -> None:
        self.cfg = cfg
        self.thresholds = list(cfg.thresholds_cm)
        self.estimator = WaterLevelEstimator(cfg, min_confidence=min_confidence)
        self.events = EventLifecycle(camera_id, self.event_type, cfg.name, cfg.lifecycle, unit="cm")
        self.last_reading: WaterReading | None = None
        x1, y1, x2, y2 = polygon_box((cfg.bottom, cfg.top))
        half = cfg.band_px / 2.0
        self.box = (x1 - half, y1, x2 + half, y2)  # the gauge's strip, where the level is read

    @property
    def active_event_id(self) -> str | None:
        return self.events.active_event_id

    def severity(self, level_cm: float) -> Severity | None:
        """Severity for a level: None under the lowest threshold."""
        reached = sum(level_cm >= t for t in self.thresholds)
        return SEVERITIES[min(reached, len(SEVERITIES)) - 1] if reached else None

    def update_frame(self, ts: float, image: np.ndarray) -> list[EventTransition]:
        r = self.estimator.update(ts, image)
        self.last_reading = r
        usable = r.level_cm is not None and (r.accepted or (self.active_event_id is not None and r.age_s <= HOLD_S))
        level = r.level_cm if r.level_cm is not None else r.raw_cm
        sev = self.severity(level) if usable else None
        trend = "rising" if r.rate_cm_per_min >= 0 else "falling"
        detail = f"level {level:.1f} cm, {trend} {abs(r.rate_cm_per_min):.1f} cm/min, confidence {r.confidence:.2f}"
        if not r.accepted:
            detail += f" (level held from {r.age_s:.0f} s ago)"
        return self.events.update(
            ts,
            sev is not None,
            value=round(level, 1),
            severity=sev or "warning",
            threshold=self.thresholds[0],
            detail=detail,
            box=self.box,
        )

    def close(self, ts: float) -> list[EventTransition]:
        return self.events.close(ts)
