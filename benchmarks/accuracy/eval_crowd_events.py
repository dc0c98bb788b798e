"""Event-level accuracy of the crowd rules against hand-counted footage.

Ground truth. Every clip is sampled at an analytics rate; each sample gets a person count from the hand labels:
``vtest.avi`` is counted at every 10th frame (1 fps, ``tests/data/crowd_events.json``); the short dense clips carry
the sparse labels of ``tests/data/crowd_labels.json`` (one every 0.7-2.6 s) and a sample takes the count of the
nearest labelled frame (their crowds stay far above the thresholds used, so holding a count for ~1 s is safe).
For a threshold, a ground-truth event is a maximal run of samples with ``count >= threshold``, runs separated by
gaps shorter than ``cooldown_s`` merged (the rule would not split them either). A run shorter than
``min_duration_s`` is *optional*: the rule need not report it, but an event overlapping it is not a false alarm.

Prediction. The real rules (:func:`actors.analytics.registry.build_rules` on a :class:`CameraConfig` with one
whole-frame zone) consume the project's ONNX detector output (:func:`serve_apps.detector.onnx_runner.load_detector`)
for the same samples, with capture timestamps; an event spans ``started_at``..``ended_at`` of its transitions
(events still open at the end of the clip are closed there). For ``crowd_density`` a level's event window starts at
the first transition whose severity reaches that level.

Scoring (:func:`score_events`). A predicted event is a true positive if its span overlaps a ground-truth run
(required or optional), widened by ``tolerance_s`` (one sample period) on both sides; precision = true positives /
predicted events. Recall = required ground-truth events overlapped by some predicted event / required events.
A stricter score (``strict``) also asks a matched pair to share time: temporal IoU >= ``STRICT_IOU``
(a late event that only touches the end of a true one then counts as a false alarm and a miss). Frame-level
precision/recall (an event open at a sample vs ``count >= threshold``) and the count MAE on the labelled samples
are reported too.

Split. ``tests/data/crowd_split.json`` puts every clip in a **tuning** or a **validation** set (fixed before any
tuning against it) and each variant's events are also merged per set (``splits``; ``summary.<variant>.validation``
is the figure to quote). It also holds vtest.avi's estimated ground calibration: the ``density_m2_vtest``
scenario runs the density rule on that calibrated zone in people/m², the truth being the hand count over the
zone's area computed by the product's own :class:`GroundPlane`.

Motion gate (``motion_gate``). The deployment default's detections are run again through the camera's motion gate
at its default settings (:class:`actors.motion.MotionGate`): a sample the gate finds unchanged keeps the last
analysed sample's detections, as the shard does. Reported: the share of samples skipped per clip and per split,
the gated event scores per split, and every event the ungated rules raised that the gated ones did not
(``events_missed_by_gate``) or the reverse (``events_added_by_gate``); and the share it skips of every clip of the
footage sampled at 1 fps (``footage_1fps``), those without crowd labels included.

Run: ``.venv/bin/python -m benchmarks.accuracy.eval_crowd_events [--models-dir ../shared/models] [--clips-dir
../shared/data/clips] [--vtest .cache/footage/vtest.avi] [--split tests/data/crowd_split.json]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from actors.analytics.registry import build_rules
from actors.analytics.zones import PERSON_LABEL, GroundPlane
from actors.motion import MotionGate
from configs.analytics import SEVERITY_RANK, CrowdDensityConfig, GroundCalibration, Lifecycle
from configs.schema import CameraConfig, ZoneConfig
from contracts.detector import Detection
from contracts.events import EventPhase, EventTransition
from serve_apps.detector.onnx_runner import load_detector

REPO = Path(__file__).resolve().parents[2]

VTEST_NAME = "vtest.avi"
DEFAULT_EVENTS = REPO / "tests" / "data" / "crowd_events.json"
DEFAULT_LABELS = REPO / "tests" / "data" / "crowd_labels.json"
DEFAULT_SPLIT = REPO / "tests" / "data" / "crowd_split.json"
DEFAULT_CLIPS = REPO.parent / "shared" / "data" / "clips"
DEFAULT_MODELS = REPO.parent / "shared" / "models"
DEFAULT_VTEST = REPO / ".cache" / "footage" / VTEST_NAME
LEVELS = ("caution", "warning", "severe")
TARGET = 0.9
STRICT_IOU = 0.3  # the stricter matching: predicted and true event must also share >= 30 % of their time
# Detector variants: (model, input size); the first is what CPU profiles run crowd cameras on
# (configs/demo.yaml, configs/profiles/laptop.yaml; GPU profiles use 800).
VARIANTS: tuple[tuple[str, int], ...] = (
    ("yolox_nano", 640),
    ("yolox_nano", 416),
    ("yolox_nano", 800),
    ("person_lwpd", 192),
    ("person_lwpd", 640),
)
# Rule timing: the ZoneConfig defaults (2 s to open, 5 s to close).
MIN_DURATION_S = 2.0
COOLDOWN_S = 5.0
# Short dense clips are sampled at 2 fps (3.8-13.6 s long) plus their labelled frames; vtest at its 1 fps label step.
SHORT_CLIP_FPS = 2.0


@dataclass(frozen=True)
class Scenario:
    """One rule configuration evaluated on some clips.

    ``threshold`` set: a ``crowd`` rule (people in the zone >= threshold); ``levels`` set: a ``crowd_density``
    rule with count levels (caution, warning, severe); ``levels_per_m2`` set: a ``crowd_density`` rule on a
    calibrated zone (each clip needs a calibration in the split file), truth being the hand count over the
    zone's ground area.
    """

    name: str
    clips: tuple[str, ...]
    threshold: int | None = None
    levels: tuple[int, int, int] | None = None
    levels_per_m2: tuple[float, float, float] | None = None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "crowd_15",
        (
            VTEST_NAME,
            "street_people_walking.mp4",
            "town_centre_pedestrians.mp4",
            "crowd_overhead_bw.avi",
            "highway_cars.mp4",
        ),
        threshold=15,
    ),
    Scenario("crowd_8_vtest", (VTEST_NAME,), threshold=8),
    Scenario(
        "density_10_20_30",
        (
            VTEST_NAME,
            "street_people_walking.mp4",
            "town_centre_pedestrians.mp4",
            "crowd_overhead_bw.avi",
            "highway_cars.mp4",
        ),
        levels=(10, 20, 30),
    ),
    Scenario("density_6_7_8_vtest", (VTEST_NAME,), levels=(6, 7, 8)),
    # vtest's zone is ~1151 m2 (tests/data/crowd_split.json): 6, 7 and 9 people. Seoul's 3/4/5 people/m2 are
    # not reached by any clip here (the densest, crowd_overhead_bw, has no calibration to estimate).
    Scenario("density_m2_vtest", (VTEST_NAME,), levels_per_m2=(0.005, 0.006, 0.007)),
)


@dataclass(frozen=True)
class ClipCalibration:
    """A clip's ground calibration and the zone it is used on (from the split file)."""

    zone_polygon: list[tuple[float, float]]
    calibration: GroundCalibration

    @property
    def area_m2(self) -> float:
        return GroundPlane(self.calibration).area_m2(self.zone_polygon)


