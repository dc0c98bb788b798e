"""Fire and smoke on sampled CCTV frames: classic colour and dynamics cues, a learned detector's detections, or both.

Why classic: no permissively licensed, packaged fire/smoke model exists, and the control centre needs a flag within
seconds on every camera, so the detector runs on the decoder shard's CPU for each sampled frame (about 2 ms,
downscale included, on a frame reduced to 320 px wide) without a GPU round trip.

Why it works at the analytics rate (1-2 sampled frames per second, often keyframes only). Every comparison with the
past is made against the sample about one second earlier (``compare_gap_s``), so 1 fps and 2 fps behave alike:

* **Flame flicker without a high frame rate.** Flames change shape on a ~0.1 s time scale, so two samples a second
  apart show two *unrelated* flame shapes in the *same place*: the flame-coloured pixels fall in the same coarse
  cells (persistence) while, inside those cells, redness (R - B) rises in some pixels and falls in others (flicker).
  A parked red car, an orange sign, a brick wall: the same pixels, no change. A person walking in front of an orange
  cone: redness only falls (or, when they have passed, only rises). A red car or an orange jacket moving past:
  leaves its cells within a second or two. The one-second decorrelation of flames *is* the flicker signal, so no
  10 fps analysis is needed.
* **What moves is not what burns.** A face that talks, a hand, a box carried past, a lamp seen by a moving camera:
  warm, in the same cells, changing both ways, like a flame. But a smooth dense optical flow maps the view a second
  ago onto the new one for them, and leaves almost none of their change; two flame shapes a second apart are
  unrelated, so most of theirs is left. Each region of persistent flame cells is weighted by how much of its
  redness change the flow does *not* explain (``flow_residual_*``; computed only when there are candidates). A
  view that changed as a whole since a second ago (a film cut, a preset move) is not compared at all.
* **Smoke is grey, soft, new or billowing, one sizeable region, and alive.** Smoke pixels are low-saturation,
  mid-brightness and low-texture (smoke blurs what is behind it). They are either new against a slowly adapting
  background (an approximate running median, which people passing through barely move) or were smoke-like a second
  ago too and have changed since (a plume that was already there when the background started still billows; the
  floor that a walking person uncovers was not smoke-like a second ago). They form one large connected region, not
  the specks people and cars leave, and the region keeps changing (median local change), which a grey lorry that
  parks does not. Growth of the region over the last few seconds raises the score. A large soft region out of
  nothing within one second is something close to the lens (a hand, an insect), not smoke, which grows: smoke is
  held off for ``occlusion_hold_s``.
* **Persistence.** Both scores are the median of the per-frame scores of the last ``history_s`` seconds, so one odd
  frame neither raises nor drops an alarm; the event life cycle's ``min_duration_s`` adds the rest.
* **Camera motion and exposure.** A global translation between samples (PTZ pan, a drone, a pole swaying) is
  estimated by phase correlation and compensated before comparisons with the past, so a pan does not turn a static
  orange sign into flicker; a confident jump too large to compensate (preset change) restarts the history.
  Exposure changes are compensated by a gain against the background and a tone-curve match against the sample a
  second ago; most of the view changing at once restarts the background.

Grayscale frames (or colour frames without chroma) can never be fire: the flame test needs saturated red-yellow
pixels. ``benchmarks/accuracy/eval_fire.py`` measures the rule on a tuning and a held-out validation set of real footage
(``tests/data/fire_smoke_split.json``); the README quotes the validation figures and what still fools it.

**A learned model instead, or as well** (``FireSmokeConfig.source``). When an operator has a fire/smoke detector
(pushed to the model registry with its class names, served for the camera's purpose), ``learned`` drives the
events from its detections only (:func:`learned_scores`; the classic scorer does not run) and ``fused`` takes,
per sampled frame, the higher of the classic score and the latest learned score not older than ``max_age_s``.
Either way one ``fire`` and one ``smoke`` life cycle per camera, so a fire seen by both never gives two events.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from actors.analytics.events import EventLifecycle
from actors.analytics.zones import points_in_polygon
from configs.analytics import FireSmokeConfig, LearnedFireSmokeConfig
from contracts.detector import Detection
from contracts.events import Box, EventTransition

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class FireSmokeScores:
    """What the scorer saw in one frame.

    Attributes:
        fire: Fire score in [0, 1]: median of the per-frame scores of the last ``history_s`` seconds.
        smoke: Smoke score in [0, 1], smoothed the same way.
        fire_area_frac: Share of the region of interest covered by persistent flame-coloured pixels, each cell
            weighted by how flame-like its flicker is, in this frame.
        smoke_area_frac: Share of the region of interest covered by the largest persistent smoke region in this
            frame.
        fire_flicker: Two-way redness change per flame pixel (levels of R - B) over the persistent flame cells
            against the sample a second ago (0 when there are none): diagnostics.
        smoke_churn: Median local grey-level change inside the smoke region against the sample a second ago
            (grey levels; 0 when there is none): diagnostics.
        fire_box: Box around the cells that counted as flame in this frame, in source-frame pixels (None: none).
        smoke_box: Box around the largest smoke region in this frame, in source-frame pixels (None: none).
    """

    fire: float
    smoke: float
    fire_area_frac: float
    smoke_area_frac: float
    fire_flicker: float = 0.0
    smoke_churn: float = 0.0
    fire_box: Box | None = None
    smoke_box: Box | None = None


@dataclass(frozen=True, slots=True)
class FireSmokeTuning:
    """Internal knobs of the scorer (operators tune the thresholds in :class:`FireSmokeConfig`, not these).

    Colours are OpenCV's 8-bit HSV (hue 0..180 for 0..360°, saturation and value 0..255) and 8-bit BGR. Areas are
    shares of the region of interest. Fire cues work at ``work_width_px``, smoke cues at half of it. The defaults
    were set on the tuning clips of ``tests/data/fire_smoke_split.json`` only; see ``benchmarks/accuracy/eval_fire.py``.
    """

    work_width_px: int = 320
    cell_px: int = 8
    """Side of the coarse cells (at the resolution each cue works at) in which persistence is judged."""
    compare_gap_s: float = 0.75
    """Comparisons are made with the newest earlier sample at least this old (the previous one at 1 fps)."""
    history_s: float = 2.5
    """Scores are the median of the per-frame scores of this many seconds (3 samples at 1 fps, 5-6 at 2 fps)."""
    max_gap_s: float = 10.0
    """A gap between samples longer than this (stream stall) restarts the history: the past is stale."""
    min_shift_px: float = 1.5
    """Global shifts below this (pixels at half work resolution) are ignored: mostly estimation noise from moving
    people, and compensating noise would jitter the background."""
    min_shift_response: float = 0.1
    """Phase-correlation peak below which the global shift estimate is not trusted (no compensation)."""
    max_shift_frac: float = 0.25
    """A trusted global shift larger than this share of the frame is a scene change (preset move): restart."""

    flame_min_red: int = 190
    flame_min_saturation: int = 115
    flame_max_hue: int = 30
    """30 in OpenCV units is 60°: red through orange to yellow."""
    flame_pale_min_red: int = 235
    flame_pale_min_redness: int = 60
    """Pale flames seen through smoke: R at least ``flame_pale_min_red`` and R - B at least this."""
    flame_cell_min_frac: float = 0.05
    """A cell holds flame when at least this share of its pixels are flame-coloured."""
    flicker_low: float = 6.0
    """Two-way redness change per flame pixel (levels) at or below this is a rigid or static object: weight 0."""
    flicker_high: float = 16.0
    """At or above this it is flame-like change: weight 1."""
    rigid_check_regions: int = 6
    """The largest regions of flame cells (at most this many) are checked for rigid motion."""
    rigid_search_cells: int = 2
    """A region may have moved by up to this many cells since a second ago to count as a rigid mover."""
    rigid_min_response: float = 0.2
    """Phase-correlation peak a region's translation needs to be trusted."""
    rigid_max_flicker_ratio: float = 0.3
    """A region whose flicker its own translation cuts below this share of the unaligned one is a rigid mover."""
    flow_residual_low: float = 12.0
    """Redness change (levels; median over a region's cells of the mean over their flame pixels) left after warping
    the sample a second ago along the dense optical flow, at or below which the region is something that moved or
    deformed (a face talking, a hand, a box carried): weight 0. Flames a second apart are unrelated shapes that no
    smooth flow maps onto each other."""
    flow_residual_high: float = 20.0
    """At or above this the region's change is not explained by motion: weight 1."""
    cut_max_correlation: float = 0.4
    """Correlation of the grey view with the (camera-shift aligned) sample a second ago below which the view itself
    changed (a film cut, a preset move, a lens covered): no fire comparison is made on that frame."""
    cut_min_change: float = 8.0
    """...provided the median grey-level change of the rest of the view is at least this (a dark, flat, noisy view
    decorrelates between samples without changing)."""
    fire_area_ref_frac: float = 0.0008
    """Per-frame fire score is ``1 - exp(-area / ref)``: 0.5 at 0.055 % of the view, 0.92 at 0.2 %."""

    smoke_max_saturation: int = 64
    smoke_min_value: int = 70
    smoke_max_value: int = 245
    smoke_max_texture: float = 10.0
    """Local standard deviation (grey levels, 5x5 at half work resolution) at or below which a pixel is soft."""
    smoke_min_change: float = 14.0
    """Change of the 5x5 local mean against the background that makes a pixel new."""
    smoke_min_churn: float = 8.0
    """Change of the 5x5 local mean since a second ago that makes a (then and now) smoke-like pixel billowing."""
    background_step: float = 2.0
    """Approximate running median: each sample moves the background at most this many levels towards the frame."""
    background_warmup_step: float = 32.0
    """The n-th update may move it ``max(background_step, background_warmup_step / n)`` levels (fast start)."""
    background_warmup_samples: int = 3
    """No smoke score until the background has absorbed this many samples."""
    background_restart_frac: float = 0.6
    sudden_from_frac: float = 0.01
    sudden_to_frac: float = 0.04
    """A smoke region of at least ``sudden_to_frac`` of the view where the previous scored sample had at most
    ``sudden_from_frac`` is an occluder close to the lens (smoke grows, it does not appear): no smoke score for
    ``occlusion_hold_s``."""
    occlusion_hold_s: float = 10.0
    """More than this share of the view new at once restarts the background (scene or exposure jump)."""
    smoke_cell_min_frac: float = 0.3
    smoke_area_ref_frac: float = 0.05
    """Per-frame smoke evidence ``area + growth`` gives ``1 - exp(-evidence / ref)``: 0.5 at 3.5 % of the view."""
    smoke_growth_weight: float = 1.0
    """Weight of the region's growth over the last ``growth_window_s`` (added to its area)."""
    growth_window_s: float = 4.5
    churn_low: float = 3.0
    """Median local change inside the region at or below this is a static object: weight 0."""
    churn_high: float = 8.0


