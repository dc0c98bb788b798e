"""Event-level accuracy of the intrusion and loitering rules on scripted scenes with ground truth.

KISA's intelligent-CCTV certification asks for >= 90 % accuracy per event type, intrusion
and loitering mandatory. Without a labelled video set in the repository, this evaluation
scripts scenes whose ground truth is known exactly and runs the real rules
(:class:`IntrusionRule`, :class:`LoiteringRule`, with their tracker and schedule) on what a
detector would report for them.

The scene: a 1280x720 camera, one zone (a random perspective trapezoid), people whose box
size follows their distance (foot row), walking at 0.6-1.0 body heights per second
(~1-1.7 m/s; runners 1.5-2.2), sampled at the analytics rate (1 fps by default, with a random
phase). Detector-like noise on every frame (``Noise``): box corners jittered uniformly by
``jitter_px``, each object missed with ``miss_rate`` (independently from frame to frame,
or in runs of ``miss_burst_frames`` on average), the farther of two overlapping people
also missed with ``occlusion_miss`` (occlusion), ``fp_per_frame`` false-positive person
boxes anywhere in the lower image (Poisson), and consecutive frames delivered swapped with
``reorder_rate`` (the late one must be ignored).

Scenario kinds, half positives and half hard negatives per type (cycled, so the split is
exact); every parameter below is drawn at random per scenario:

intrusion (lifecycle min_duration 1 or 2 s, cooldown 5 s)
    positives: ``enter_stay`` (walk in, stand 3-12 s, walk out), ``cross_zone`` (walk
    through, at least min_duration + 3 s in the zone), ``run_in`` (run in and stop: 1 fps
    jumps), ``two_intruders`` (two people whose paths cross in the zone),
    ``night_in_schedule`` (enter_stay inside a ``Mon-Fri 22:00-06:00`` Seoul schedule, at
    times after midnight);
    negatives: ``near_edge`` (walk along the outside of an edge, 20-60 px from it: body
    visually over the zone, feet not), ``car_in_zone`` (a car drives in and parks),
    ``off_schedule`` (enter_stay when the schedule is off, including Monday 03:00, which
    belongs to Sunday night's window, not configured), ``corner_clip`` (feet in the zone
    for at most 0.6 s, less than min_duration).
loitering (dwell_s 10-40 s, min_duration 0, cooldown 5 s)
    positives: ``stand`` (1.3-2x dwell_s with sway), ``wander`` (slow random walk inside),
    ``loiter_with_passers`` (stand or wander while 2-3 people cross the zone near them),
    ``night_in_schedule``;
    negatives: ``passer_by`` (1-3 people crossing, fast), ``just_under`` (stays 0.6-0.85x
    dwell_s), ``near_edge_loiter`` (stands 2x dwell_s 20-60 px outside an edge),
    ``car_parked``, ``off_schedule``.

Ground truth is computed from the true foot paths on a 0.1 s grid, not from the scenario
kind: intrusion holds while a person's true foot is in the zone; it is an event if it lasted
at least ``min_duration_s + 2/fps`` (shorter than ``min_duration_s``: a negative; in between:
ambiguous, excluded and counted). A loitering stay of one person of at least ``dwell_s +
2/fps`` is an event over ``[enter + dwell_s, exit]`` (under ``dwell_s``: negative; in between:
ambiguous). Intervals less than ``cooldown_s + 2`` s apart merge (the rule emits one event
for them). Outside the schedule nothing is an event.

Scoring is per event: an opened event is a true positive if its open time falls in a true
interval +- ``tolerance_s`` (2 s) and that interval was not matched yet; every other opened
event is a false positive (a second event for the same interval is a ``duplicate`` and
counts as a false positive too); an interval no event matched is a false negative.

Run: ``.venv/bin/python -m benchmarks.accuracy.eval_tracking [--seeds 5] [--seed-base 1000] [--n-per-type 100]
[--out DIR]``; prints JSON: ``normal`` (10 % misses, +-5 px), ``harsh`` (20 %, +-10 px) and
``harsh_bursty`` (the same misses in runs of 3 frames) at 1 fps, and normal at 2 and 5 fps,
each pooled over the seeds, with the worst seed's precision and recall.

Honesty notes: the rules were debugged on seeds 0-4 of this generator. The failure modes
found -- false positives taking over tracks, passers-by hiding loiterers, id switches -- are
generic, and so are the fixes, with one exception: loitering re-identifies a lost stay only
if its object was slower than 0.5 body heights/s, which falls between this generator's
wanderers (0.15-0.4) and walkers (0.6-1.0); a real loiterer pacing faster than that gets no
re-identification. The default seeds 1000.. were not used while developing. The generator
is still an idealisation; what it does not model:

* appearance: boxes only, so nothing here tests (or uses) re-identification by looks;
* persistent false positives (a sign or a statue detected as a person for minutes): they
  would open intrusion and loitering events like a real person; false positives here are
  single boxes at random places;
* crowds: at most four people at a time; in a dense crowd crossings are frequent and id
  swaps restart dwell times;
* real occlusion geometry, camera shake, lighting, detector score drift: only the
  overlap-based "farther person missed" rule and i.i.d. or run-length misses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from actors.analytics.intrusion import IntrusionRule, LoiteringRule
from actors.analytics.zones import points_in_polygon
from configs.analytics import IntrusionConfig, Lifecycle, LoiteringConfig, ScheduleWindow
from configs.schema import ZoneConfig
from contracts.detector import Detection
from contracts.events import EventPhase

REPO = Path(__file__).resolve().parents[2]

WIDTH_PX, HEIGHT_PX = 1280, 720
TIMEZONE = "Asia/Seoul"
SCHEDULE = [ScheduleWindow(days=[0, 1, 2, 3, 4], start="22:00", end="06:00")]
"""Weeknights: Monday 22:00 .. Saturday 06:00 (the days are the start days)."""
GRID_S = 0.1
TOLERANCE_S = 2.0

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Noise:
    """What the detector does to the truth on each frame."""

    miss_rate: float
    jitter_px: float
    fp_per_frame: float
    occlusion_miss: float
    reorder_rate: float
    miss_burst_frames: float | None = None
    """Mean length of a run of misses of one object (None: misses independent frame to frame)."""

    def miss_probabilities(self) -> tuple[float, float]:
        """P(miss | seen in the previous frame), P(miss | missed in it), for ``miss_rate`` overall."""
        m = self.miss_rate
        if self.miss_burst_frames is None:
            return m, m
        stay = 1.0 - 1.0 / self.miss_burst_frames
        return m * (1.0 - stay) / (1.0 - m), stay


NOISE: dict[str, Noise] = {
    "normal": Noise(miss_rate=0.10, jitter_px=5.0, fp_per_frame=0.05, occlusion_miss=0.5, reorder_rate=0.02),
    "harsh": Noise(miss_rate=0.20, jitter_px=10.0, fp_per_frame=0.10, occlusion_miss=0.7, reorder_rate=0.05),
    # Beyond the brief: real misses come in runs (a person in shadow, behind a pole); here a
    # run lasts 3 frames on average, at the same 20 % overall rate.
    "harsh_bursty": Noise(
        miss_rate=0.20, jitter_px=10.0, fp_per_frame=0.10, occlusion_miss=0.7, reorder_rate=0.05, miss_burst_frames=3.0
    ),
}


def _local_epoch(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(TIMEZONE)).timestamp()


# 2025-06-02 is a Monday. Armed/unarmed start times for the schedule kinds (hand-checked
# against SCHEDULE, independently of the Schedule class under test).
ARMED_STARTS = [_local_epoch(2025, 6, 3, 2, 30), _local_epoch(2025, 6, 7, 3, 0), _local_epoch(2025, 6, 4, 23, 0)]
"""Tue 02:30 (Monday's window), Sat 03:00 (Friday's window), Wed 23:00."""
UNARMED_STARTS = [_local_epoch(2025, 6, 8, 3, 0), _local_epoch(2025, 6, 2, 3, 0), _local_epoch(2025, 6, 4, 14, 0)]
"""Sun 03:00 (Saturday not configured), Mon 03:00 (Sunday not configured), Wed 14:00."""
DAYTIME_START = _local_epoch(2025, 6, 3, 14, 0)


def person_height_px(y_foot: float) -> float:
    """Box height of a person standing at image row ``y_foot`` (a simple perspective)."""
    return 60.0 + 0.2 * y_foot


@dataclass(slots=True)
class Actor:
    """An object with a piecewise-linear foot path ``(t, x, y)``; absent outside its span."""

    label: str
    t: list[float] = field(default_factory=list)
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def start(self, t: float, p: Point) -> Actor:
        self.t, self.x, self.y = [t], [p[0]], [p[1]]
        return self

    @property
    def end_t(self) -> float:
        return self.t[-1]

    @property
    def pos(self) -> Point:
        return self.x[-1], self.y[-1]

    def walk_to(self, p: Point, speed_heights_s: float) -> Actor:
        d = math.dist(self.pos, p)
        speed = speed_heights_s * person_height_px(self.pos[1])
        self.t.append(self.t[-1] + max(d / speed, 1e-3))
        self.x.append(p[0])
        self.y.append(p[1])
        return self

    def stay(
        self, duration_s: float, rng: np.random.Generator, sway_px: float = 6.0, axis: Point | None = None
    ) -> Actor:
        """Stand about where it is, drifting by up to ``sway_px`` (along ``axis`` only, if given)."""
        x0, y0 = self.pos
        t_end = self.t[-1] + duration_s
        while self.t[-1] < t_end - 1e-6:
            step = min(float(rng.uniform(1.0, 3.0)), t_end - self.t[-1])
            if axis is None:
                dx, dy = rng.uniform(-sway_px, sway_px, 2)
            else:
                a = rng.uniform(-sway_px, sway_px)
                dx, dy = a * axis[0], a * axis[1]
            self.t.append(self.t[-1] + step)
            self.x.append(x0 + float(dx))
            self.y.append(y0 + float(dy))
        return self

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Foot x, y and presence at ``times``."""
        present = (times >= self.t[0]) & (times <= self.t[-1])
        return np.interp(times, self.t, self.x), np.interp(times, self.t, self.y), present