@dataclass(frozen=True)
class Split:
    """Which clips thresholds may be chosen on (``tuning``) and which are only reported (``validation``)."""

    tuning: tuple[str, ...]
    validation: tuple[str, ...]
    calibrations: dict[str, ClipCalibration]

    def of(self, clip: str) -> str:
        if clip in self.tuning:
            return "tuning"
        if clip in self.validation:
            return "validation"
        raise KeyError(f"clip {clip!r} is in neither split of the crowd split file")


def load_split(path: Path) -> Split:
    """Read the split file; a clip in both sets or a bad calibration is an error naming it."""
    doc = json.loads(Path(path).read_text())
    tuning, validation = tuple(doc["tuning"]), tuple(doc["validation"])
    both = set(tuning) & set(validation)
    if both:
        raise ValueError(f"{path}: clips {sorted(both)} are in both the tuning and the validation set")
    cals = {
        clip: ClipCalibration(
            [tuple(p) for p in c["zone_polygon"]],
            GroundCalibration(image_points=c["image_points"], ground_points_m=c["ground_points_m"]),
        )
        for clip, c in doc.get("calibrations", {}).items()
    }
    return Split(tuning, validation, cals)


# ----------------------------------------------------------------------------------------------- scoring (pure)


@dataclass(frozen=True)
class Window:
    """A time span [start, end] (seconds); ``required`` is False for ground-truth runs shorter than min duration."""

    start: float
    end: float
    required: bool = True


