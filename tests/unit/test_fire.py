"""Fire and smoke scorer and rule on synthetic frames sampled at 1 fps (the analytics rate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import cv2
import numpy as np
import pytest

from actors.analytics.fire import FireSmokeRule, FireSmokeScorer, FireSmokeScores, FireSmokeTuning
from configs.analytics import FireSmokeConfig, Lifecycle
from contracts.events import EventPhase, EventTransition

pytestmark = pytest.mark.unit

W, H = 320, 240
Frame = Callable[[int], np.ndarray]
NO_FLOW_CHECK = FireSmokeTuning(flow_residual_low=-1.0, flow_residual_high=0.0, cut_max_correlation=-2.0)
"""The scorer without the dense-flow check and the cut test (to show what another check does alone)."""


def textured_background(seed: int = 1) -> np.ndarray:
    """A static, dark, slightly textured scene (a street at dusk)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 40, (H // 8, W // 8, 3), dtype=np.uint8)
    base = cv2.resize(noise, (W, H), interpolation=cv2.INTER_LINEAR)
    return cv2.add(base, np.full((H, W, 3), (30, 40, 30), np.uint8))


def with_sensor_noise(img: np.ndarray, k: int) -> np.ndarray:
    """A few grey levels of noise, different every frame, as a real camera has."""
    noise = np.random.default_rng(1000 + k).integers(-3, 4, img.shape)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def flames(img: np.ndarray, k: int, cx: int, cy: int) -> np.ndarray:
    """Orange-yellow flame tongues around (cx, cy), a new random shape every frame."""
    rng = np.random.default_rng(k)
    out = img.copy()
    for _ in range(14):
        x, y = cx + int(rng.integers(-25, 26)), cy + int(rng.integers(-30, 16))
        axes = (int(rng.integers(4, 12)), int(rng.integers(8, 26)))
        bgr = (int(rng.integers(0, 60)), int(rng.integers(120, 231)), 255)
        cv2.ellipse(out, (x, y), axes, float(rng.integers(-30, 31)), 0, 360, bgr, -1)
    return out


def fire_frame(k: int, cx: int = 160, cy: int = 150) -> np.ndarray:
    return with_sensor_noise(flames(textured_background(), k, cx, cy), k)


def grey_cloud(img: np.ndarray, k: int, radius: float) -> np.ndarray:
    """A soft grey cloud of ``radius`` px centred low in the view, billowing (new blobs every frame)."""
    rng = np.random.default_rng(500 + k)
    alpha = np.zeros((H, W), np.float32)
    shade = np.zeros((H, W), np.float32)
    for _ in range(10):
        x = 160 + rng.normal(0, radius * 0.45)
        y = 160 - radius * 0.3 + rng.normal(0, radius * 0.3)
        r = max(4, int(radius * rng.uniform(0.35, 0.6)))
        cv2.circle(alpha, (int(x), int(y)), r, 1.0, -1)
        cv2.circle(shade, (int(x), int(y)), r, float(rng.uniform(-35, 35)), -1)
    alpha = np.clip(cv2.GaussianBlur(alpha, (0, 0), 6), 0, 0.9)[..., None]
    grey = (165 + cv2.GaussianBlur(shade, (0, 0), 6))[..., None]
    return (img * (1 - alpha) + grey * alpha).astype(np.uint8)


def feed(scorer: FireSmokeScorer, frame: Frame, seconds: int, start: int = 0) -> list[FireSmokeScores]:
    return [scorer.score(float(k), frame(k)) for k in range(start, start + seconds)]


# -- fire ---------------------------------------------------------------------------------------------------------


def test_flickering_orange_blob_on_dark_background_is_fire() -> None:
    scores = feed(FireSmokeScorer(), fire_frame, 8)
    assert scores[0].fire == 0.0  # nothing to compare with yet
    assert all(s.fire > 0.9 for s in scores[2:]), [round(s.fire, 2) for s in scores]
    assert all(s.fire_area_frac > 0.005 for s in scores[1:])
    assert all(s.smoke < 0.1 for s in scores)


def test_static_orange_red_rectangle_is_not_fire() -> None:
    """Flame-coloured (R > G > B, saturated, bright) but steady: a parked car, a sign, a shop front."""
    img = textured_background()
    cv2.rectangle(img, (100, 100), (220, 170), (40, 90, 230), -1)
    scores = feed(FireSmokeScorer(), lambda k: with_sensor_noise(img, k), 10)
    assert max(s.fire for s in scores) < 0.1


def test_orange_car_driving_through_is_not_fire() -> None:
    """A rigid flame-coloured object moving 40 px per sample leaves its cells: no persistence, no flicker."""

    def frame(k: int) -> np.ndarray:
        img = textured_background()
        x = 10 + 40 * k
        cv2.rectangle(img, (x, 120), (x + 50, 150), (40, 110, 240), -1)
        return with_sensor_noise(img, k)

    scores = feed(FireSmokeScorer(), frame, 7)
    assert max(s.fire for s in scores) < 0.2


def test_small_orange_thing_creeping_along_is_not_fire() -> None:
    """A small flame-coloured object moving 4 px per sample stays in its cells and gains redness at one edge while
    losing it at the other, like a flame; its own translation explains the change, so it is a rigid mover."""

    def frame(k: int) -> np.ndarray:
        img = textured_background()
        x = 10 + 4 * k
        cv2.rectangle(img, (x, 120), (x + 6, 140), (40, 110, 240), -1)
        return with_sensor_noise(img, k)

    assert max(s.fire for s in feed(FireSmokeScorer(), frame, 12)) < 0.1
    # Either check alone catches it: the region's own translation, or the dense flow that explains its change.
    flow_only = FireSmokeScorer(tuning=FireSmokeTuning(rigid_check_regions=0))
    assert max(s.fire for s in feed(flow_only, frame, 12)) < 0.1
    rigid_only = FireSmokeScorer(tuning=replace(NO_FLOW_CHECK))
    assert max(s.fire for s in feed(rigid_only, frame, 12)) < 0.1
    unchecked = FireSmokeScorer(tuning=replace(NO_FLOW_CHECK, rigid_check_regions=0))
    assert max(s.fire for s in feed(unchecked, frame, 12)) > 0.5  # what the two checks prevent


@pytest.mark.parametrize("rigid_check", [True, False])
def test_panning_camera_does_not_turn_a_static_sign_into_flicker(rigid_check: bool) -> None:
    """The whole view shifts 6 px per sample (a PTZ pan). The global shift is compensated before comparing, which
    alone (without the per-region rigid-motion check) keeps the small sign from looking like flicker."""
    world = cv2.resize(textured_background(seed=3), (2 * W, H))
    cv2.rectangle(world, (300, 90), (312, 110), (30, 120, 240), -1)

    def frame(k: int) -> np.ndarray:
        return with_sensor_noise(np.ascontiguousarray(world[:, 6 * k : 6 * k + W]), k)

    tuning = replace(NO_FLOW_CHECK) if rigid_check else replace(NO_FLOW_CHECK, rigid_check_regions=0)
    assert max(s.fire for s in feed(FireSmokeScorer(tuning=tuning), frame, 12)) < 0.1
    uncompensated = replace(NO_FLOW_CHECK, rigid_check_regions=0, min_shift_response=2.0)
    assert max(s.fire for s in feed(FireSmokeScorer(tuning=uncompensated), frame, 12)) > 0.5


def test_a_deforming_warm_thing_is_explained_by_its_motion() -> None:
    """A skin-coloured face that turns and talks: it changes shape, not by a translation, but a smooth flow maps
    the old view onto the new one. Flames are unrelated shapes a second apart."""

    def frame(k: int) -> np.ndarray:
        img = textured_background()
        cx, cy = 160 + int(6 * np.sin(k)), 130
        cv2.ellipse(img, (cx, cy), (28 + 3 * (k % 2), 36), 8.0 * np.sin(k / 2), 0, 360, (60, 120, 235), -1)
        cv2.ellipse(img, (cx, cy + 14), (10, 3 + 3 * (k % 3)), 0, 0, 360, (40, 40, 120), -1)  # the mouth
        return with_sensor_noise(img, k)

    assert max(s.fire for s in feed(FireSmokeScorer(), frame, 12)) < 0.2
    unchecked = FireSmokeScorer(tuning=replace(NO_FLOW_CHECK, rigid_check_regions=0))
    assert max(s.fire for s in feed(unchecked, frame, 12)) > 0.5  # what the flow check prevents


def test_cuts_between_views_with_warm_things_are_not_flicker() -> None:
    """Film content (or a camera touring presets): every second another view, each with a lamp and a sign in
    about the same place but of another shade and size, which between views looks like two-way change."""
    views = []
    for seed, (dx, dy), bgr, lift in [
        (3, (0, 0), (40, 110, 240), 20),
        (4, (8, 6), (10, 170, 255), 70),
        (5, (-6, 10), (70, 80, 215), 120),
    ]:
        img = cv2.add(textured_background(seed=seed), np.full((H, W, 3), (lift, lift, lift), np.uint8))
        cv2.rectangle(img, (120 + dx, 100 + dy), (170 + dx, 150 - dy), bgr, -1)
        cv2.circle(img, (200 - dx, 90 + dy), 14 + dy, bgr, -1)
        views.append(img)

    def frame(k: int) -> np.ndarray:
        return with_sensor_noise(views[k % 3], k)

    assert max(s.fire for s in feed(FireSmokeScorer(), frame, 12)) < 0.1
    no_cut_test = FireSmokeScorer(tuning=FireSmokeTuning(cut_max_correlation=-2.0))
    assert max(s.fire for s in feed(no_cut_test, frame, 12)) > 0.5  # what the cut test prevents


def test_something_suddenly_close_to_the_lens_is_not_smoke() -> None:
    """A soft grey blur over a large part of the view out of nothing within a second (a hand, an insect): held
    off; smoke grows from small."""

    def frame(k: int) -> np.ndarray:
        img = textured_background()
        return grey_cloud(img, k, 70.0) if k >= 6 else img

    scores = feed(FireSmokeScorer(), lambda k: with_sensor_noise(frame(k), k), 14)
    assert max(s.smoke for s in scores) < 0.1, [round(s.smoke, 2) for s in scores]
    no_hold = FireSmokeScorer(tuning=FireSmokeTuning(sudden_to_frac=1.0))
    assert max(s.smoke for s in feed(no_hold, lambda k: with_sensor_noise(frame(k), k), 14)) > 0.5


@pytest.mark.parametrize("as_three_channels", [False, True])
def test_grayscale_frames_are_never_fire(as_three_channels: bool) -> None:
    def frame(k: int) -> np.ndarray:
        gray = cv2.cvtColor(fire_frame(k), cv2.COLOR_BGR2GRAY)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if as_three_channels else gray

    scores = feed(FireSmokeScorer(), frame, 8)
    assert all(s.fire == 0.0 and s.fire_area_frac == 0.0 for s in scores)


# -- smoke --------------------------------------------------------------------------------------------------------


def test_grey_growing_billowing_cloud_is_smoke() -> None:
    bg = textured_background()

    def frame(k: int) -> np.ndarray:
        img = bg if k < 5 else grey_cloud(bg, k, radius=20 + 6 * (k - 5))
        return with_sensor_noise(img, k)

    scores = feed(FireSmokeScorer(), frame, 16)
    assert max(s.smoke for s in scores[:5]) == 0.0
    # While small (a few % of the view) it scores under 0.5; past about 5 % and growing it is clearly smoke.
    assert all(s.smoke > 0.8 for s in scores[12:]), [round(s.smoke, 2) for s in scores]
    assert scores[-1].smoke_area_frac > 0.1
    assert max(s.fire for s in scores) < 0.1


def test_static_grey_wall_is_not_smoke() -> None:
    img = textured_background()
    cv2.rectangle(img, (60, 40), (260, 200), (150, 150, 150), -1)
    scores = feed(FireSmokeScorer(), lambda k: with_sensor_noise(img, k), 15)
    assert max(s.smoke for s in scores) < 0.1


def test_grey_object_that_appears_and_stays_still_is_not_smoke() -> None:
    """New against the background (a grey lorry parks) but it does not billow: the churn gate keeps it out."""
    bg = textured_background()
    parked = bg.copy()
    cv2.rectangle(parked, (60, 90), (260, 200), (150, 150, 150), -1)
    scores = feed(FireSmokeScorer(), lambda k: with_sensor_noise(bg if k < 5 else parked, k), 15)
    assert max(s.smoke for s in scores) < 0.2


def test_global_exposure_change_is_not_smoke() -> None:
    """Auto-exposure brightening the whole grey-ish view by a third in one step."""
    img = textured_background()
    cv2.rectangle(img, (0, 0), (W, H // 2), (120, 120, 120), -1)

    def frame(k: int) -> np.ndarray:
        return with_sensor_noise(cv2.convertScaleAbs(img, alpha=1.0 if k < 6 else 1.35), k)

    scores = feed(FireSmokeScorer(), frame, 14)
    assert max(s.smoke for s in scores) < 0.2


def test_grayscale_input_still_scores_smoke() -> None:
    bg = textured_background()

    def frame(k: int) -> np.ndarray:
        img = bg if k < 5 else grey_cloud(bg, k, radius=20 + 6 * (k - 5))
        return cv2.cvtColor(with_sensor_noise(img, k), cv2.COLOR_BGR2GRAY)

    scores = feed(FireSmokeScorer(), frame, 16)
    assert scores[-1].smoke > 0.5
    assert all(s.fire == 0.0 for s in scores)


# -- the rule -----------------------------------------------------------------------------------------------------


def _phases(transitions: list[EventTransition], event_type: str) -> list[tuple[float, EventPhase]]:
    return [(tr.ts, tr.phase) for tr in transitions if tr.event_type == event_type and tr.phase != EventPhase.UPDATED]


def test_rule_opens_after_min_duration_and_closes_after_cooldown() -> None:
    cfg = FireSmokeConfig(lifecycle=Lifecycle(min_duration_s=3.0, cooldown_s=5.0))
    rule = FireSmokeRule("cam-7", cfg)
    quiet = textured_background()
    out: list[EventTransition] = []
    for k in range(30):
        img = fire_frame(k) if 3 <= k < 15 else with_sensor_noise(quiet, k)
        out += rule.update_frame(float(k), img)
    fire = [tr for tr in out if tr.event_type == "fire"]
    opened = [tr for tr in fire if tr.phase is EventPhase.OPENED]
    closed = [tr for tr in fire if tr.phase is EventPhase.CLOSED]
    assert len(opened) == 1 and len(closed) == 1
    ev = opened[0]
    assert ev.ts - ev.started_at >= 3.0  # held min_duration_s before opening
    assert 4.0 <= ev.started_at <= 6.0 and ev.ts <= 9.0  # flagged within seconds of the first flames at t = 3
    assert ev.severity == "critical" and ev.unit == "score" and ev.threshold == cfg.fire_score_threshold
    assert ev.camera_id == "cam-7" and closed[0].event_id == ev.event_id
    assert closed[0].ended_at is not None and 14.0 <= closed[0].ended_at <= 17.0
    assert closed[0].ts - closed[0].ended_at >= 5.0  # absent at least cooldown_s (first absent frame + 5 s)
    assert not [tr for tr in out if tr.event_type == "smoke"]
    assert rule.active_event_ids == {"fire": None, "smoke": None}


def test_rule_smoke_event_is_a_warning() -> None:
    rule = FireSmokeRule("cam-8", FireSmokeConfig(lifecycle=Lifecycle(min_duration_s=2.0, cooldown_s=5.0)))
    bg = textured_background()
    out: list[EventTransition] = []
    for k in range(18):
        img = bg if k < 5 else grey_cloud(bg, k, radius=20 + 6 * (k - 5))
        out += rule.update_frame(float(k), with_sensor_noise(img, k))
    opened = [tr for tr in out if tr.phase is EventPhase.OPENED]
    assert [(tr.event_type, tr.severity) for tr in opened] == [("smoke", "warning")]
    closing = rule.close(20.0)
    assert [(tr.event_type, tr.phase) for tr in closing] == [("smoke", EventPhase.CLOSED)]


def test_roi_excludes_a_fire_outside_it() -> None:
    left_half = [(0.0, 0.0), (150.0, 0.0), (150.0, float(H)), (0.0, float(H))]
    right_half = [(170.0, 0.0), (float(W), 0.0), (float(W), float(H)), (170.0, float(H))]
    results = {}
    for name, roi in (("left", left_half), ("right", right_half)):
        rule = FireSmokeRule("cam-9", FireSmokeConfig(roi=roi))
        out: list[EventTransition] = []
        for k in range(12):
            out += rule.update_frame(float(k), fire_frame(k, cx=250, cy=150))  # flames on the right
        results[name] = [tr.phase for tr in out if tr.event_type == "fire"]
    assert results["left"] == []
    assert EventPhase.OPENED in results["right"]


def test_roi_in_source_pixels_scales_with_a_large_frame() -> None:
    """The ROI polygon is in the camera's pixels, whatever the scorer's own working size."""
    big = [cv2.resize(fire_frame(k, cx=250, cy=150), (4 * W, 4 * H)) for k in range(8)]
    inside = FireSmokeScorer([(4 * 170.0, 0.0), (4.0 * W, 0.0), (4.0 * W, 4.0 * H), (4 * 170.0, 4.0 * H)])
    outside = FireSmokeScorer([(0.0, 0.0), (4 * 150.0, 0.0), (4 * 150.0, 4.0 * H), (0.0, 4.0 * H)])
    assert [inside.score(float(k), f) for k, f in enumerate(big)][-1].fire > 0.9
    assert [outside.score(float(k), f) for k, f in enumerate(big)][-1].fire == 0.0


def _inside(box: tuple[float, float, float, float] | None, outer: tuple[float, float, float, float]) -> bool:
    return box is not None and outer[0] <= box[0] < box[2] <= outer[2] and outer[1] <= box[1] < box[3] <= outer[3]


def test_the_fire_box_is_around_the_flames_in_source_pixels() -> None:
    """Flames drawn within (cx +- 51, cy - 56 .. cy + 41) at 320x240, the frame scaled 4x: the box is there."""
    scorer = FireSmokeScorer()
    scores = [scorer.score(float(k), cv2.resize(fire_frame(k, cx=250, cy=150), (4 * W, 4 * H))) for k in range(8)]
    assert scores[0].fire_box is None  # nothing counted yet
    margin = 4 * 8  # one work cell
    around = (4 * (250 - 51) - margin, 4 * (150 - 56) - margin, 4 * (250 + 51) + margin, 4 * (150 + 41) + margin)
    for s in scores[2:]:
        assert _inside(s.fire_box, around), (s.fire_box, around)
        x1, y1, x2, y2 = s.fire_box  # type: ignore[misc]
        assert (x2 - x1) * (y2 - y1) >= 0.1 * (around[2] - around[0]) * (around[3] - around[1])  # not a speck
    assert all(s.smoke_box is None for s in scores)


def test_the_smoke_box_is_around_the_cloud() -> None:
    bg = textured_background()

    def frame(k: int) -> np.ndarray:
        img = bg if k < 5 else grey_cloud(bg, k, radius=20 + 6 * (k - 5))
        return with_sensor_noise(img, k)

    last = feed(FireSmokeScorer(), frame, 16)[-1]
    assert last.smoke > 0.8
    assert last.smoke_box is not None
    x1, y1, x2, y2 = last.smoke_box
    assert x1 < 160 < x2 and y1 < 140 < y2  # the cloud's centre (160, 160 - 0.3 r)
    assert (x2 - x1) * (y2 - y1) < 0.9 * W * H  # the cloud, not the whole view


def test_the_opened_fire_event_carries_the_flame_box() -> None:
    rule = FireSmokeRule("cam-7", FireSmokeConfig(lifecycle=Lifecycle(min_duration_s=2.0, cooldown_s=3.0)))
    quiet = textured_background()
    out: list[EventTransition] = []
    for k in range(20):
        img = fire_frame(k, cx=80, cy=120) if 3 <= k < 10 else with_sensor_noise(quiet, k)
        out += rule.update_frame(float(k), img)
    (opened,) = [tr for tr in out if tr.phase is EventPhase.OPENED]
    assert _inside(opened.box, (80 - 51 - 8, 120 - 56 - 8, 80 + 51 + 8, 120 + 41 + 8)), opened.box
    (closed,) = [tr for tr in out if tr.phase is EventPhase.CLOSED]
    assert closed.box is None


def test_disabled_cues_emit_nothing() -> None:
    rule = FireSmokeRule("cam-1", FireSmokeConfig(fire=False, smoke=False))
    out = [tr for k in range(10) for tr in rule.update_frame(float(k), fire_frame(k))]
    assert out == []
    assert rule.last_scores is not None and rule.last_scores.fire == 0.0


def test_two_fps_input_behaves_like_one_fps() -> None:
    """Comparisons are made with the sample about a second earlier, so doubling the rate changes little."""
    scorer = FireSmokeScorer()
    scores = [scorer.score(k / 2, fire_frame(k)) for k in range(16)]
    assert all(s.fire > 0.9 for s in scores[5:])
    img = textured_background()
    cv2.rectangle(img, (100, 100), (220, 170), (40, 90, 230), -1)
    scorer = FireSmokeScorer()
    assert max(scorer.score(k / 2, with_sensor_noise(img, k)).fire for k in range(16)) < 0.1


def test_repeated_or_late_frames_are_ignored_and_a_long_gap_restarts() -> None:
    scorer = FireSmokeScorer()
    for k in range(6):
        last = scorer.score(float(k), fire_frame(k))
    assert scorer.score(5.0, fire_frame(99)) is last
    assert scorer.score(2.0, fire_frame(98)) is last
    after_gap = scorer.score(60.0, fire_frame(6))
    assert after_gap.fire == 0.0  # the past is stale: start over


def test_rejects_unsupported_frames() -> None:
    with pytest.raises(ValueError, match="8-bit"):
        FireSmokeScorer().score(0.0, np.zeros((10, 10, 3), np.float32))


def test_roi_outside_the_frame_scores_nothing() -> None:
    scorer = FireSmokeScorer([(1000.0, 1000.0), (1100.0, 1000.0), (1100.0, 1100.0)])
    scores = feed(scorer, fire_frame, 6)
    assert all(s.fire == 0.0 and s.smoke == 0.0 for s in scores)