@dataclass(slots=True)
class Scenario:
    kind: str
    rule_type: str  # intrusion | loitering
    polygon: list[Point]
    actors: list[Actor]
    t0_epoch: float
    armed: bool
    scheduled: bool
    min_duration_s: float = 1.0
    dwell_s: float = 0.0
    cooldown_s: float = 5.0

    @property
    def duration_s(self) -> float:
        return max(a.end_t for a in self.actors) + 3.0


# ---------------------------------------------------------------- geometry helpers


def random_zone(rng: np.random.Generator) -> list[Point]:
    """A convex perspective trapezoid in the lower part of the image."""
    cx, cy = rng.uniform(380, 900), rng.uniform(400, 560)
    hw, hh = rng.uniform(150, 260), rng.uniform(70, 120)
    k = rng.uniform(0.65, 0.9)
    return [(cx - hw * k, cy - hh), (cx + hw * k, cy - hh), (cx + hw, cy + hh), (cx - hw, cy + hh)]


def dist_to_polygon(p: Point, poly: list[Point]) -> float:
    best = math.inf
    for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1], strict=True):
        dx, dy = x2 - x1, y2 - y1
        u = max(0.0, min(1.0, ((p[0] - x1) * dx + (p[1] - y1) * dy) / (dx * dx + dy * dy)))
        best = min(best, math.dist(p, (x1 + u * dx, y1 + u * dy)))
    return best