def gt_windows(
    ts: Sequence[float], counts: Sequence[float], threshold: float, *, min_duration_s: float, cooldown_s: float
) -> list[Window]:
    """Ground-truth events: runs of ``count >= threshold``, gaps shorter than ``cooldown_s`` merged.

    A run's span is from its first to its last sample at or over the threshold; it is required when the span is at
    least ``min_duration_s`` (the rule cannot open earlier).
    """
    runs: list[list[float]] = []
    first_off: float | None = None  # first sample under the threshold after the current run
    for t, c in zip(ts, counts, strict=True):
        if c >= threshold:
            if runs and (first_off is None or t - first_off < cooldown_s):
                runs[-1][1] = t  # continuing, or a gap too short to close the event
            else:
                runs.append([t, t])
            first_off = None
        elif first_off is None:
            first_off = t
    return [Window(a, b, b - a >= min_duration_s) for a, b in runs]


def predicted_windows(transitions: Iterable[EventTransition], level: str | None = None) -> list[Window]:
    """Event spans from a rule's transitions (each event must be closed).

    With ``level`` the window starts at the first transition whose severity reaches the level; events that never
    reach it are left out.
    """
    start: dict[str, float] = {}
    out: list[Window] = []
    for tr in transitions:
        reached = level is None or SEVERITY_RANK[tr.severity] >= SEVERITY_RANK[level]
        if tr.phase is EventPhase.OPENED and reached:
            start[tr.event_id] = tr.started_at
        elif tr.phase is EventPhase.UPDATED and reached and tr.event_id not in start:
            start[tr.event_id] = tr.ts
        elif tr.phase is EventPhase.CLOSED and tr.event_id in start:
            end = tr.ended_at if tr.ended_at is not None else tr.ts
            begin = start.pop(tr.event_id)
            out.append(Window(begin, max(end, begin)))
    return out


def _overlaps(a: Window, b: Window, tol: float) -> bool:
    return a.start - tol <= b.end and b.start - tol <= a.end


def _prf(tp_pred: int, n_pred: int, tp_gt: int, n_gt: int) -> dict[str, Any]:
    precision = tp_pred / n_pred if n_pred else None
    recall = tp_gt / n_gt if n_gt else None
    f1 = None
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "precision": None if precision is None else round(precision, 3),
        "recall": None if recall is None else round(recall, 3),
        "f1": None if f1 is None else round(f1, 3),
    }


def iou(a: Window, b: Window, dt: float) -> float:
    """Temporal intersection over union, each window extended by one sample period ``dt`` (a sample stands for
    the slice of time until the next one, so a one-sample window is not empty)."""
    a0, a1, b0, b1 = a.start, a.end + dt, b.start, b.end + dt
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = (a1 - a0) + (b1 - b0) - inter
    return inter / union if union > 0 else 0.0


def score_events(
    pred: Sequence[Window], gt: Sequence[Window], *, tolerance_s: float, min_iou: float | None = None
) -> dict[str, Any]:
    """Event-level counts and precision/recall/F1 (``None`` where undefined: no predictions or no required events).

    Without ``min_iou`` a predicted and a ground-truth event match when they overlap (within ``tolerance_s``); with
    it they must also cover the same time, temporal IoU >= ``min_iou`` (``tolerance_s`` is then the sample period).
    """

    def match(p: Window, g: Window) -> bool:
        if min_iou is None:
            return _overlaps(p, g, tolerance_s)
        return iou(p, g, tolerance_s) >= min_iou

    tp_pred = sum(1 for p in pred if any(match(p, g) for g in gt))
    required = [g for g in gt if g.required]
    tp_gt = sum(1 for g in required if any(match(p, g) for p in pred))
    return {
        "predicted": len(pred),
        "true_positive_predicted": tp_pred,
        "false_positive": len(pred) - tp_pred,
        "gt_required": len(required),
        "gt_optional": len(gt) - len(required),
        "gt_detected": tp_gt,
        "missed": len(required) - tp_gt,
        **_prf(tp_pred, len(pred), tp_gt, len(required)),
    }


