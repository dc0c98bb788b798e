"""Event matching and scoring of the crowd event evaluation, on synthetic sequences (no models, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.analytics.registry import build_rules
from actors.motion import MotionGate
from benchmarks.accuracy.eval_crowd_events import (
    DEFAULT_SPLIT,
    SCENARIOS,
    VTEST_NAME,
    Scenario,
    Split,
    Window,
    camera_for,
    gate_detections,
    gt_windows,
    iou,
    load_split,
    meets_target,
    merge_counts,
    predicted_windows,
    score_events,
    score_frames,
    split_scores,
)
from contracts.detector import Detection


def _persons(n: int, y: float = 50.0) -> list[Detection]:
    return [
        Detection(class_id=0, label="person", score=0.9, box=(10.0 * i, y - 40.0, 10.0 * i + 5, y)) for i in range(n)
    ]


def _events(rule, ts: list[float], counts: list[int], y: float = 50.0) -> list:
    out = []
    for t, c in zip(ts, counts, strict=True):
        out.extend(rule.update(t, _persons(c, y)))
    out.extend(rule.close(ts[-1]))
    return out


def test_gt_windows_merge_short_gaps_and_mark_short_runs_optional() -> None:
    ts = [float(t) for t in range(20)]
    counts = [0, 9, 9, 9, 0, 0, 9, 9, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0]
    gt = gt_windows(ts, counts, 8, min_duration_s=2.0, cooldown_s=5.0)
    # 1-3 and 6-7 are one event (2 s gap < 5 s cooldown); the lone sample at 14 is too short to be required
    assert gt == [Window(1.0, 7.0, True), Window(14.0, 14.0, False)]


def test_gt_windows_split_on_long_gap() -> None:
    ts = [float(t) for t in range(12)]
    counts = [9, 9, 9, 0, 0, 0, 0, 0, 9, 9, 9, 9]
    gt = gt_windows(ts, counts, 8, min_duration_s=2.0, cooldown_s=5.0)
    assert gt == [Window(0.0, 2.0, True), Window(8.0, 11.0, True)]


def test_score_events_counts_false_alarms_misses_and_optional_overlaps() -> None:
    gt = [Window(10.0, 20.0), Window(40.0, 50.0), Window(70.0, 70.0, required=False)]
    pred = [Window(12.0, 22.0), Window(69.0, 71.0), Window(90.0, 95.0)]
    s = score_events(pred, gt, tolerance_s=1.0)
    assert s["predicted"] == 3
    assert s["true_positive_predicted"] == 2  # the optional run is not a false alarm
    assert s["false_positive"] == 1
    assert s["gt_required"] == 2 and s["gt_optional"] == 1
    assert s["gt_detected"] == 1 and s["missed"] == 1
    assert s["precision"] == round(2 / 3, 3)
    assert s["recall"] == 0.5
    assert s["f1"] == round(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 3)


def test_score_events_tolerance_and_undefined_ratios() -> None:
    gt = [Window(10.0, 20.0)]
    assert score_events([Window(21.0, 30.0)], gt, tolerance_s=0.5)["precision"] == 0.0
    assert score_events([Window(21.0, 30.0)], gt, tolerance_s=1.0)["precision"] == 1.0
    empty = score_events([], [], tolerance_s=1.0)
    assert empty["precision"] is None and empty["recall"] is None and empty["f1"] is None
    assert not meets_target(empty)


def test_merge_counts_recomputes_ratios() -> None:
    a = score_events([Window(0, 5)], [Window(0, 5)], tolerance_s=0)
    b = score_events([Window(0, 5)], [Window(10, 15)], tolerance_s=0)
    m = merge_counts([a, b])
    assert m["predicted"] == 2 and m["false_positive"] == 1 and m["gt_required"] == 2 and m["missed"] == 1
    assert m["precision"] == 0.5 and m["recall"] == 0.5
    assert not meets_target(m)
    assert meets_target(merge_counts([a, a]))


def test_score_frames() -> None:
    ts = [0.0, 1.0, 2.0, 3.0]
    s = score_frames(ts, [Window(1.0, 2.0)], [False, True, True, True])
    assert s["pred_on"] == 2 and s["gt_on"] == 3
    assert s["precision"] == 1.0 and s["recall"] == round(2 / 3, 3)


def test_real_crowd_rule_events_match_synthetic_ground_truth() -> None:
    """The evaluator's rule configuration and window extraction, end to end on a scripted count sequence."""
    counts = [0] * 5 + [10] * 8 + [0] * 10 + [10] * 1 + [0] * 10
    ts = [float(t) for t in range(len(counts))]
    rule = build_rules(camera_for(Scenario("s", ("x",), threshold=8), 640, 480))[0]
    transitions = []
    for t, c in zip(ts, counts, strict=True):
        transitions.extend(rule.update(t, _persons(c)))
    transitions.extend(rule.close(ts[-1]))
    pred = predicted_windows(transitions)
    assert pred == [Window(5.0, 12.0)]  # the one-sample blip at 23 s never lasts the 2 s min duration
    gt = gt_windows(ts, counts, 8, min_duration_s=2.0, cooldown_s=5.0)
    s = score_events(pred, gt, tolerance_s=1.0)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)


def test_density_level_windows_start_when_the_level_is_reached() -> None:
    counts = [0] * 3 + [7] * 6 + [12] * 8 + [0] * 12
    ts = [float(t) for t in range(len(counts))]
    rule = build_rules(camera_for(Scenario("d", ("x",), levels=(5, 10, 20)), 640, 480))[0]
    transitions = []
    for t, c in zip(ts, counts, strict=True):
        transitions.extend(rule.update(t, _persons(c)))
    transitions.extend(rule.close(ts[-1]))
    caution = predicted_windows(transitions, "caution")
    warning = predicted_windows(transitions, "warning")
    assert len(caution) == 1 and len(warning) == 1
    assert caution[0].start < warning[0].start <= caution[0].end == warning[0].end
    assert predicted_windows(transitions, "severe") == []


