"""Water-level reader and barrier rule on rendered underpass frames (in memory, no video files)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from actors.analytics.water import HOLD_S, MIN_CONFIDENCE, WaterLevelEstimator, WaterLevelRule
from benchmarks.accuracy.render_water import SCENES, Scene, render_frame
from configs.analytics import Lifecycle
from contracts.events import EventPhase, EventTransition

pytestmark = pytest.mark.unit

DAY = SCENES["day_rise_fall"]  # axis-aligned gauge, daylight
TILTED = SCENES["reflection_ripples"]  # rolled, sheared, perspective; strong reflection and ripples
ANGLED = SCENES["flash_flood"]  # rolled, strong perspective, foam
FPS = DAY.fps


def _read_once(scene: Scene, level_cm: float, index: int = 37) -> tuple[float, float]:
    """Raw reading and confidence of one frame at ``level_cm`` (a fresh estimator: no history)."""
    r = WaterLevelEstimator(scene.gauge_config()).update(index / scene.fps, render_frame(scene, index, level_cm))
    return r.raw_cm, r.confidence


@pytest.mark.parametrize("level_cm", [0.0, 4.0, 12.0, 15.0, 17.5, 26.0, 41.0, 63.0])
def test_reads_axis_aligned_gauge_within_2cm(level_cm: float) -> None:
    raw, conf = _read_once(DAY, level_cm)
    assert abs(raw - level_cm) <= 2.0, (raw, level_cm)
    assert conf >= MIN_CONFIDENCE


@pytest.mark.parametrize("scene", [TILTED, ANGLED], ids=lambda s: s.name)
@pytest.mark.parametrize("level_cm", [3.0, 14.0, 16.0, 33.0])
def test_reads_tilted_gauge_within_2cm(scene: Scene, level_cm: float) -> None:
    cfg = scene.gauge_config()
    assert cfg.bottom[0] != cfg.top[0]  # really not axis aligned
    raw, conf = _read_once(scene, level_cm, index=53)
    assert abs(raw - level_cm) <= 2.0, (raw, level_cm)
    assert conf >= MIN_CONFIDENCE


def test_level_is_median_of_window_and_rate_follows_rise() -> None:
    """A rise of 0.5 cm/s sampled at 1 fps: the level lags by about half the window, the rate is ~30 cm/min."""
    cfg = DAY.gauge_config(median_window=5)
    est = WaterLevelEstimator(cfg)
    readings = []
    for s in range(20):
        truth = 10.0 + 0.5 * s
        readings.append((truth, est.update(float(s), render_frame(DAY, s * FPS, truth))))
    truth, last = readings[-1]
    assert last.accepted and last.level_cm is not None
    assert abs(last.level_cm - (truth - 1.0)) <= 1.5  # median of the last 5 s lags 2 s * 0.5 cm/s
    assert 22.0 <= last.rate_cm_per_min <= 38.0
    assert all(abs(r.raw_cm - t) <= 2.0 for t, r in readings)


def test_blank_frame_is_not_confident() -> None:
    """No step along the line (a covered lens, a grey frame): low confidence, no level."""
    rng = np.random.default_rng(0)
    blank = np.clip(rng.normal(120, 6, (360, 640, 3)), 0, 255).astype(np.uint8)
    r = WaterLevelEstimator(DAY.gauge_config()).update(0.0, blank)
    assert r.confidence < MIN_CONFIDENCE
    assert not r.accepted and r.level_cm is None and math.isinf(r.age_s)


# --------------------------------------------------------------------------- the rule


def _run(rule: WaterLevelRule, scene: Scene, script: list[tuple[float, float | None]]) -> list[EventTransition]:
    """Feed ``(ts, level_cm)`` frames; a level of None feeds a blank (unreadable) frame."""
    rng = np.random.default_rng(1)
    out: list[EventTransition] = []
    for ts, level in script:
        if level is None:
            img = np.clip(rng.normal(90, 5, (*scene.size[::-1], 3)), 0, 255).astype(np.uint8)
        else:
            img = render_frame(scene, round(ts * scene.fps), level)
        out += rule.update_frame(ts, img)
    return out


def _rule(scene: Scene = DAY, **kw: object) -> WaterLevelRule:
    cfg = scene.gauge_config(
        thresholds_cm=[15.0, 30.0],
        median_window=3,
        lifecycle=Lifecycle(min_duration_s=5.0, cooldown_s=6.0),
        **kw,
    )
    return WaterLevelRule("cam-u1", cfg)


def test_rule_opens_after_min_duration_rises_severity_and_closes_after_cooldown() -> None:
    rule = _rule()
    script: list[tuple[float, float | None]] = [(float(t), 10.0) for t in range(5)]
    script += [(float(t), 20.0) for t in range(5, 15)]  # over 15 cm from t=5 (median from t=6)
    script += [(float(t), 36.0) for t in range(15, 20)]  # over the second threshold
    script += [(float(t), 5.0) for t in range(20, 32)]  # receded
    tr = _run(rule, DAY, script)
    phases = [(t.phase, t.severity, t.ts) for t in tr]
    opened = [t for t in tr if t.phase is EventPhase.OPENED]
    assert len(opened) == 1
    o = opened[0]
    assert o.event_type == "water_level" and o.unit == "cm" and o.zone == DAY.gauge_config().name
    assert o.threshold == 15.0 and o.severity == "warning"
    assert 5.0 <= o.started_at <= 7.0 and o.ts - o.started_at >= 5.0, phases
    assert "cm/min" in o.detail
    g = rule.cfg  # the alarm frame boxes the gauge's strip: its end points, widened by half the band each side
    assert o.box == (
        min(g.bottom[0], g.top[0]) - g.band_px / 2,
        min(g.bottom[1], g.top[1]),
        max(g.bottom[0], g.top[0]) + g.band_px / 2,
        max(g.bottom[1], g.top[1]),
    )
    severe = [t for t in tr if t.phase is EventPhase.UPDATED and t.severity == "severe"]
    assert severe and 15.0 <= severe[0].ts <= 18.0, phases
    closed = [t for t in tr if t.phase is EventPhase.CLOSED]
    assert len(closed) == 1 and closed[0].ts - closed[0].ended_at >= 6.0, phases  # type: ignore[operator]
    assert closed[0].peak_value >= 34.0
    assert rule.active_event_id is None


def test_rule_stays_quiet_under_threshold_and_short_spikes() -> None:
    rule = _rule()
    script: list[tuple[float, float | None]] = [(float(t), 12.0) for t in range(8)]
    script += [(float(t), 18.0) for t in range(8, 11)]  # 3 s over: shorter than min_duration
    script += [(float(t), 12.0) for t in range(11, 20)]
    assert _run(rule, DAY, script) == []


def test_unconfident_readings_do_not_open_events() -> None:
    """Gating: the same flooded frames open an event only when their readings are confident."""
    script: list[tuple[float, float | None]] = [(float(t), 25.0) for t in range(12)]
    gated = WaterLevelRule("cam-u1", _rule().cfg, min_confidence=0.999)
    assert _run(gated, DAY, script) == []
    assert gated.last_reading is not None and not gated.last_reading.accepted
    normal = _rule()
    assert [t.phase for t in _run(normal, DAY, script)][:1] == [EventPhase.OPENED]


def test_unreadable_frames_reset_a_pending_event() -> None:
    """Low-confidence frames count as "not flooded" before an event is open: they break min_duration."""
    rule = _rule()
    script: list[tuple[float, float | None]] = []
    for t in range(0, 24):
        script.append((float(t), None if t % 4 == 3 else 25.0))  # never 5 s of confident readings in a row
    assert _run(rule, DAY, script) == []


def test_open_event_holds_through_unreadable_frames_then_closes_on_low_water() -> None:
    rule = _rule()
    script: list[tuple[float, float | None]] = [(float(t), 25.0) for t in range(8)]
    script += [(float(t), None) for t in range(8, 20)]  # 12 s unreadable (longer than the cooldown)
    tr = _run(rule, DAY, script)
    assert [t.phase for t in tr] == [EventPhase.OPENED]
    assert rule.active_event_id is not None  # held: the last confident level still reads 25 cm
    assert rule.last_reading is not None and not rule.last_reading.accepted
    tr = _run(rule, DAY, [(float(t), 4.0) for t in range(20, 30)])
    assert [t.phase for t in tr] == [EventPhase.CLOSED]


def test_open_event_closes_when_the_level_goes_stale() -> None:
    rule = _rule()
    _run(rule, DAY, [(float(t), 25.0) for t in range(8)])
    assert rule.active_event_id is not None
    late = 8.0 + HOLD_S + 1.0
    tr = _run(rule, DAY, [(late + t, None) for t in range(8)])  # unreadable, and the level is stale
    assert [t.phase for t in tr] == [EventPhase.CLOSED]


def test_severity_levels() -> None:
    rule = WaterLevelRule("c", DAY.gauge_config(thresholds_cm=[15.0, 30.0, 50.0, 70.0]))
    assert [rule.severity(x) for x in (10, 15, 29.9, 30, 55, 80)] == [
        None,
        "warning",
        "warning",
        "severe",
        "critical",
        "critical",
    ]


def test_rule_on_tilted_gauge_opens_at_threshold() -> None:
    rule = _rule(TILTED)
    script: list[tuple[float, float | None]] = [(float(t), 8.0 + 1.0 * t) for t in range(20)]  # crosses 15 at t=7
    opened = [t for t in _run(rule, TILTED, script) if t.phase is EventPhase.OPENED]
    assert len(opened) == 1
    # Median of 3 at 1 cm/s lags ~1 s; plus min_duration 5 s.
    assert 7.0 <= opened[0].started_at <= 10.0 and opened[0].ts <= 15.0


def test_scene_truth_and_config_are_consistent() -> None:
    """The renderer's gauge config maps 0 cm and 100 cm to where it draws them."""
    for scene in SCENES.values():
        cfg = scene.gauge_config()
        assert cfg.bottom == pytest.approx(scene.pose.to_image(0.0, 0.0), abs=0.01)
        assert cfg.top == pytest.approx(scene.pose.to_image(0.0, 100.0), abs=0.01)
        mid = scene.pose.to_image(0.0, 50.0)
        assert mid == pytest.approx(((cfg.bottom[0] + cfg.top[0]) / 2, (cfg.bottom[1] + cfg.top[1]) / 2), abs=0.02)
    a = render_frame(DAY, 12, 20.0)
    b = render_frame(dataclasses.replace(DAY), 12, 20.0)
    assert np.array_equal(a, b)  # deterministic