def score_frames(ts: Sequence[float], pred: Sequence[Window], gt_on: Sequence[bool]) -> dict[str, Any]:
    """Per-sample precision/recall: an event open at the sample vs the labelled condition."""
    on = [any(w.start <= t <= w.end for w in pred) for t in ts]
    tp = sum(1 for p, g in zip(on, gt_on, strict=True) if p and g)
    return {"samples": len(ts), "gt_on": int(sum(gt_on)), "pred_on": int(sum(on)), **_prf(tp, sum(on), tp, sum(gt_on))}


def merge_counts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-clip event counts and recompute precision/recall/F1."""
    keys = (
        "predicted",
        "true_positive_predicted",
        "false_positive",
        "gt_required",
        "gt_optional",
        "gt_detected",
        "missed",
    )
    total = {k: 0 for k in keys}
    for p in parts:
        for k in keys:
            total[k] += p[k]
    return {
        **total,
        **_prf(total["true_positive_predicted"], total["predicted"], total["gt_detected"], total["gt_required"]),
    }


def split_scores(scen: dict[str, Any], split: Split, part: str) -> dict[str, Any]:
    """All event types of all scenarios, merged over the clips of one part of the split (loose and strict)."""
    loose, strict, clips = [], [], set()
    for result in scen.values():
        for kind, scored in result.items():
            if not kind.startswith("crowd"):
                continue
            for clip, pc in scored["per_clip"].items():
                if split.of(clip) == part:
                    loose.append(pc)
                    strict.append(pc["strict"])
                    clips.add(clip)
    m, ms = merge_counts(loose), merge_counts(strict)
    return {
        "clips": sorted(clips),
        "events": {**m, "meets_target": meets_target(m)},
        "events_strict": {**ms, "meets_target": meets_target(ms)},
    }


def meets_target(s: dict[str, Any], target: float = TARGET) -> bool:
    """Both precision and recall defined and at least ``target``."""
    return s["precision"] is not None and s["recall"] is not None and s["precision"] >= target and s["recall"] >= target


# ---------------------------------------------------------------------------------------------- data and models


@dataclass
class ClipSamples:
    clip: str
    fps: float  # analytics rate
    ts: list[float]
    frame_index: list[int]
    label: list[int]  # ground-truth count per sample
    labelled: list[bool]  # the sample frame itself was hand-counted
    frames: list[np.ndarray]


def _read_frames(path: Path, indices: Sequence[int], *, strict: bool = True) -> dict[int, np.ndarray]:
    """Decode sequentially and keep ``indices``; without ``strict``, stop quietly at the real end of the stream
    (container frame counts can overstate it)."""
    want = set(indices)
    out: dict[int, np.ndarray] = {}
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    try:
        i = 0
        while len(out) < len(want):
            ok, frame = cap.read()
            if not ok:
                break
            if i in want:
                out[i] = frame
            i += 1
    finally:
        cap.release()
    if strict and len(out) < len(want):
        raise ValueError(f"{path}: frames {sorted(want - set(out))[:5]} not readable")
    return out


def load_samples(events_path: Path, labels_path: Path, clips_dir: Path, vtest: Path) -> dict[str, ClipSamples]:
    """Sample every clip and attach the ground-truth count of each sample."""
    out: dict[str, ClipSamples] = {}
    events_doc = json.loads(Path(events_path).read_text())
    for seq in events_doc["sequences"]:
        path = vtest if seq["clip"] == VTEST_NAME else clips_dir / seq["clip"]
        native = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS)
        idx = [seq["first_frame"] + k * seq["step_frames"] for k in range(len(seq["people"]))]
        frames = _read_frames(path, idx)
        out[seq["clip"]] = ClipSamples(
            seq["clip"],
            native / seq["step_frames"],
            [i / native for i in idx],
            idx,
            list(seq["people"]),
            [True] * len(idx),
            [frames[i] for i in idx],
        )
    sparse: dict[str, list[tuple[int, int]]] = {}
    for item in json.loads(Path(labels_path).read_text())["frames"]:
        sparse.setdefault(item["clip"], []).append((int(item["frame_index"]), int(item["people"])))
    for clip, labels in sparse.items():
        if clip in out:
            continue
        path = vtest if clip == VTEST_NAME else clips_dir / clip
        cap = cv2.VideoCapture(str(path))
        native, n = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        step = native / SHORT_CLIP_FPS
        # the 2 fps grid plus the hand-counted frames themselves (for the count MAE); the rules use capture
        # timestamps, so an uneven spacing is what a live camera's jitter looks like too
        grid = {round(k * step) for k in range(int(n / step) + 1) if round(k * step) < n}
        idx = sorted(grid | {f for f, _ in labels})
        frames = _read_frames(path, idx, strict=False)
        idx = [i for i in idx if i in frames]
        label_at = dict(labels)
        nearest = [min(labels, key=lambda fl, i=i: abs(fl[0] - i))[1] for i in idx]
        out[clip] = ClipSamples(
            clip,
            SHORT_CLIP_FPS,
            [i / native for i in idx],
            idx,
            nearest,
            [i in label_at for i in idx],
            [frames[i] for i in idx],
        )
    return out


def whole_frame_zone(width: int, height: int) -> list[tuple[float, float]]:
    """The whole frame, closed one pixel outside the edges (boxes are clipped to the frame)."""
    return [(-1.0, -1.0), (width + 1.0, -1.0), (width + 1.0, height + 1.0), (-1.0, height + 1.0)]


def camera_for(scenario: Scenario, width: int, height: int, cal: ClipCalibration | None = None) -> CameraConfig:
    """The camera configuration a site would write for the scenario: one whole-frame zone, or the calibrated
    zone with the camera's ground calibration for a people/m² scenario."""
    lifecycle = Lifecycle(min_duration_s=MIN_DURATION_S, cooldown_s=COOLDOWN_S)
    density: CrowdDensityConfig | None = None
    if scenario.levels is not None:
        density = CrowdDensityConfig(levels_people=scenario.levels, lifecycle=lifecycle)
    elif scenario.levels_per_m2 is not None:
        if cal is None:
            raise ValueError(f"scenario {scenario.name!r} is in people/m2 but the clip has no ground calibration")
        density = CrowdDensityConfig(levels_people_per_m2=scenario.levels_per_m2, lifecycle=lifecycle)
    zone = ZoneConfig(
        name="frame",
        polygon=cal.zone_polygon if cal is not None else whole_frame_zone(width, height),
        crowd_threshold_people=scenario.threshold,
        min_duration_s=MIN_DURATION_S,
        cooldown_s=COOLDOWN_S,
        crowd_density=density,
    )
    return CameraConfig(
        id="eval", url="file:///dev/null", zones=[zone], calibration=None if cal is None else cal.calibration
    )