def test_iou_extends_windows_by_one_sample() -> None:
    assert iou(Window(0.0, 0.0), Window(0.0, 0.0), 1.0) == 1.0
    assert iou(Window(0.0, 9.0), Window(5.0, 14.0), 1.0) == 5.0 / 15.0
    assert iou(Window(0.0, 1.0), Window(5.0, 6.0), 1.0) == 0.0


def test_strict_matching_rejects_an_event_that_only_touches_the_truth() -> None:
    gt = [Window(12.0, 17.0), Window(67.0, 79.0)]
    pred = [Window(17.0, 34.0), Window(68.0, 79.0)]  # a late event that starts where the true one ends
    lenient = score_events(pred, gt, tolerance_s=1.0)
    strict = score_events(pred, gt, tolerance_s=1.0, min_iou=0.3)
    assert (lenient["precision"], lenient["recall"]) == (1.0, 1.0)
    assert (strict["precision"], strict["recall"]) == (0.5, 0.5)
    assert strict["false_positive"] == 1 and strict["missed"] == 1


def test_split_file_puts_every_scenario_clip_in_exactly_one_part() -> None:
    split = load_split(DEFAULT_SPLIT)
    clips = {c for sc in SCENARIOS for c in sc.clips}
    assert clips == set(split.tuning) | set(split.validation)
    assert not set(split.tuning) & set(split.validation)
    for sc in SCENARIOS:
        if sc.levels_per_m2 is not None:
            assert all(c in split.calibrations for c in sc.clips), sc.name
    with pytest.raises(KeyError, match="not_a_clip"):
        split.of("not_a_clip")


def test_a_clip_in_both_parts_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps({"tuning": ["a.mp4", "b.mp4"], "validation": ["b.mp4"]}))
    with pytest.raises(ValueError, match=r"\['b.mp4'\] are in both"):
        load_split(bad)


def test_vtest_calibration_gives_the_zone_an_area_of_about_1150_m2() -> None:
    cal = load_split(DEFAULT_SPLIT).calibrations[VTEST_NAME]
    assert 1100 < cal.area_m2 < 1200, cal.area_m2  # the figure written in the split file's method


def test_people_per_m2_levels_on_a_calibrated_zone_give_the_count_levels_events() -> None:
    """Levels of k people over the zone's area, in people/m², open the same events as levels of k people."""
    cal = load_split(DEFAULT_SPLIT).calibrations[VTEST_NAME]
    k = (5, 10, 20)
    per_m2 = tuple((n - 0.25) / cal.area_m2 for n in k)  # a median of two counts can end in .5
    counts = [0] * 3 + [7] * 6 + [12] * 8 + [25] * 4 + [0] * 12
    ts = [float(t) for t in range(len(counts))]
    by_count = _events(build_rules(camera_for(Scenario("c", ("x",), levels=k), 768, 576))[0], ts, counts, y=300.0)
    dense = build_rules(camera_for(Scenario("m", ("x",), levels_per_m2=per_m2), 768, 576, cal))[0]
    by_area = _events(dense, ts, counts, y=300.0)
    for level in ("caution", "warning", "severe"):
        assert predicted_windows(by_area, level) == predicted_windows(by_count, level), level
    assert by_area and all(t.unit == "people/m2" for t in by_area)
    assert "people/m2" in by_area[0].detail


def test_a_people_per_m2_scenario_without_calibration_is_refused() -> None:
    with pytest.raises(ValueError, match="no ground calibration"):
        camera_for(Scenario("m", ("x",), levels_per_m2=(1.0, 2.0, 3.0)), 640, 480)


def test_split_scores_merge_only_the_clips_of_that_part() -> None:
    def per_clip(pred: int, tp: int, gt: int, hit: int) -> dict:
        counts = {
            "predicted": pred,
            "true_positive_predicted": tp,
            "false_positive": pred - tp,
            "gt_required": gt,
            "gt_optional": 0,
            "gt_detected": hit,
            "missed": gt - hit,
        }
        return {**counts, "strict": dict(counts)}

    scen = {
        "s": {
            "threshold": 8,
            "crowd": {"per_clip": {"a": per_clip(2, 1, 1, 1), "b": per_clip(1, 1, 2, 1)}},
        }
    }
    split = Split(("a",), ("b",), {})
    tuning, validation = split_scores(scen, split, "tuning"), split_scores(scen, split, "validation")
    assert tuning["clips"] == ["a"] and validation["clips"] == ["b"]
    assert (tuning["events"]["precision"], tuning["events"]["recall"]) == (0.5, 1.0)
    assert (validation["events"]["precision"], validation["events"]["recall"]) == (1.0, 0.5)


def test_the_gate_keeps_the_last_analysed_detections_for_unchanged_frames() -> None:
    """As the shard does: a skipped sample's rules see the detections of the last analysed one, at its own time."""
    import numpy as np

    still = np.full((36, 64, 3), 90, np.uint8)
    moved = still.copy()
    moved[:, :32] = 200
    frames = [still, still, moved, moved, moved, still]
    ts = [0.0, 1.0, 2.0, 3.0, 4.0, 14.5]
    dets = [_persons(i + 1) for i in range(len(frames))]  # a distinct count per sample
    out, skipped = gate_detections(frames, ts, dets, MotionGate(threshold=2.0, max_skip_s=10.0))
    assert skipped == [False, True, False, True, True, False]
    assert [len(d) for d in out] == [1, 1, 3, 3, 3, 6]