def inside(p: Point, poly: list[Point]) -> bool:
    return bool(points_in_polygon(np.asarray([p], dtype=np.float64), poly)[0])


def in_zone_s(a: Actor, poly: list[Point]) -> float:
    """Total time the actor's foot is in the zone."""
    t = np.arange(a.t[0], a.end_t, 0.02)
    x, y, _ = a.at(t)
    return float(points_in_polygon(np.stack([x, y], axis=1), poly).sum() * 0.02)


def point_inside(rng: np.random.Generator, poly: list[Point], margin_px: float = 25.0) -> Point:
    xs, ys = [v[0] for v in poly], [v[1] for v in poly]
    while True:
        p = (float(rng.uniform(min(xs), max(xs))), float(rng.uniform(min(ys), max(ys))))
        if inside(p, poly) and dist_to_polygon(p, poly) >= margin_px:
            return p


def border_point(rng: np.random.Generator, poly: list[Point], side: str | None = None) -> Point:
    """A point just off the left or right image border, at a row near the zone."""
    side = side or str(rng.choice(["left", "right"]))
    ys = [v[1] for v in poly]
    y = float(np.clip(rng.uniform(min(ys) - 120, max(ys) + 120), 260, 700))
    return (-40.0, y) if side == "left" else (WIDTH_PX + 40.0, y)