def run_rule(
    scenario: Scenario,
    samples: ClipSamples,
    dets: Sequence[Sequence[Detection]],
    cal: ClipCalibration | None = None,
) -> list[EventTransition]:
    """Feed the detections to the scenario's rule; close any open event at the last sample."""
    h, w = samples.frames[0].shape[:2]
    rules = build_rules(camera_for(scenario, w, h, cal))
    assert len(rules) == 1, rules
    rule = rules[0]
    out: list[EventTransition] = []
    for t, d in zip(samples.ts, dets, strict=True):
        out.extend(rule.update(t, d))
    out.extend(rule.close(samples.ts[-1]))
    return out


def evaluate_scenario(
    scenario: Scenario,
    samples: dict[str, ClipSamples],
    dets: dict[str, list[list[Detection]]],
    calibrations: dict[str, ClipCalibration] | None = None,
) -> dict[str, Any]:
    """Per clip and overall event scores (per level for density scenarios)."""
    levels = scenario.levels if scenario.levels is not None else scenario.levels_per_m2
    kinds: list[tuple[str, str | None, float]] = (
        [("crowd", None, scenario.threshold)]
        if scenario.threshold is not None
        else [(f"crowd_density:{lv}", lv, th) for lv, th in zip(LEVELS, levels or (), strict=True)]
    )
    result: dict[str, Any] = {
        "threshold": scenario.threshold,
        "levels_people": scenario.levels,
        "levels_people_per_m2": scenario.levels_per_m2,
    }
    per_m2 = scenario.levels_per_m2 is not None
    cals = {clip: (calibrations or {}).get(clip) for clip in scenario.clips} if per_m2 else {}
    if per_m2:
        result["zone_area_m2"] = {clip: None if c is None else round(c.area_m2, 1) for clip, c in cals.items()}
    for kind, level, threshold in kinds:
        per_clip: dict[str, Any] = {}
        for clip in scenario.clips:
            s = samples[clip]
            cal = cals.get(clip)
            transitions = run_rule(scenario, s, dets[clip], cal)
            pred = predicted_windows(transitions, level)
            truth = [c / cal.area_m2 for c in s.label] if cal is not None else list(s.label)
            gt = gt_windows(s.ts, truth, threshold, min_duration_s=MIN_DURATION_S, cooldown_s=COOLDOWN_S)
            per_clip[clip] = {
                **score_events(pred, gt, tolerance_s=1.0 / s.fps),
                "strict": score_events(pred, gt, tolerance_s=1.0 / s.fps, min_iou=STRICT_IOU),
                "frames": score_frames(s.ts, pred, [v >= threshold for v in truth]),
                "gt_windows_s": [[round(g.start, 1), round(g.end, 1), g.required] for g in gt],
                "pred_windows_s": [[round(p.start, 1), round(p.end, 1)] for p in pred],
            }
        overall = merge_counts(per_clip.values())
        strict = merge_counts(pc["strict"] for pc in per_clip.values())
        result[kind] = {
            "overall": {**overall, "meets_target": meets_target(overall)},
            "overall_strict": {**strict, "meets_target": meets_target(strict)},
            "per_clip": per_clip,
        }
    return result