@dataclass(slots=True)
class _Sample:
    """What is kept of a past sample, and where it lies relative to the newest frame."""

    ts: float
    gray: np.ndarray  # half work resolution, float32
    flame: np.ndarray | None  # work resolution, uint8 0/1
    redness: np.ndarray | None  # work resolution, float32 R - B
    smoke_like: np.ndarray | None  # half work resolution, uint8 0/1
    smoke: np.ndarray | None  # half work resolution, uint8 0/1
    dx: float = 0.0  # whole-pixel shift (half work resolution) that aligns this sample with the newest frame
    dy: float = 0.0

    def aligned(self, img: np.ndarray, scale: int, *, mask: bool) -> np.ndarray:
        if not (self.dx or self.dy):
            return img
        border = cv2.BORDER_CONSTANT if mask else cv2.BORDER_REPLICATE
        return _shift(img, scale * self.dx, scale * self.dy, border=border)


def _ramp(x: float, lo: float, hi: float) -> float:
    return float(min(1.0, max(0.0, (x - lo) / (hi - lo))))


def _blocks(mask: np.ndarray, cell: int) -> np.ndarray:
    """Mean per ``cell`` x ``cell`` block (the image's sides are multiples of ``cell``)."""
    h, w = mask.shape
    return cv2.resize(mask.astype(np.float32), (w // cell, h // cell), interpolation=cv2.INTER_AREA)


def _cells_to_pixels(cells: np.ndarray, cell: int) -> np.ndarray:
    return np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)


def _cells_box(cells: np.ndarray, cell_px: float) -> Box | None:
    """Box ``(x1, y1, x2, y2)`` around the non-zero cells, in pixels of cells of ``cell_px`` (None when none)."""
    ys, xs = np.nonzero(cells)
    if len(xs) == 0:
        return None
    return (xs.min() * cell_px, ys.min() * cell_px, (xs.max() + 1) * cell_px, (ys.max() + 1) * cell_px)


def _shift(img: np.ndarray, dx: float, dy: float, *, border: int) -> np.ndarray:
    """Translate ``img`` by whole pixels (dx, dy); new border pixels are replicated or zero."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_NEAREST, borderMode=border)


def _two_way_change(
    flame: np.ndarray, before: np.ndarray, redness: np.ndarray, redness_before: np.ndarray, cell: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: two-way redness change and union pixel count, each summed over the cell's 3x3 neighbourhood.

    Over the pixels that are flame now or were a second ago. Flames grow here and shrink there at the same time, so
    within a neighbourhood redness both rises and falls; a person walking in front of an orange cone only hides it
    (or only reveals it). The two-way change is twice the smaller of the rise and the fall; a neighbourhood (not a
    cell) because a flame's change spills over cell borders.
    """
    union = flame | before
    delta = (redness - redness_before) * union
    rise = cv2.boxFilter(_blocks(np.maximum(delta, 0.0), cell), -1, (3, 3), normalize=False)
    fall = cv2.boxFilter(_blocks(np.maximum(-delta, 0.0), cell), -1, (3, 3), normalize=False)
    union_cells = cv2.boxFilter(_blocks(union, cell), -1, (3, 3), normalize=False)
    return 2.0 * np.minimum(rise, fall), union_cells


def _downscale(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """``image`` at (w, h), roughly a 4x4 box average: bilinear to twice the size, then 2x2 area.

    OpenCV's area interpolation at a non-integer ratio costs 2-5 ms on a 720p-1080p frame; this costs about 0.5 ms
    and averages enough pixels that a small flame keeps its colour instead of aliasing away.
    """
    twice = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(twice, (w, h), interpolation=cv2.INTER_AREA)


_QUANTILES = np.linspace(0.02, 0.98, 25)
_K3 = np.ones((3, 3), np.uint8)


def _quantiles_u8(values: np.ndarray) -> np.ndarray:
    """Grey-level quantiles of 8-bit-valued samples, from their histogram (a sort costs ten times more)."""
    cdf = np.cumsum(np.bincount(values.astype(np.uint8), minlength=256)) / values.size
    return np.searchsorted(cdf, _QUANTILES).astype(np.float32)


def _match_tones(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``src`` through the monotone tone curve mapping its grey-level quantiles (inside ``mask``) onto ``ref``'s."""
    a, b = src[mask], ref[mask]
    if a.size < 64:
        return src
    qa = _quantiles_u8(a) + np.arange(_QUANTILES.size, dtype=np.float32) * 1e-3  # strictly increasing
    lut = np.interp(np.arange(256, dtype=np.float32), qa, _quantiles_u8(b)).astype(np.float32)
    return lut[np.clip(src, 0, 255).astype(np.uint8)]


class FireSmokeScorer:
    """Per-camera fire and smoke scores from sampled frames (stateful: keep one per camera).

    Args:
        roi: Polygon (x, y) in source-frame pixels to look in; None for the whole frame.
        fire: Compute the fire score (False: always 0, and cheaper).
        smoke: Compute the smoke score (False: always 0, and cheaper).
        tuning: Internal knobs.
    """

    def __init__(
        self,
        roi: Sequence[Point] | None = None,
        *,
        fire: bool = True,
        smoke: bool = True,
        tuning: FireSmokeTuning | None = None,
    ) -> None:
        self.roi = [(float(x), float(y)) for x, y in roi] if roi is not None else None
        self.do_fire = fire
        self.do_smoke = smoke
        self.t = tuning or FireSmokeTuning()
        self._src_shape: tuple[int, int] | None = None
        self._work_size = (0, 0)  # (w, h) at the fire resolution; smoke works at half of it
        self._roi_fire = np.zeros((0, 0), np.uint8)
        self._roi_smoke = np.zeros((0, 0), np.uint8)
        self._hann = np.zeros((0, 0), np.float32)
        self._fire_cells: np.ndarray | None = None  # cells that counted as flame in the latest frame
        self._smoke_cells: np.ndarray | None = None  # cells of the smoke region in the latest frame
        self.reset()

    def reset(self) -> None:
        """Forget the past (scene change, stream restart)."""
        self._past: deque[_Sample] = deque()
        self._last: FireSmokeScores | None = None
        self._background: np.ndarray | None = None  # half work resolution, float32
        self._background_age = 0  # samples absorbed since the background was (re)started
        self._fire_hist: deque[tuple[float, float]] = deque()  # (ts, per-frame score)
        self._smoke_hist: deque[tuple[float, float]] = deque()
        self._smoke_area_hist: deque[tuple[float, float]] = deque()  # (ts, smoke area share)
        self._smoke_area_before: float | None = None  # smoke area of the previous scored sample (None: not scored)
        self._occluded_until = -math.inf  # no smoke score before this (a sudden occluder was seen)

    def _setup(self, h: int, w: int) -> None:
        """Work sizes (multiples of two cells, so both resolutions tile exactly) and the ROI masks."""
        unit = 2 * self.t.cell_px
        ww = max(unit, min(self.t.work_width_px, w) // unit * unit)
        wh = max(unit, round(ww * h / w / unit) * unit)
        self._src_shape, self._work_size = (h, w), (ww, wh)
        if self.roi is not None:
            poly = np.round(np.asarray(self.roi, dtype=np.float64) * [ww / w, wh / h]).astype(np.int32)
            self._roi_fire = np.zeros((wh, ww), np.uint8)
            cv2.fillPoly(self._roi_fire, [poly], 1)
            self._roi_smoke = cv2.resize(self._roi_fire, (ww // 2, wh // 2), interpolation=cv2.INTER_NEAREST)
        else:
            self._roi_fire = np.ones((wh, ww), np.uint8)
            self._roi_smoke = np.ones((wh // 2, ww // 2), np.uint8)
        self._hann = cv2.createHanningWindow((ww // 2, wh // 2), cv2.CV_32F)
        self.reset()

    # -- per frame ----------------------------------------------------------------------------------------------

    def score(self, ts: float, image: np.ndarray) -> FireSmokeScores:
        """Scores of one sampled frame (BGR uint8, or single-channel grayscale) captured at ``ts`` (s)."""
        t = self.t
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
            raise ValueError(f"expected an 8-bit BGR or grayscale frame, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if self._src_shape != (h, w):
            self._setup(h, w)
        if self._past and ts <= self._past[-1].ts and self._last is not None:
            return self._last  # a repeated or late frame: nothing new to learn from it
        if self._past and ts - self._past[-1].ts > t.max_gap_s:
            self.reset()

        ww, wh = self._work_size
        self._fire_cells = self._smoke_cells = None
        small = _downscale(image, ww, wh)
        colour = small.ndim == 3
        half = cv2.resize(small, (ww // 2, wh // 2), interpolation=cv2.INTER_AREA)
        gray = (cv2.cvtColor(half, cv2.COLOR_BGR2GRAY) if colour else half).astype(np.float32)

        dx, dy = self._global_shift(gray)
        for past in self._past:
            past.dx, past.dy = past.dx + dx, past.dy + dy
        ref = self._reference(ts)
        sample = _Sample(ts=ts, gray=gray, flame=None, redness=None, smoke_like=None, smoke=None)

        fire_area = flicker = 0.0
        if self.do_fire and colour:
            fire_area, flicker = self._fire(small, ref, sample)
        fire_inst = 1.0 - math.exp(-fire_area / t.fire_area_ref_frac)

        smoke_area = churn = 0.0
        if self.do_smoke:
            smoke_area, churn = self._smoke(half if colour else None, gray, dx, dy, ref, sample)
        # Growth over the last few seconds counts on top of the area, so a young plume that spreads is flagged
        # before it is large. It is a bonus, not a condition: a plume already there (camera restarted mid-incident)
        # or drifting at a steady size is still smoke.
        hist = self._smoke_area_hist
        while hist and hist[0][0] < ts - t.growth_window_s:
            hist.popleft()
        growth = max(0.0, smoke_area - min(a for _, a in hist)) if hist else 0.0
        hist.append((ts, smoke_area))
        evidence = smoke_area + t.smoke_growth_weight * growth
        smoke_inst = (1.0 - math.exp(-evidence / t.smoke_area_ref_frac)) * _ramp(churn, t.churn_low, t.churn_high)

        self._past.append(sample)
        self._last = FireSmokeScores(
            fire=self._smoothed(self._fire_hist, ts, fire_inst),
            smoke=self._smoothed(self._smoke_hist, ts, smoke_inst),
            fire_area_frac=fire_area,
            smoke_area_frac=smoke_area,
            fire_flicker=flicker,
            smoke_churn=churn,
            # Cells to source pixels: fire cells are at the work resolution, smoke cells at half of it.
            fire_box=_cells_box(self._fire_cells, t.cell_px * w / ww) if self._fire_cells is not None else None,
            smoke_box=_cells_box(self._smoke_cells, 2 * t.cell_px * w / ww) if self._smoke_cells is not None else None,
        )
        return self._last

    def _global_shift(self, gray: np.ndarray) -> tuple[float, float]:
        """Whole-pixel camera shift since the previous sample (0, 0 when none or untrusted); restarts on a jump."""
        if not self._past:
            return 0.0, 0.0
        t = self.t
        # Copies: given a window, OpenCV's phaseCorrelate multiplies its inputs by it in place.
        (dx, dy), response = cv2.phaseCorrelate(self._past[-1].gray.copy(), gray.copy(), self._hann)
        if response < t.min_shift_response or math.hypot(dx, dy) < t.min_shift_px:
            return 0.0, 0.0
        h, w = gray.shape
        if math.hypot(dx / w, dy / h) > t.max_shift_frac:
            self.reset()  # a confident, large jump: the camera now shows another view
            return 0.0, 0.0
        # Whole pixels: repeated sub-pixel warps would blur the background, and half a pixel at this resolution is
        # below what the cell-level comparisons notice.
        return float(round(dx)), float(round(dy))

    def _reference(self, ts: float) -> _Sample | None:
        """The newest past sample at least ``compare_gap_s`` old; older ones are dropped (never needed again)."""
        ref = None
        for past in self._past:
            if past.ts <= ts - self.t.compare_gap_s:
                ref = past
        while ref is not None and self._past[0] is not ref:
            self._past.popleft()
        return ref

    def _smoothed(self, hist: deque[tuple[float, float]], ts: float, value: float) -> float:
        """Median of the per-frame scores of the last ``history_s`` seconds, ``value`` at ``ts`` included."""
        hist.append((ts, value))
        while hist[0][0] <= ts - self.t.history_s:
            hist.popleft()
        return float(np.median([v for _, v in hist]))

    # -- fire -------------------------------------------------------------------------------------------------

    def _fire(self, small: np.ndarray, ref: _Sample | None, sample: _Sample) -> tuple[float, float]:
        """(flicker-weighted persistent flame area share, flicker) at the work resolution."""
        t = self.t
        b, g, r = small[..., 0], small[..., 1], small[..., 2]
        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
        redness_u8 = cv2.subtract(r, b)  # R - B: high in flames, near 0 in smoke, sky and grey walls
        orange = (r >= t.flame_min_red) & (hsv[..., 1] >= t.flame_min_saturation) & (hsv[..., 0] <= t.flame_max_hue)
        pale = (r >= t.flame_pale_min_red) & (redness_u8 >= t.flame_pale_min_redness)
        flame = ((orange | pale) & (r >= g) & (g > b)).astype(np.uint8) & self._roi_fire
        redness = redness_u8.astype(np.float32)
        sample.flame, sample.redness = flame, redness
        if ref is None or ref.flame is None or ref.redness is None:
            return 0.0, 0.0
        before = ref.aligned(ref.flame, 2, mask=True)
        redness_before = ref.aligned(ref.redness, 2, mask=False)

        c = t.cell_px
        now_cells = _blocks(flame, c)
        near_before = cv2.dilate((_blocks(before, c) >= t.flame_cell_min_frac).astype(np.uint8), _K3)
        persistent = ((now_cells >= t.flame_cell_min_frac) & near_before.astype(bool)).astype(np.uint8)
        if not persistent.any():
            return 0.0, 0.0
        two_way, union_cells = _two_way_change(flame, before, redness, redness_before, c)
        # A small flame-coloured thing moving slowly (an orange vest, a red car creeping in a queue) also gains
        # redness at one edge and loses it at the other within a neighbourhood. Each region of flame cells is
        # therefore compared again after its own best translation (phase correlation of its redness): when that
        # removes most of the change the region is a rigid mover and the aligned flicker counts. Flames keep most
        # of theirs (a translation only explains the part due to residual camera motion).
        _, labels, stats, _ = cv2.connectedComponentsWithStats(persistent, connectivity=8)
        for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA])[: t.rigid_check_regions] + 1:
            shift = self._local_shift(stats[i], redness, redness_before)
            if shift is None:
                continue
            moved = _shift(before, *shift, border=cv2.BORDER_CONSTANT)
            moved_redness = _shift(redness_before, *shift, border=cv2.BORDER_REPLICATE)
            two_way_moved, union_moved = _two_way_change(flame, moved, redness, moved_redness, c)
            region = labels == i
            flicker_zero = two_way[region].sum() / max(union_cells[region].sum(), 1e-6)
            flicker_moved = two_way_moved[region].sum() / max(union_moved[region].sum(), 1e-6)
            if flicker_moved < t.rigid_max_flicker_ratio * flicker_zero:
                two_way[region], union_cells[region] = two_way_moved[region], union_moved[region]
        flicker_cells = two_way / np.maximum(union_cells, 1e-6)
        weight = np.clip((flicker_cells - t.flicker_low) / (t.flicker_high - t.flicker_low), 0.0, 1.0) * persistent
        unexplained = self._motion_unexplained(sample, ref, persistent, flame, before, redness, redness_before)
        if unexplained is None:
            return 0.0, 0.0  # the view changed: nothing here can be compared with a second ago
        weight *= unexplained
        self._fire_cells = weight > 0
        area = float((now_cells * weight).sum() * c * c / max(int(self._roi_fire.sum()), 1))
        sel = persistent.astype(bool)
        flicker = float(two_way[sel].sum() / max(union_cells[sel].sum(), 1e-6))
        return area, flicker

    def _motion_unexplained(
        self,
        sample: _Sample,
        ref: _Sample,
        persistent: np.ndarray,
        flame: np.ndarray,
        flame_before: np.ndarray,
        redness: np.ndarray,
        redness_before: np.ndarray,
    ) -> np.ndarray | None:
        """Per cell, how far motion fails to explain its region's redness change (0..1); None when the view changed.

        Dense optical flow (Farneback, half work resolution) from this frame to the sample a second ago, which is
        already aligned by the global camera shift; the old redness is warped along it and compared again, and each
        region of persistent flame cells is judged by the median of its cells. What moved or deformed since (a
        talking face, a hand, a box carried past, a lamp seen from a moving camera) leaves little change; flames,
        decorrelated within a tenth of a second, leave most of it. Only run when there are persistent flame cells,
        so most cameras never pay for it (about 3 ms at 160 x 90).
        """
        t, c = self.t, self.t.cell_px
        before_gray = ref.aligned(ref.gray, 1, mask=False)
        # The cut test looks at the rest of the view: flames themselves decorrelate, and may fill most of it.
        hh, ww = redness.shape
        flame_any = cv2.dilate(np.maximum(flame, flame_before), _K3)
        rest = cv2.resize(flame_any, (ww // 2, hh // 2), interpolation=cv2.INTER_AREA) == 0
        if rest.mean() >= 0.25:
            # Against the sample both as aligned by the global shift and as it was: the shift estimate can be thrown
            # by what moves in view, and a cut decorrelates both.
            now_rest = sample.gray[rest]
            cor = max(
                float(np.corrcoef(now_rest, before_gray[rest])[0, 1]),
                float(np.corrcoef(now_rest, ref.gray[rest])[0, 1]),
            )
            change = min(
                float(np.median(np.abs(now_rest - before_gray[rest]))),
                float(np.median(np.abs(now_rest - ref.gray[rest]))),
            )
            # Both: a flat, noisy view decorrelates without changing (nan, for a flat one, compares False).
            if cor < t.cut_max_correlation and change >= t.cut_min_change:
                return None
        now = np.clip(sample.gray, 0, 255).astype(np.uint8)
        before = np.clip(before_gray, 0, 255).astype(np.uint8)
        flow = cv2.calcOpticalFlowFarneback(now, before, None, 0.5, 3, 9, 3, 5, 1.1, 0)
        big = cv2.resize(flow, (ww, hh), interpolation=cv2.INTER_LINEAR) * 2.0
        bx, by = np.meshgrid(np.arange(ww, dtype=np.float32), np.arange(hh, dtype=np.float32))
        warped = cv2.remap(
            redness_before, bx + big[..., 0], by + big[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        res_cells = _blocks(np.abs(redness - warped) * flame, c) / np.maximum(_blocks(flame, c), 1e-6)
        out = np.zeros(persistent.shape, np.float32)
        n, labels = cv2.connectedComponents(persistent, connectivity=8)
        for i in range(1, n):
            region = labels == i
            out[region] = _ramp(float(np.median(res_cells[region])), t.flow_residual_low, t.flow_residual_high)
        return out

    def _local_shift(
        self, stat: np.ndarray, redness: np.ndarray, redness_before: np.ndarray
    ) -> tuple[float, float] | None:
        """Whole-pixel translation of one region's redness since a second ago, when one clearly explains it."""
        t, c = self.t, self.t.cell_px
        h, w = redness.shape
        margin = t.rigid_search_cells * c
        x0, y0 = max(0, stat[cv2.CC_STAT_LEFT] * c - margin), max(0, stat[cv2.CC_STAT_TOP] * c - margin)
        x1 = min(w, (stat[cv2.CC_STAT_LEFT] + stat[cv2.CC_STAT_WIDTH]) * c + margin)
        y1 = min(h, (stat[cv2.CC_STAT_TOP] + stat[cv2.CC_STAT_HEIGHT]) * c + margin)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        window = cv2.createHanningWindow((x1 - x0, y1 - y0), cv2.CV_32F)
        # Copies: given a window, phaseCorrelate multiplies its inputs by it in place.
        (sx, sy), response = cv2.phaseCorrelate(
            redness_before[y0:y1, x0:x1].copy(), redness[y0:y1, x0:x1].copy(), window
        )
        if response < t.rigid_min_response or math.hypot(sx, sy) < 1.0 or max(abs(sx), abs(sy)) > margin:
            return None
        return float(round(sx)), float(round(sy))

    # -- smoke ------------------------------------------------------------------------------------------------

    def _smoke(
        self, half: np.ndarray | None, gray: np.ndarray, dx: float, dy: float, ref: _Sample | None, sample: _Sample
    ) -> tuple[float, float]:
        """(largest smoke region's area share, its churn) at half the work resolution."""
        t = self.t
        inside = self._roi_smoke.astype(bool)
        if not inside.any():
            return 0.0, 0.0
        mean = cv2.blur(gray, (5, 5))
        std = np.sqrt(np.maximum(cv2.blur(gray * gray, (5, 5)) - mean * mean, 0.0))
        if half is not None:
            hsv = cv2.cvtColor(half, cv2.COLOR_BGR2HSV)
            sat, val = hsv[..., 1], hsv[..., 2]
            grey = (sat <= t.smoke_max_saturation) & (val >= t.smoke_min_value) & (val <= t.smoke_max_value)
        else:
            grey = (gray >= t.smoke_min_value) & (gray <= t.smoke_max_value)
        smoke_like = grey & (std <= t.smoke_max_texture) & inside
        sample.smoke_like = smoke_like.astype(np.uint8)
        sample.smoke = np.zeros(gray.shape, np.uint8)

        if self._background is None:
            self._background, self._background_age, self._smoke_area_before = gray.copy(), 1, None
            return 0.0, 0.0
        bg = _shift(self._background, dx, dy, border=cv2.BORDER_REPLICATE) if dx or dy else self._background
        # Exposure compensation, so that auto-exposure or a cloud over the sun does not make every grey pixel new:
        # against the background a gain (median ratio of frame to background, robust to the minority of pixels
        # that truly changed). Differences are of 5x5 local means: compression speckle on a plain floor cancels
        # out, smoke's changes, coherent over many pixels, do not.
        lit = inside & (bg > 16.0)
        lit[1::2, :] = False  # every other row is plenty for a median
        gain = float(np.clip(np.median(gray[lit] / bg[lit]), 0.5, 2.0)) if lit.sum() >= 16 else 1.0
        novel = np.abs(mean - cv2.blur(bg, (5, 5)) * gain) >= t.smoke_min_change
        if novel[inside].mean() > t.background_restart_frac:
            # Most of the view changed at once: the background is stale (scene change, exposure reset).
            self._background, self._background_age, self._smoke_area_before = gray.copy(), 1, None
            return 0.0, 0.0
        # Approximate running median; large steps at first, so that a background started on an odd frame (auto-
        # exposure settling, a person standing in it) recovers within seconds, then small ones, so that people
        # passing through barely move it and a lasting change is absorbed in tens of seconds.
        step = max(t.background_step, t.background_warmup_step / self._background_age)
        self._background = bg + np.clip(gray - bg, -step, step)
        self._background_age += 1
        if ref is None or ref.smoke_like is None or ref.smoke is None:
            return 0.0, 0.0

        # Against the sample a second ago (when smoke cannot have changed the whole view) the full tone curve is
        # matched, since cameras' exposure changes are not linear.
        gray_before = _match_tones(ref.aligned(ref.gray, 1, mask=False), gray, inside)
        change = np.abs(mean - cv2.blur(gray_before, (5, 5)))
        billowing = ref.aligned(ref.smoke_like, 1, mask=True).astype(bool) & (change >= t.smoke_min_churn)
        smoke = (smoke_like & (novel | billowing)).astype(np.uint8)
        sample.smoke = smoke
        if self._background_age <= t.background_warmup_samples:
            return 0.0, 0.0

        c = t.cell_px
        now_cells = _blocks(smoke, c)
        before_cells = _blocks(ref.aligned(ref.smoke, 1, mask=True), c)
        near_before = cv2.dilate((before_cells >= t.smoke_cell_min_frac).astype(np.uint8), _K3)
        persistent = ((now_cells >= t.smoke_cell_min_frac) & near_before.astype(bool)).astype(np.uint8)
        n, labels = cv2.connectedComponents(persistent, connectivity=8)
        if n <= 1:
            self._smoke_area_before = 0.0
            return 0.0, 0.0
        # The largest region by smoke pixels: smoke is one sizeable blob, people and cars leave scattered specks.
        sums = np.bincount(labels.ravel(), weights=now_cells.ravel(), minlength=n)
        sums[0] = 0.0
        best = int(np.argmax(sums))
        area = float(sums[best] * c * c / max(int(inside.sum()), 1))
        before, self._smoke_area_before = self._smoke_area_before, area
        if before is not None and before <= t.sudden_from_frac and area >= t.sudden_to_frac:
            # A large soft region out of nothing within a second: something close to the lens (a hand, an insect,
            # a leaf), not smoke, which grows. Nothing counts as smoke until the hold has passed.
            self._occluded_until = sample.ts + t.occlusion_hold_s
        if sample.ts < self._occluded_until:
            return 0.0, 0.0
        self._smoke_cells = labels == best
        region = _cells_to_pixels(labels == best, c) & smoke.astype(bool)
        churn = float(np.median(change[region])) if region.any() else 0.0
        return area, churn


@dataclass(frozen=True, slots=True)
class LearnedScores:
    """What a learned fire/smoke detector saw in one frame.

    Attributes:
        ts: Capture time of the frame the detections are of.
        fire: Highest score of the counted fire detections (0 when none).
        smoke: Highest score of the counted smoke detections (0 when none).
        fire_label: Class of the best fire detection (None when none).
        smoke_label: Class of the best smoke detection (None when none).
        fire_box: Box of the best fire detection, frame pixels (None when none).
        smoke_box: Box of the best smoke detection (None when none).
    """

    ts: float
    fire: float = 0.0
    smoke: float = 0.0
    fire_label: str | None = None
    smoke_label: str | None = None
    fire_box: Box | None = None
    smoke_box: Box | None = None


def learned_scores(
    ts: float, detections: Iterable[Detection], cfg: LearnedFireSmokeConfig, roi: Sequence[Point] | None = None
) -> LearnedScores:
    """Fire and smoke scores from a detector's detections (boxes in frame pixels).

    A detection counts when its label is one of ``cfg.fire_labels`` (or ``smoke_labels``), its score is at least
    ``cfg.min_score`` and, with an ``roi``, its box centre lies inside it.
    """
    fire_labels, smoke_labels = set(cfg.fire_labels), set(cfg.smoke_labels)
    dets = [d for d in detections if d.score >= cfg.min_score and (d.label in fire_labels or d.label in smoke_labels)]
    if dets and roi is not None:
        centres = np.asarray([((d.box[0] + d.box[2]) / 2.0, (d.box[1] + d.box[3]) / 2.0) for d in dets])
        dets = [d for d, inside in zip(dets, points_in_polygon(centres, roi), strict=True) if inside]
    fire = max((d for d in dets if d.label in fire_labels), key=lambda d: d.score, default=None)
    smoke = max((d for d in dets if d.label in smoke_labels), key=lambda d: d.score, default=None)
    return LearnedScores(
        ts,
        fire=float(fire.score) if fire is not None else 0.0,
        smoke=float(smoke.score) if smoke is not None else 0.0,
        fire_label=fire.label if fire is not None else None,
        smoke_label=smoke.label if smoke is not None else None,
        fire_box=fire.box if fire is not None else None,
        smoke_box=smoke.box if smoke is not None else None,
    )


@dataclass(frozen=True, slots=True)
class _Cue:
    """One score of one frame, what produced it (the event's detail) and where (the alarm frame's box)."""

    score: float
    detail: str
    box: Box | None


class FireSmokeRule:
    """Fire and smoke events of one camera: a :class:`~actors.analytics.registry.FrameRule` and, unless the
    source is classic, a :class:`~actors.analytics.registry.DetectionRule` too (one instance in both lists).

    Two event life cycles, ``fire`` (severity critical) and ``smoke`` (warning), unit ``score``: an event opens when
    the score has stayed at or over its threshold for ``min_duration_s`` and closes after ``cooldown_s`` under it.
    By ``cfg.source``:

    * ``classic``: feed it every sampled frame (:meth:`update_frame`). It is designed for 1-2 fps (see the module
      docstring); at 0.5 fps fire still works but smoke loses margin (people moving 2 s apart start to look like
      churn on a plain floor). :meth:`update` does nothing.
    * ``learned``: feed it the detector's detections of each analysed frame (:meth:`update`), which drive the
      events; :meth:`update_frame` does nothing (no classic scoring).
    * ``fused``: both. :meth:`update` only keeps the latest learned scores; :meth:`update_frame` drives the events
      with, per score, the higher of the classic one and the learned one when that is at most ``max_age_s`` older
      than the frame. Detections of a frame arrive after it, so a learned score first counts on the next frame.

    The event ``detail`` names the source of the score that drove the frame ("learned detector: fire 0.83" or
    the classic description).
    """

    def __init__(self, camera_id: str, cfg: FireSmokeConfig) -> None:
        self.camera_id = camera_id
        self.cfg = cfg
        self.source = cfg.source
        if cfg.source != "classic" and cfg.learned is None:
            raise ValueError(f"fire_smoke.source {cfg.source!r} without learned settings")
        self.learned_cfg = cfg.learned
        # The classic scorer is not even built for a learned-only camera: it would cost memory for nothing.
        self.scorer = FireSmokeScorer(cfg.roi, fire=cfg.fire, smoke=cfg.smoke) if cfg.source != "learned" else None
        self.fire_events = EventLifecycle(camera_id, "fire", None, cfg.lifecycle, unit="score")
        self.smoke_events = EventLifecycle(camera_id, "smoke", None, cfg.lifecycle, unit="score")
        self.last_scores: FireSmokeScores | None = None
        self.last_learned: LearnedScores | None = None
        self._fire_box: Box | None = None  # the latest region seen, for the alarm frame
        self._smoke_box: Box | None = None

    @property
    def uses_frames(self) -> bool:
        """Whether it must be fed decoded frames (classic and fused)."""
        return self.source != "learned"

    @property
    def uses_detections(self) -> bool:
        """Whether it must be fed the detector's output (learned and fused)."""
        return self.source != "classic"

    @property
    def active_event_ids(self) -> dict[str, str | None]:
        return {"fire": self.fire_events.active_event_id, "smoke": self.smoke_events.active_event_id}

    def update_frame(self, ts: float, image: np.ndarray) -> list[EventTransition]:
        if self.scorer is None:
            return []  # learned: the detections drive the events
        s = self.scorer.score(ts, image)
        self.last_scores = s
        fire = _Cue(s.fire, f"flickering flame over {s.fire_area_frac:.2%} of the view", s.fire_box)
        smoke = _Cue(s.smoke, f"smoke region over {s.smoke_area_frac:.1%} of the view", s.smoke_box)
        learned = self.last_learned
        if (
            self.source == "fused"
            and learned is not None
            and self.learned_cfg is not None
            and ts - learned.ts <= self.learned_cfg.max_age_s
        ):
            if learned.fire > s.fire:
                fire = _Cue(learned.fire, _learned_detail(learned.fire_label, learned.fire), learned.fire_box)
            if learned.smoke > s.smoke:
                smoke = _Cue(learned.smoke, _learned_detail(learned.smoke_label, learned.smoke), learned.smoke_box)
        return self._feed(ts, fire, smoke)

    def update(self, ts: float, detections: Iterable[Detection]) -> list[EventTransition]:
        """The detector's detections of the frame captured at ``ts`` (boxes in frame pixels)."""
        if self.learned_cfg is None:
            return []  # classic: detections are not this rule's input
        if self.last_learned is not None and ts < self.last_learned.ts:
            return []  # a late result: a newer one is already in
        s = learned_scores(ts, detections, self.learned_cfg, self.cfg.roi)
        self.last_learned = s
        if self.source != "learned":
            return []  # fused: the next sampled frame combines it with the classic score
        return self._feed(
            ts,
            _Cue(s.fire, _learned_detail(s.fire_label, s.fire), s.fire_box),
            _Cue(s.smoke, _learned_detail(s.smoke_label, s.smoke), s.smoke_box),
        )

    def _feed(self, ts: float, fire: _Cue, smoke: _Cue) -> list[EventTransition]:
        out: list[EventTransition] = []
        # The smoothed score can stay over the threshold for a frame where this frame's region is empty (a flame
        # hidden for a moment): the alarm frame then shows the last region seen.
        if fire.box is not None or fire.score < self.cfg.fire_score_threshold:
            self._fire_box = fire.box
        if smoke.box is not None or smoke.score < self.cfg.smoke_score_threshold:
            self._smoke_box = smoke.box
        if self.cfg.fire:
            thr = self.cfg.fire_score_threshold
            out += self.fire_events.update(
                ts,
                fire.score >= thr,
                value=round(fire.score, 3),
                severity="critical",
                threshold=thr,
                detail=fire.detail,
                box=self._fire_box,
            )
        if self.cfg.smoke:
            thr = self.cfg.smoke_score_threshold
            out += self.smoke_events.update(
                ts,
                smoke.score >= thr,
                value=round(smoke.score, 3),
                severity="warning",
                threshold=thr,
                detail=smoke.detail,
                box=self._smoke_box,
            )
        return out

    def close(self, ts: float) -> list[EventTransition]:
        """Close open events and forget the past (idempotent: a rule in both of a camera's lists is closed twice)."""
        if self.scorer is not None:
            self.scorer.reset()
        self.last_learned = None
        self._fire_box = self._smoke_box = None
        return self.fire_events.close(ts) + self.smoke_events.close(ts)


def _learned_detail(label: str | None, score: float) -> str:
    return f"learned detector: {label} {score:.2f}" if label is not None else "learned detector: nothing"