def opposite(side_point: Point) -> str:
    return "right" if side_point[0] < 0 else "left"


def walk_speed(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.6, 1.0))


def outward_edge(rng: np.random.Generator, poly: list[Point], offset_px: float) -> tuple[Point, Point, Point]:
    """A random edge moved outward by ``offset_px`` and extended 100 px each way; its direction."""
    i = int(rng.integers(len(poly)))
    (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % len(poly)]
    cx, cy = np.mean([v[0] for v in poly]), np.mean([v[1] for v in poly])
    length = math.hypot(x2 - x1, y2 - y1)
    ux, uy = (x2 - x1) / length, (y2 - y1) / length
    nx, ny = -uy, ux
    if (x1 - cx) * nx + (y1 - cy) * ny < 0:
        nx, ny = -nx, -ny
    a = (x1 + nx * offset_px - 100 * ux, y1 + ny * offset_px - 100 * uy)
    b = (x2 + nx * offset_px + 100 * ux, y2 + ny * offset_px + 100 * uy)
    return a, b, (ux, uy)


# ---------------------------------------------------------------- scenario kinds


def _enter_stay(rng: np.random.Generator, poly: list[Point], t0: float, stay_s: float, wander: bool = False) -> Actor:
    start = border_point(rng, poly)
    a = Actor("person").start(t0, start).walk_to(point_inside(rng, poly), walk_speed(rng))
    if wander:
        t_end = a.end_t + stay_s
        while a.end_t < t_end:
            a.walk_to(point_inside(rng, poly), float(rng.uniform(0.15, 0.4)))
            a.stay(float(rng.uniform(1.0, 4.0)), rng)
        a.t[-1] = max(a.t[-2] + 1e-3, min(a.t[-1], t_end))  # end the last pause at t_end
    else:
        a.stay(stay_s, rng)
    return a.walk_to(border_point(rng, poly, opposite(start)), walk_speed(rng))


def _crosser(rng: np.random.Generator, poly: list[Point], t0: float, speed: float, near: Point | None = None) -> Actor:
    start = border_point(rng, poly)
    via = near if near is not None else point_inside(rng, poly)
    if near is not None:
        via = (via[0] + float(rng.uniform(-30, 30)), via[1] + float(rng.uniform(-20, 20)))
    return Actor("person").start(t0, start).walk_to(via, speed).walk_to(border_point(rng, poly, opposite(start)), speed)


def _car(rng: np.random.Generator, poly: list[Point], t0: float, park_s: float) -> Actor:
    start = border_point(rng, poly)
    a = Actor("car").start(t0, start).walk_to(point_inside(rng, poly, 40.0), float(rng.uniform(1.5, 3.0)))
    return a.stay(park_s, rng, sway_px=1.0).walk_to(border_point(rng, poly, opposite(start)), 2.0)


def _near_edge(rng: np.random.Generator, poly: list[Point], t0: float, stand_s: float) -> Actor:
    a_pt, b_pt, axis = outward_edge(rng, poly, float(rng.uniform(20, 60)))
    a = Actor("person").start(t0, a_pt)
    if stand_s > 0:
        mid = ((a_pt[0] + b_pt[0]) / 2, (a_pt[1] + b_pt[1]) / 2)
        a.walk_to(mid, walk_speed(rng)).stay(stand_s, rng, sway_px=6.0, axis=axis)
    return a.walk_to(b_pt, walk_speed(rng))


def _corner_clip(rng: np.random.Generator, poly: list[Point], t0: float) -> Actor:
    """A straight walk whose feet are in the zone for 0.05..0.6 s (rejection sampling)."""
    for _ in range(10_000):
        v = poly[int(rng.integers(len(poly)))]
        ang = float(rng.uniform(0, math.pi))
        off = float(rng.uniform(-40, 40))
        p = (v[0] - off * math.sin(ang), v[1] + off * math.cos(ang))
        d = (math.cos(ang) * 400, math.sin(ang) * 400)
        a = Actor("person").start(t0, (p[0] - d[0], p[1] - d[1])).walk_to((p[0] + d[0], p[1] + d[1]), walk_speed(rng))
        if 0.05 <= in_zone_s(a, poly) <= 0.6:
            return a
    raise RuntimeError("no corner clip found")