def gate_detections(
    frames: Sequence[np.ndarray], ts: Sequence[float], dets: Sequence[list[Detection]], gate: MotionGate
) -> tuple[list[list[Detection]], list[bool]]:
    """What the rules see with the motion gate on: a frame the gate finds unchanged is not analysed and the last
    analysed frame's detections hold at its time (as ``actors.shard`` does with a static frame).

    Returns:
        The detections per sample and, per sample, whether the gate skipped it.
    """
    out: list[list[Detection]] = []
    skipped: list[bool] = []
    last: list[Detection] = []
    for frame, t, d in zip(frames, ts, dets, strict=True):
        analyse = gate.decide(frame, t).analyse
        if analyse:
            last = d
        skipped.append(not analyse)
        out.append(last)
    return out, skipped


def default_gate_settings() -> tuple[float, float]:
    """``(motion_threshold, motion_max_skip_s)`` as a camera gets them when its config says nothing."""
    fields = CameraConfig.model_fields
    return float(fields["motion_threshold"].default), float(fields["motion_max_skip_s"].default)


def footage_skip_share(path: Path, fps: float = 1.0, max_s: float = 600.0) -> dict[str, Any]:
    """The share of 1 fps samples of a whole clip the gate at the camera defaults would skip (no events: only the
    detector's work it saves; pixel rules such as fire and water still see every sample)."""
    gate = MotionGate(*default_gate_settings())
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    native = cap.get(cv2.CAP_PROP_FPS) or 25.0
    n = analysed = i = 0
    next_t = 0.0
    try:
        while i / native <= max_s:
            if not cap.grab():
                break
            t = i / native
            i += 1
            if t + 1e-9 < next_t:
                continue
            next_t += 1.0 / fps
            ok, frame = cap.retrieve()
            if not ok:
                break
            n += 1
            analysed += gate.decide(frame, t).analyse
    finally:
        cap.release()
    return {"samples": n, "skipped": n - analysed, "skipped_frac": round((n - analysed) / max(1, n), 3)}


