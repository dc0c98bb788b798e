"""A small multi-object tracker for low analytics frame rates (1-5 fps): IoU first, then distance.

Rules such as loitering need to know that the person in the zone now is the one who was
there a minute ago. Detections reach the analytics at 1-2 fps (sometimes 5), with missed
detections and jittered boxes, so the classic "match by box overlap" tracker (SORT without
the Kalman filter) is not enough on its own: at 1 fps a walking person moves about one body
height between frames and the overlap of consecutive boxes is often zero. Association is
therefore done in two greedy stages, each against the better of the track's *predicted* box
(last box moved by a smoothed velocity) and its last box (people stop and start):

1. IoU >= ``iou_threshold`` (highest first): what works at 5 fps and for people standing.
2. For what is left, centre distance to the predicted (or last) centre, gated at
   ``max_center_dist_frac`` of the track's box diagonal per second since the track was last
   seen (nearest first), with a box-height ratio check so a distant small box does not take
   over a near large one.

Greedy matching (rather than Hungarian) keeps the code free of SciPy, which the project does
not install; with the handful of objects around a camera zone the two rarely disagree. Tracks are per class
(a person never continues a car's track), ids are increasing integers that are never reused,
and a track dies once unseen for more than ``max_age_s`` -- or at its first miss, while it
has been seen only once (then it was probably a false positive).

Known limit: two people of the same class who cross *and* change direction while hidden from
the detector may swap ids (no appearance model); the velocity prediction keeps the common
case -- two people walking past each other -- correct.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from contracts.detector import Detection
from contracts.events import Box


@dataclass(frozen=True, slots=True)
class Track:
    """A snapshot of one tracked object after a frame.

    Attributes:
        track_id: Stable id (per tracker), increasing, never reused.
        label: Class label of the detections it follows.
        box: Last observed box ``(x1, y1, x2, y2)`` in frame pixels (not a prediction).
        first_seen_ts: Capture time (epoch s) of its first detection.
        last_seen_ts: Capture time of its latest detection; older than the frame's ``ts``
            when the object was missed in that frame (the track is "coasting").
        hits: Number of frames it was detected in (1 for a brand-new track, which may be a
            false positive).
        velocity_px_s: Smoothed velocity of the box centre, pixels per second (x, y).
    """

    track_id: int
    label: str
    box: Box
    first_seen_ts: float
    last_seen_ts: float
    hits: int
    velocity_px_s: tuple[float, float] = (0.0, 0.0)

    @property
    def foot(self) -> tuple[float, float]:
        """Bottom centre of the last box: where the object stands on the ground."""
        return (self.box[0] + self.box[2]) / 2.0, self.box[3]

    def seen_at(self, ts: float) -> bool:
        """Whether the object was detected in the frame captured at ``ts``."""
        return self.last_seen_ts == ts

    def predicted_foot(self, ts: float) -> tuple[float, float]:
        """Where the foot point would be at ``ts`` at constant velocity (the last one if seen then)."""
        dt = max(ts - self.last_seen_ts, 0.0)
        x, y = self.foot
        return x + self.velocity_px_s[0] * dt, y + self.velocity_px_s[1] * dt


class _TrackState:
    """Mutable per-track state kept between frames (never leaves the tracker)."""

    __slots__ = ("box", "first_seen_ts", "hits", "label", "last_seen_ts", "track_id", "vx_px_s", "vy_px_s")

    def __init__(self, track_id: int, det: Detection, ts: float) -> None:
        self.track_id = track_id
        self.label = det.label
        self.box: Box = tuple(float(v) for v in det.box)  # type: ignore[assignment]
        self.first_seen_ts = ts
        self.last_seen_ts = ts
        self.hits = 1
        self.vx_px_s = 0.0
        self.vy_px_s = 0.0

    def predicted_box(self, ts: float, max_dt_s: float) -> Box:
        dt = min(max(ts - self.last_seen_ts, 0.0), max_dt_s)
        dx, dy = self.vx_px_s * dt, self.vy_px_s * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)

    def observe(self, det: Detection, ts: float, velocity_smoothing: float) -> None:
        dt = ts - self.last_seen_ts
        if dt > 0:
            (cx0, cy0), (cx1, cy1) = _center(self.box), _center(det.box)
            vx, vy = (cx1 - cx0) / dt, (cy1 - cy0) / dt
            if self.hits == 1:  # first displacement: nothing to smooth with
                self.vx_px_s, self.vy_px_s = vx, vy
            else:
                a = velocity_smoothing
                self.vx_px_s = a * self.vx_px_s + (1 - a) * vx
                self.vy_px_s = a * self.vy_px_s + (1 - a) * vy
        self.box = tuple(float(v) for v in det.box)  # type: ignore[assignment]
        self.last_seen_ts = ts
        self.hits += 1

    def snapshot(self) -> Track:
        return Track(
            self.track_id,
            self.label,
            self.box,
            self.first_seen_ts,
            self.last_seen_ts,
            self.hits,
            (self.vx_px_s, self.vy_px_s),
        )


def _center(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def _centers(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) as ``x1, y1, x2, y2``; shape (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _greedy(score: np.ndarray, ok: np.ndarray, *, highest_first: bool) -> list[tuple[int, int]]:
    """Pairs (row, col) picked best-first among ``ok`` entries, each row and column used once."""
    rows, cols = np.nonzero(ok)
    if len(rows) == 0:
        return []
    vals = score[rows, cols]
    order = np.argsort(-vals if highest_first else vals, kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


class IouTracker:
    """Greedy IoU + centre-distance tracker with stable integer ids (see the module docstring).

    Args:
        max_age_s: A track unseen for longer than this dies (its id is not reused). This is
            the gap of missed detections the tracker bridges: at 1 fps, 3.0 s tolerates two
            consecutive misses.
        iou_threshold: Least IoU between the predicted box and a detection for stage 1.
        max_center_dist_frac: Stage 2 gate: how far (as a fraction of the track's box
            diagonal) the detection's centre may be from the predicted centre, per second
            since the track was last seen. The elapsed time counts as at least 0.5 s (so 5 fps
            gates stay usable with jitter) and at most 2 s (so a long gap does not open the
            gate to a false positive across the image: after a gap the velocity prediction,
            not the gate, has to find a walker). 1.0 lets a person walking at ~1.5 m/s be matched on the
            first step at 1 fps, before their velocity is known.
        max_height_ratio: Stage 2 only matches boxes whose heights differ by less than this
            factor.
        velocity_smoothing: Weight of the previous velocity in the exponential smoothing of
            the centre velocity (0: latest displacement only).
    """

    def __init__(
        self,
        max_age_s: float = 3.0,
        iou_threshold: float = 0.3,
        max_center_dist_frac: float = 1.0,
        *,
        max_height_ratio: float = 2.0,
        velocity_smoothing: float = 0.5,
    ) -> None:
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        if not 0 < iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_center_dist_frac < 0:
            raise ValueError(f"max_center_dist_frac must be >= 0, got {max_center_dist_frac}")
        if max_height_ratio < 1:
            raise ValueError(f"max_height_ratio must be >= 1, got {max_height_ratio}")
        if not 0 <= velocity_smoothing < 1:
            raise ValueError(f"velocity_smoothing must be in [0, 1), got {velocity_smoothing}")
        self.max_age_s = max_age_s
        self.iou_threshold = iou_threshold
        self.max_center_dist_frac = max_center_dist_frac
        self.max_height_ratio = max_height_ratio
        self.velocity_smoothing = velocity_smoothing
        self._tracks: list[_TrackState] = []
        self._next_id = 1
        self._last_ts = float("-inf")

    @property
    def tracks(self) -> list[Track]:
        """Live tracks after the last accepted frame, by id."""
        return [t.snapshot() for t in self._tracks]

    def update(self, ts: float, detections: Iterable[Detection]) -> list[Track]:
        """Associate one frame's detections; returns every live track, by id.

        Live tracks include those missed in this frame but seen within ``max_age_s``
        (``track.seen_at(ts)`` is false for them), so rules can bridge missed detections.
        A frame older than the last accepted one is ignored and returns ``[]``: late
        results must not move tracks backwards in time.
        """
        if ts < self._last_ts:
            return []
        self._last_ts = ts
        self._tracks = [t for t in self._tracks if ts - t.last_seen_ts <= self.max_age_s]
        dets = list(detections)
        by_label: dict[str, list[int]] = {}
        for i, d in enumerate(dets):
            by_label.setdefault(d.label, []).append(i)
        for label, det_idx in by_label.items():
            tracks = [t for t in self._tracks if t.label == label]
            matched = self._associate(ts, tracks, [dets[i] for i in det_idx])
            taken: set[int] = set()
            for ti, di in matched:
                tracks[ti].observe(dets[det_idx[di]], ts, self.velocity_smoothing)
                taken.add(di)
            for di, i in enumerate(det_idx):
                if di not in taken:
                    self._tracks.append(_TrackState(self._next_id, dets[i], ts))
                    self._next_id += 1
        # A track seen once and missed in the next frame was most likely a false positive: drop
        # it, so it cannot snap onto a real object far away a few seconds later (SORT's
        # tentative tracks). A real object missed on its second frame just gets a new id.
        self._tracks = [t for t in self._tracks if t.hits >= 2 or t.last_seen_ts == ts]
        return self.tracks

    def _associate(self, ts: float, tracks: list[_TrackState], dets: list[Detection]) -> list[tuple[int, int]]:
        """(track index, detection index) pairs for one class."""
        if not tracks or not dets:
            return []
        pred = np.asarray([t.predicted_box(ts, self.max_age_s) for t in tracks], dtype=np.float64)
        last = np.asarray([t.box for t in tracks], dtype=np.float64)
        boxes = np.asarray([d.box for d in dets], dtype=np.float64)
        # Against the predicted box *or* the last one: people stop and start, and a walker who
        # stopped must not lose their track to whatever lies where they would have been.
        iou = np.maximum(iou_matrix(pred, boxes), iou_matrix(last, boxes))
        pairs = _greedy(iou, iou >= self.iou_threshold, highest_first=True)
        free_t = [i for i in range(len(tracks)) if i not in {p[0] for p in pairs}]
        free_d = [j for j in range(len(dets)) if j not in {p[1] for p in pairs}]
        if not free_t or not free_d or self.max_center_dist_frac == 0:
            return pairs
        p, b = pred[free_t], boxes[free_d]
        bc = _centers(b)
        dist = np.minimum(
            np.linalg.norm(_centers(p)[:, None, :] - bc[None, :, :], axis=2),
            np.linalg.norm(_centers(last[free_t])[:, None, :] - bc[None, :, :], axis=2),
        )
        diag = np.hypot(p[:, 2] - p[:, 0], p[:, 3] - p[:, 1])
        dt = np.asarray([min(max(ts - tracks[i].last_seen_ts, 0.5), 2.0) for i in free_t])
        gate = (self.max_center_dist_frac * diag * dt)[:, None]
        hp = np.maximum(p[:, 3] - p[:, 1], 1e-6)[:, None]
        hb = np.maximum(b[:, 3] - b[:, 1], 1e-6)[None, :]
        ratio = np.maximum(hp / hb, hb / hp)
        ok = (dist <= gate) & (ratio < self.max_height_ratio)
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = np.where(gate > 0, dist / gate, math.inf)
        for r, c in _greedy(norm, ok, highest_first=False):
            pairs.append((free_t[r], free_d[c]))
        return pairs