def _start_time(rng: np.random.Generator, kind: str) -> tuple[float, bool, bool]:
    """(epoch of t=0, armed, has a schedule)."""
    jitter = float(rng.uniform(0, 600))
    if kind == "night_in_schedule":
        return ARMED_STARTS[int(rng.integers(len(ARMED_STARTS)))] + jitter, True, True
    if kind == "off_schedule":
        return UNARMED_STARTS[int(rng.integers(len(UNARMED_STARTS)))] + jitter, False, True
    return DAYTIME_START + jitter, True, False


INTRUSION_POS = ["enter_stay", "cross_zone", "run_in", "two_intruders", "night_in_schedule"]
INTRUSION_NEG = ["near_edge", "car_in_zone", "off_schedule", "corner_clip"]
LOITERING_POS = ["stand", "wander", "loiter_with_passers", "night_in_schedule"]
LOITERING_NEG = ["passer_by", "just_under", "near_edge_loiter", "car_parked", "off_schedule"]


def intrusion_scenario(rng: np.random.Generator, kind: str) -> Scenario:
    poly = random_zone(rng)
    min_duration = float(rng.choice([1.0, 2.0]))
    t_in = float(rng.uniform(0, 3))
    if kind in ("enter_stay", "night_in_schedule", "off_schedule"):
        actors = [_enter_stay(rng, poly, t_in, float(rng.uniform(3, 12)))]
    elif kind == "cross_zone":  # a clear positive: in the zone at least min_duration + 3 s
        actors = [_crosser(rng, poly, t_in, float(rng.uniform(0.35, 0.6)))]
        while in_zone_s(actors[0], poly) < min_duration + 3.0:
            actors = [_crosser(rng, poly, t_in, float(rng.uniform(0.35, 0.6)))]
    elif kind == "run_in":
        start = border_point(rng, poly)
        a = Actor("person").start(t_in, start).walk_to(point_inside(rng, poly), float(rng.uniform(1.5, 2.2)))
        actors = [a.stay(float(rng.uniform(4, 10)), rng).walk_to(border_point(rng, poly), 1.8)]
    elif kind == "two_intruders":
        first = _enter_stay(rng, poly, t_in, float(rng.uniform(4, 10)))
        meet = (first.x[1], first.y[1])  # where the first one stops
        actors = [first, _crosser(rng, poly, t_in + float(rng.uniform(0, 4)), float(rng.uniform(0.4, 0.7)), meet)]
    elif kind == "near_edge":
        actors = [_near_edge(rng, poly, t_in, float(rng.choice([0.0, rng.uniform(3, 10)])))]
    elif kind == "car_in_zone":
        actors = [_car(rng, poly, t_in, float(rng.uniform(8, 25)))]
    elif kind == "corner_clip":
        actors = [_corner_clip(rng, poly, t_in)]
    else:
        raise ValueError(kind)
    t0, armed, scheduled = _start_time(rng, kind)
    return Scenario(kind, "intrusion", poly, actors, t0, armed, scheduled, min_duration_s=min_duration)


def loitering_scenario(rng: np.random.Generator, kind: str) -> Scenario:
    poly = random_zone(rng)
    dwell = float(rng.uniform(10, 40))
    t_in = float(rng.uniform(0, 3))
    if kind in ("stand", "wander", "night_in_schedule", "off_schedule"):
        wander = kind == "wander" or (kind != "stand" and bool(rng.integers(2)))
        factor = float(rng.uniform(1.3, 2.0)) if kind != "off_schedule" else 2.0
        actors = [_enter_stay(rng, poly, t_in, dwell * factor, wander=wander)]
    elif kind == "loiter_with_passers":
        loiterer = _enter_stay(rng, poly, t_in, dwell * float(rng.uniform(1.3, 2.0)), wander=bool(rng.integers(2)))
        spot = (loiterer.x[1], loiterer.y[1])
        n = int(rng.integers(2, 4))
        passers = [
            _crosser(rng, poly, float(rng.uniform(t_in, loiterer.end_t - 10)), float(rng.uniform(0.6, 1.0)), spot)
            for _ in range(n)
        ]
        actors = [loiterer, *passers]
    elif kind == "passer_by":
        n = int(rng.integers(1, 4))
        actors = [_crosser(rng, poly, t_in + float(rng.uniform(0, 15)), float(rng.uniform(0.6, 1.0))) for _ in range(n)]
    elif kind == "just_under":  # the whole time in the zone (walking in and out too) is 0.6-0.85x dwell_s
        target = dwell * float(rng.uniform(0.6, 0.85))
        stay = target
        for _ in range(20):
            a = _enter_stay(rng, poly, t_in, stay, wander=bool(rng.integers(2)))
            extra = in_zone_s(a, poly) - target
            if abs(extra) <= 0.5:
                break
            stay = max(stay - extra, 0.5)
        actors = [a]
    elif kind == "near_edge_loiter":
        actors = [_near_edge(rng, poly, t_in, dwell * 2.0)]
    elif kind == "car_parked":
        actors = [_car(rng, poly, t_in, dwell * float(rng.uniform(1.5, 2.5)))]
    else:
        raise ValueError(kind)
    t0, armed, scheduled = _start_time(rng, kind)
    return Scenario(kind, "loitering", poly, actors, t0, armed, scheduled, dwell_s=dwell)