def motion_gate_effect(
    samples: dict[str, ClipSamples],
    dets: dict[str, list[list[Detection]]],
    ungated: dict[str, Any],
    split: Split,
) -> dict[str, Any]:
    """The motion gate at the camera defaults on the same samples: the share of frames it skips per clip, the
    event scores with it on (per split), and every event the ungated rules raised that the gated ones did not
    (missed because of the gate) or the reverse (added by it)."""
    threshold, max_skip_s = default_gate_settings()
    gated: dict[str, list[list[Detection]]] = {}
    per_clip: dict[str, Any] = {}
    for clip, s in samples.items():
        gated[clip], skipped = gate_detections(s.frames, s.ts, dets[clip], MotionGate(threshold, max_skip_s))
        per_clip[clip] = {
            "split": split.of(clip),
            "samples": len(skipped),
            "skipped": int(sum(skipped)),
            "skipped_frac": round(sum(skipped) / len(skipped), 3),
        }
    scen = {sc.name: evaluate_scenario(sc, samples, gated, split.calibrations) for sc in SCENARIOS}
    missed: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    n_ungated = 0
    for name, result in ungated.items():
        for kind, scored in result.items():
            if not kind.startswith("crowd"):
                continue
            for clip, pc in scored["per_clip"].items():
                tol = 1.0 / samples[clip].fps
                before = [Window(a, b) for a, b in pc["pred_windows_s"]]
                after = [Window(a, b) for a, b in scen[name][kind]["per_clip"][clip]["pred_windows_s"]]
                n_ungated += len(before)
                for w in before:
                    if not any(_overlaps(w, o, tol) for o in after):
                        missed.append({"scenario": name, "kind": kind, "clip": clip, "window_s": [w.start, w.end]})
                for w in after:
                    if not any(_overlaps(w, o, tol) for o in before):
                        added.append({"scenario": name, "kind": kind, "clip": clip, "window_s": [w.start, w.end]})
    n = sum(c["samples"] for c in per_clip.values())
    by_part = {
        part: round(
            sum(c["skipped"] for c in per_clip.values() if c["split"] == part)
            / max(1, sum(c["samples"] for c in per_clip.values() if c["split"] == part)),
            3,
        )
        for part in ("tuning", "validation")
    }
    return {
        "motion_threshold": threshold,
        "motion_max_skip_s": max_skip_s,
        "skipped_frac_overall": round(sum(c["skipped"] for c in per_clip.values()) / max(1, n), 3),
        "skipped_frac_by_split": by_part,
        "per_clip": per_clip,
        "ungated_events": n_ungated,
        "events_missed_by_gate": missed,
        "events_added_by_gate": added,
        "splits": {part: split_scores(scen, split, part) for part in ("tuning", "validation")},
    }