# ---------------------------------------------------------------- ground truth


def _runs(mask: np.ndarray, times: np.ndarray) -> list[tuple[float, float]]:
    """Maximal [start, end] time spans where ``mask`` is true."""
    out: list[tuple[float, float]] = []
    start = None
    for i, m in enumerate(mask):
        if m and start is None:
            start = times[i]
        if not m and start is not None:
            out.append((float(start), float(times[i - 1])))
            start = None
    if start is not None:
        out.append((float(start), float(times[-1])))
    return out


def _merge(intervals: list[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if merged and s - merged[-1][1] <= gap_s:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def ground_truth(sc: Scenario, fps: float) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(event intervals, ambiguous intervals) in scenario time; nothing when not armed."""
    if not sc.armed:
        return [], []
    times = np.arange(0.0, sc.duration_s, GRID_S)
    margin = 2.0 / fps
    spans: list[tuple[float, float]] = []
    ambiguous: list[tuple[float, float]] = []
    in_any = np.zeros(len(times), dtype=bool)
    for a in sc.actors:
        if a.label != "person":
            continue
        x, y, present = a.at(times)
        inz = present & points_in_polygon(np.stack([x, y], axis=1), sc.polygon)
        if sc.rule_type == "intrusion":
            in_any |= inz
            continue
        for s, e in _runs(inz, times):
            if e - s >= sc.dwell_s + margin:
                spans.append((s + sc.dwell_s, e))
            elif e - s >= sc.dwell_s:
                ambiguous.append((s + sc.dwell_s, e))
    if sc.rule_type == "intrusion":
        for s, e in _runs(in_any, times):
            if e - s >= sc.min_duration_s + margin:
                spans.append((s, e))
            elif e - s >= sc.min_duration_s:
                ambiguous.append((s, e))
    return _merge(spans, sc.cooldown_s + 2.0), ambiguous


# ---------------------------------------------------------------- detector simulation


def _box(label: str, x: float, y: float) -> tuple[float, float, float, float]:
    h = person_height_px(y)
    if label == "car":
        w, h = 2.2 * h, 0.9 * h
    else:
        w = 0.38 * h
    return (x - w / 2, y - h, x + w / 2, y)


def detections_for(
    sc: Scenario, fps: float, noise: Noise, rng: np.random.Generator
) -> list[tuple[float, list[Detection]]]:
    """(scenario time, detections) per frame, in delivery order (a few frames swapped)."""
    times = np.arange(float(rng.uniform(0, 1 / fps)), sc.duration_s, 1 / fps)
    tracks = [a.at(times) for a in sc.actors]
    p_miss_after_seen, p_miss_after_miss = noise.miss_probabilities()
    missed = np.zeros(len(sc.actors), dtype=bool)
    frames: list[tuple[float, list[Detection]]] = []
    for k, t in enumerate(times):
        p_miss = np.where(missed, p_miss_after_miss, p_miss_after_seen)
        missed = rng.random(len(sc.actors)) < p_miss
        visible = [
            i
            for i, (x, y, present) in enumerate(tracks)
            # in the picture: foot within the width, at least half the body above the bottom
            if present[k] and 0 <= x[k] <= WIDTH_PX and y[k] - 0.5 * person_height_px(y[k]) < HEIGHT_PX
        ]
        truth = [(sc.actors[i].label, float(tracks[i][0][k]), float(tracks[i][1][k])) for i in visible]
        boxes = [_box(lbl, x, y) for lbl, x, y in truth]
        keep = ~missed[visible]
        for i in range(len(truth)):  # occlusion: the farther of two overlapping people
            for j in range(len(truth)):
                if i != j and truth[i][0] == "person" == truth[j][0] and boxes[i][3] < boxes[j][3]:
                    bi, bj = boxes[i], boxes[j]
                    iw = min(bi[2], bj[2]) - max(bi[0], bj[0])
                    ih = min(bi[3], bj[3]) - max(bi[1], bj[1])
                    area_i = (bi[2] - bi[0]) * (bi[3] - bi[1])
                    if iw > 0 and ih > 0 and iw * ih > 0.5 * area_i and rng.random() < noise.occlusion_miss:
                        keep[i] = False
        dets: list[Detection] = []
        for (lbl, _, _), box, ok in zip(truth, boxes, keep, strict=True):
            if not ok:
                continue
            jit = rng.uniform(-noise.jitter_px, noise.jitter_px, 4)
            b = np.clip(np.asarray(box) + jit, [0, 0, 0, 0], [WIDTH_PX, HEIGHT_PX, WIDTH_PX, HEIGHT_PX])
            dets.append(Detection(0 if lbl == "person" else 2, lbl, float(rng.uniform(0.4, 0.95)), tuple(b.tolist())))
        for _ in range(int(rng.poisson(noise.fp_per_frame))):
            x, y = float(rng.uniform(0, WIDTH_PX)), float(rng.uniform(260, HEIGHT_PX))
            bx = _box("person", x, y)
            s = float(rng.uniform(0.5, 1.2))
            h = (bx[3] - bx[1]) * s
            dets.append(Detection(0, "person", float(rng.uniform(0.3, 0.5)), (x - 0.19 * h, y - h, x + 0.19 * h, y)))
        rng.shuffle(dets)  # type: ignore[arg-type]
        frames.append((float(t), dets))
    k = 0
    while k < len(frames) - 1:
        if rng.random() < noise.reorder_rate:
            frames[k], frames[k + 1] = frames[k + 1], frames[k]
            k += 2
        else:
            k += 1
    return frames


# ---------------------------------------------------------------- running and scoring


def build_rule(sc: Scenario) -> IntrusionRule | LoiteringRule:
    zone = ZoneConfig(name="z", polygon=sc.polygon, crowd_threshold_people=None)
    schedule = SCHEDULE if sc.scheduled else []
    timing = Lifecycle(min_duration_s=sc.min_duration_s if sc.rule_type == "intrusion" else 0.0, cooldown_s=5.0)
    if sc.rule_type == "intrusion":
        return IntrusionRule("cam", zone, IntrusionConfig(lifecycle=timing, schedule=schedule), TIMEZONE)
    cfg = LoiteringConfig(dwell_s=sc.dwell_s, lifecycle=timing, schedule=schedule)
    return LoiteringRule("cam", zone, cfg, TIMEZONE)


@dataclass(slots=True)
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    duplicates: int = 0
    ambiguous: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def add(self, other: Score) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.duplicates += other.duplicates
        self.ambiguous += other.ambiguous
        self.latencies_s += other.latencies_s

    def summary(self) -> dict[str, Any]:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        lat = np.asarray(self.latencies_s) if self.latencies_s else np.zeros(1)
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "duplicates": self.duplicates,
            "ambiguous_excluded": self.ambiguous,
            "precision": round(p, 4),
            "recall": round(r, 4),
            "f1": round(f1, 4),
            "open_latency_s_median": round(float(np.median(lat)), 2),
            "open_latency_s_p95": round(float(np.percentile(lat, 95)), 2),
        }


def run_scenario(sc: Scenario, fps: float, noise: Noise, rng: np.random.Generator) -> Score:
    gt, ambiguous = ground_truth(sc, fps)
    rule = build_rule(sc)
    opened: list[float] = []
    last = 0.0
    for t, dets in detections_for(sc, fps, noise, rng):
        for tr in rule.update(sc.t0_epoch + t, dets):
            if tr.phase is EventPhase.OPENED:
                opened.append(tr.ts - sc.t0_epoch)
        last = max(last, t)
    rule.close(sc.t0_epoch + last + 1)
    score = Score(ambiguous=len(ambiguous))
    matched = [False] * len(gt)
    for t_open in opened:
        hit = [i for i, (s, e) in enumerate(gt) if s - TOLERANCE_S <= t_open <= e + TOLERANCE_S]
        free = [i for i in hit if not matched[i]]
        if free:
            matched[free[0]] = True
            score.tp += 1
            score.latencies_s.append(t_open - gt[free[0]][0])
        elif hit:
            score.fp += 1
            score.duplicates += 1
        elif not any(s - TOLERANCE_S <= t_open <= e + TOLERANCE_S for s, e in ambiguous):
            score.fp += 1
    score.fn = matched.count(False)
    return score


def evaluate(seed: int = 0, *, noise: str | Noise = "normal", fps: float = 1.0, n_per_type: int = 100) -> dict:
    """Run ``n_per_type`` scenarios of each type (half positives, half hard negatives).

    Returns per type the pooled scores (precision, recall, F1, open latency) and per scenario
    kind the number of scenarios and of those with an error (a false positive or negative).
    """
    nz = NOISE[noise] if isinstance(noise, str) else noise
    rng = np.random.default_rng(seed)
    makers: dict[str, tuple[Callable[[np.random.Generator, str], Scenario], list[str], list[str]]] = {
        "intrusion": (intrusion_scenario, INTRUSION_POS, INTRUSION_NEG),
        "loitering": (loitering_scenario, LOITERING_POS, LOITERING_NEG),
    }
    out: dict[str, Any] = {"seed": seed, "fps": fps, "noise": vars_of(nz)}
    for rule_type, (make, pos, neg) in makers.items():
        total = Score()
        kinds: dict[str, dict[str, int]] = {}
        for i in range(n_per_type):
            kinds_list = pos if i % 2 == 0 else neg
            kind = kinds_list[(i // 2) % len(kinds_list)]
            sc = make(rng, kind)
            s = run_scenario(sc, fps, nz, rng)
            total.add(s)
            k = kinds.setdefault(kind, {"n": 0, "with_error": 0})
            k["n"] += 1
            k["with_error"] += int(s.fp > 0 or s.fn > 0)
        out[rule_type] = {**total.summary(), "kinds": kinds}
    return out


def vars_of(nz: Noise) -> dict[str, Any]:
    return dataclasses.asdict(nz)


def _pooled(runs: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rule_type in ("intrusion", "loitering"):
        s = Score()
        worst = {"precision": 1.0, "recall": 1.0}
        for r in runs:
            m = r[rule_type]
            s.tp += m["tp"]
            s.fp += m["fp"]
            s.fn += m["fn"]
            s.duplicates += m["duplicates"]
            s.ambiguous += m["ambiguous_excluded"]
            worst = {k: min(worst[k], m[k]) for k in worst}
        summary = s.summary()
        for key in ("open_latency_s_median", "open_latency_s_p95"):
            summary.pop(key)
        kinds: dict[str, dict[str, int]] = {}
        for r in runs:
            for kind, v in r[rule_type]["kinds"].items():
                k = kinds.setdefault(kind, {"n": 0, "with_error": 0})
                k["n"] += v["n"]
                k["with_error"] += v["with_error"]
        out[rule_type] = {
            **summary,
            "worst_seed_precision": worst["precision"],
            "worst_seed_recall": worst["recall"],
            "kinds": kinds,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="Seeds per setting.")
    ap.add_argument(
        "--seed-base",
        type=int,
        default=1000,
        help="First seed. Seeds 0..4 were used while developing the rules; 1000.. were not looked at.",
    )
    ap.add_argument("--n-per-type", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None, help="Also write <out>/eval_tracking.json.")
    args = ap.parse_args(argv)
    settings = {
        "normal_1fps": ("normal", 1.0),
        "harsh_1fps": ("harsh", 1.0),
        "harsh_bursty_1fps": ("harsh_bursty", 1.0),
        "normal_2fps": ("normal", 2.0),
        "normal_5fps": ("normal", 5.0),
    }
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    result: dict[str, Any] = {"n_per_type_per_seed": args.n_per_type, "seeds": seeds, "tolerance_s": TOLERANCE_S}
    for name, (nz, fps) in settings.items():
        runs = [evaluate(seed, noise=nz, fps=fps, n_per_type=args.n_per_type) for seed in seeds]
        result[name] = {"noise": vars_of(NOISE[nz]), "fps": fps, **_pooled(runs)}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        from benchmarks.common import write_result

        write_result("eval_tracking", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