def evaluate(
    events_path: Path = DEFAULT_EVENTS,
    labels_path: Path = DEFAULT_LABELS,
    clips_dir: Path = DEFAULT_CLIPS,
    vtest: Path = DEFAULT_VTEST,
    models_dir: Path = DEFAULT_MODELS,
    variants: Sequence[tuple[str, int]] = VARIANTS,
    split_path: Path = DEFAULT_SPLIT,
) -> dict[str, Any]:
    """Event-level scores of every scenario, per detector variant; see the module docstring."""
    samples = load_samples(events_path, labels_path, clips_dir, vtest)
    split = load_split(split_path)
    unsplit = sorted({c for sc in SCENARIOS for c in sc.clips} - set(split.tuning) - set(split.validation))
    if unsplit:
        raise ValueError(f"{split_path}: clips {unsplit} of the scenarios are in neither split")
    result: dict[str, Any] = {
        "split": {"path": str(split_path), "tuning": list(split.tuning), "validation": list(split.validation)},
        "ground_truth": {
            "sequence_labels": str(events_path),
            "sparse_labels": str(labels_path),
            "samples": {
                c: {"fps": s.fps, "n": len(s.ts), "hand_counted": int(sum(s.labelled))} for c, s in samples.items()
            },
        },
        "rule_timing": {"min_duration_s": MIN_DURATION_S, "cooldown_s": COOLDOWN_S},
        "target": TARGET,
        "strict_iou": STRICT_IOU,
        "variants": {},
    }
    for model, size in variants:
        detector = load_detector(models_dir, model, input_size=size)
        dets: dict[str, list[list[Detection]]] = {}
        latency_ms: list[float] = []
        for clip, s in samples.items():
            dets[clip] = []
            for f in s.frames:
                t0 = time.perf_counter()
                found = detector.detect_frames([f])[0]
                latency_ms.append((time.perf_counter() - t0) * 1000.0)
                dets[clip].append([d for d in found if d.label == PERSON_LABEL])
        err = [
            len(d) - g
            for s in samples.values()
            for d, g, lab in zip(dets[s.clip], s.label, s.labelled, strict=True)
            if lab
        ]
        mae_clip = {
            s.clip: round(
                float(
                    np.mean(
                        [abs(len(d) - g) for d, g, lab in zip(dets[s.clip], s.label, s.labelled, strict=True) if lab]
                    )
                ),
                3,
            )
            for s in samples.values()
        }
        scen = {sc.name: evaluate_scenario(sc, samples, dets, split.calibrations) for sc in SCENARIOS}
        kinds = [(sc.name, k) for sc in SCENARIOS for k in scen[sc.name] if k.startswith("crowd")]
        headline = merge_counts(scen[n][k]["overall"] for n, k in kinds)
        headline_strict = merge_counts(scen[n][k]["overall_strict"] for n, k in kinds)
        per_type: dict[str, Any] = {}
        for kind in dict.fromkeys(k for _, k in kinds):
            m = merge_counts(scen[n][k]["overall"] for n, k in kinds if k == kind)
            ms = merge_counts(scen[n][k]["overall_strict"] for n, k in kinds if k == kind)
            per_type[kind] = {
                **{x: m[x] for x in ("gt_required", "predicted", "precision", "recall", "f1")},
                "strict": {x: ms[x] for x in ("precision", "recall", "f1")},
            }
        if "motion_gate" not in result:  # the first variant is the deployment default
            result["motion_gate"] = {"variant": f"{model}@{size}", **motion_gate_effect(samples, dets, scen, split)}
            clips = sorted(clips_dir.glob("*.*")) + ([vtest] if vtest.exists() else [])
            result["motion_gate"]["footage_1fps"] = {c.name: footage_skip_share(c) for c in clips}
        result["variants"][f"{model}@{size}"] = {
            "detect_ms_per_frame_median": round(float(np.median(latency_ms)), 1),
            "count_mae_labelled_samples": round(float(np.mean(np.abs(err))), 3),
            "count_mean_signed_error": round(float(np.mean(err)), 3),
            "count_mae_per_clip": mae_clip,
            "all_event_types": {**headline, "meets_target": meets_target(headline)},
            "all_event_types_strict": {**headline_strict, "meets_target": meets_target(headline_strict)},
            "per_event_type": per_type,
            "splits": {name: split_scores(scen, split, name) for name in ("tuning", "validation")},
            "scenarios": scen,
        }
    _keys = ("precision", "recall", "f1", "meets_target")
    result["summary"] = {
        name: {
            "count_mae": v["count_mae_labelled_samples"],
            "detect_ms_per_frame_median": v["detect_ms_per_frame_median"],
            **{k: v["all_event_types"][k] for k in _keys},
            "strict_iou": {k: v["all_event_types_strict"][k] for k in _keys},
            **{
                part: {
                    "gt_required": v["splits"][part]["events"]["gt_required"],
                    **{k: v["splits"][part]["events"][k] for k in _keys},
                    "strict_iou": {k: v["splits"][part]["events_strict"][k] for k in _keys},
                }
                for part in ("tuning", "validation")
            },
        }
        for name, v in result["variants"].items()
    }
    result["deployment_default"] = "{}@{}".format(*variants[0])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--events", type=Path, default=DEFAULT_EVENTS)
    p.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    p.add_argument("--clips-dir", type=Path, default=DEFAULT_CLIPS)
    p.add_argument("--vtest", type=Path, default=DEFAULT_VTEST)
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="tuning/validation clips and calibrations")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=[f"{m}@{s}" for m, s in VARIANTS],
        default=None,
        help="detector variants as model@size (default all; the first is the deployment default)",
    )
    args = p.parse_args(argv)
    variants = (
        VARIANTS if args.variants is None else tuple((v.split("@")[0], int(v.split("@")[1])) for v in args.variants)
    )
    result = evaluate(args.events, args.labels, args.clips_dir, args.vtest, args.models_dir, variants, args.split)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
