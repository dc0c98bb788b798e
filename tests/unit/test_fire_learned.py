"""Fire and smoke from a learned detector's detections (source learned / fused), and the configuration door to it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from actors.analytics.events import EventLifecycle
from actors.analytics.fire import FireSmokeRule, FireSmokeScorer, learned_scores
from actors.analytics.registry import build_camera_rules, build_frame_rules, build_rules
from cluster.models import fire_smoke_model_problems
from configs.analytics import FireSmokeConfig, LearnedFireSmokeConfig, Lifecycle
from configs.schema import AppConfig, CameraConfig
from contracts.detector import Detection
from contracts.events import EventPhase, EventTransition
from storage.model_store import ModelManifest
from tests.unit.test_fire import fire_frame, textured_background, with_sensor_noise

W, H = 320, 240
FAST = Lifecycle(min_duration_s=2.0, cooldown_s=3.0)
FIRE_MODEL = {"model_name": "fire_smoke_yolox", "model_version": "1"}


def det(label: str, score: float, box: tuple[float, float, float, float] = (100, 100, 140, 160)) -> Detection:
    return Detection(class_id=0, label=label, score=score, box=box)


def phases(out: list[EventTransition], event_type: str) -> list[tuple[float, EventPhase]]:
    return [(t.ts, t.phase) for t in out if t.event_type == event_type and t.phase is not EventPhase.UPDATED]


def quiet(k: int):
    return with_sensor_noise(textured_background(), k)


# -- learned ------------------------------------------------------------------------------------------------------


def test_learned_detections_open_and_close_fire_without_running_the_classic_scorer() -> None:
    rule = FireSmokeRule("cam-f", FireSmokeConfig(source="learned", lifecycle=FAST))
    assert rule.scorer is None  # no classic work at all
    out: list[EventTransition] = []
    for k in range(16):
        dets = [det("fire", 0.83), det("person", 0.9)] if 3 <= k < 8 else [det("person", 0.9)]
        out += rule.update(float(k), dets)
        out += rule.update_frame(float(k), fire_frame(k))  # pixels are ignored: flames here change nothing
    assert phases(out, "fire") == [(5.0, EventPhase.OPENED), (11.0, EventPhase.CLOSED)]  # off at 8, + 3 s
    opened = next(t for t in out if t.phase is EventPhase.OPENED)
    assert opened.started_at == 3.0 and opened.value == 0.83 and opened.severity == "critical"
    assert opened.detail == "learned detector: fire 0.83"
    assert opened.threshold == 0.5 and opened.unit == "score"
    assert phases(out, "smoke") == []
    assert rule.last_scores is None


def test_learned_smoke_labels_min_score_and_other_fire_label() -> None:
    cfg = FireSmokeConfig(
        source="learned", lifecycle=FAST, learned=LearnedFireSmokeConfig(smoke_labels=["smoke", "haze"], min_score=0.6)
    )
    rule = FireSmokeRule("cam-s", cfg)
    out: list[EventTransition] = []
    for k in range(6):
        # 'flame' counts as fire but scores under min_score; 'haze' counts as smoke.
        out += rule.update(float(k), [det("flame", 0.55), det("haze", 0.7)])
    assert phases(out, "fire") == []
    assert phases(out, "smoke") == [(2.0, EventPhase.OPENED)]
    assert next(t for t in out if t.event_type == "smoke").detail == "learned detector: haze 0.70"
    s = learned_scores(0.0, [det("flame", 0.65), det("fire", 0.61)], cfg.learned)  # type: ignore[arg-type]
    assert (s.fire, s.fire_label, s.smoke, s.smoke_label) == (0.65, "flame", 0.0, None)


def test_learned_detections_outside_the_roi_do_not_count() -> None:
    left = [(0.0, 0.0), (150.0, 0.0), (150.0, float(H)), (0.0, float(H))]
    cfg = FireSmokeConfig(source="learned", lifecycle=FAST, roi=left)
    # Box centres: (120, 130) inside, (250, 130) outside; the box reaching into the ROI does not make it count.
    inside, outside = det("fire", 0.9, (100, 100, 140, 160)), det("fire", 0.95, (140, 100, 360, 160))
    s = learned_scores(0.0, [inside, outside], cfg.learned, cfg.roi)  # type: ignore[arg-type]
    assert s.fire == 0.9
    rule = FireSmokeRule("cam-r", cfg)
    out = [t for k in range(8) for t in rule.update(float(k), [outside])]
    assert out == []
    rule = FireSmokeRule("cam-r", cfg)
    out = [t for k in range(8) for t in rule.update(float(k), [inside])]
    assert phases(out, "fire") == [(2.0, EventPhase.OPENED)]


def test_late_learned_results_are_ignored() -> None:
    rule = FireSmokeRule("cam-l", FireSmokeConfig(source="learned", lifecycle=FAST))
    rule.update(5.0, [det("fire", 0.9)])
    assert rule.update(4.0, [det("smoke", 0.9)]) == []
    assert rule.last_learned is not None and rule.last_learned.ts == 5.0 and rule.last_learned.smoke == 0.0


# -- fused --------------------------------------------------------------------------------------------------------


def fused(max_age_s: float = 3.0, lifecycle: Lifecycle = FAST) -> FireSmokeRule:
    return FireSmokeRule(
        "cam-u",
        FireSmokeConfig(source="fused", lifecycle=lifecycle, learned=LearnedFireSmokeConfig(max_age_s=max_age_s)),
    )


def test_fused_opens_from_the_classic_cues_alone() -> None:
    rule = fused()
    out: list[EventTransition] = []
    for k in range(12):
        out += rule.update_frame(float(k), fire_frame(k) if k >= 2 else quiet(k))
        out += rule.update(float(k), [det("person", 0.9)])  # the detector sees no fire
    opened = [t for t in out if t.phase is EventPhase.OPENED]
    assert [t.event_type for t in opened] == ["fire"]
    assert opened[0].detail.startswith("flickering flame over")


def test_fused_opens_from_the_learned_detector_alone_one_event_when_both_see_it() -> None:
    rule = fused()
    out: list[EventTransition] = []
    for k in range(10):
        out += rule.update_frame(float(k), quiet(k))  # the classic cues see nothing
        out += rule.update(float(k), [det("fire", 0.8)])  # the frame's detections come back after it
    # Frame k uses the detections of frame k - 1: on from t = 1, open at t = 3.
    assert phases(out, "fire") == [(3.0, EventPhase.OPENED)]
    assert next(t for t in out if t.phase is EventPhase.OPENED).detail == "learned detector: fire 0.80"

    rule = fused()
    out = []
    for k in range(12):
        out += rule.update_frame(float(k), fire_frame(k))
        out += rule.update(float(k), [det("fire", 0.6)])
    assert len([t for t in out if t.phase is EventPhase.OPENED]) == 1  # never a second fire event
    assert rule.update(20.0, [det("fire", 0.9)]) == []  # fused: only frames drive the events


def test_fused_ignores_a_learned_score_older_than_max_age() -> None:
    rule = fused(max_age_s=3.0, lifecycle=Lifecycle(min_duration_s=0.0, cooldown_s=2.0))
    rule.update(0.0, [det("fire", 0.9)])  # then the detector goes silent
    out = [t for k in range(1, 12) for t in rule.update_frame(float(k), quiet(k))]
    # Used at t = 1, 2, 3 (at most 3 s old), ignored from t = 4: closed 2 s later.
    assert phases(out, "fire") == [(1.0, EventPhase.OPENED), (6.0, EventPhase.CLOSED)]
    assert next(t for t in out if t.phase is EventPhase.CLOSED).ended_at == 3.0


def test_a_fused_rule_is_one_object_in_both_lists_and_closes_once() -> None:
    cam = CameraConfig(id="cam-b", url="x.mp4", purpose="fire", fire_smoke=FireSmokeConfig(source="fused"))
    detection, frame = build_camera_rules(cam)
    assert len(detection) == 1 and len(frame) == 1 and detection[0] is frame[0]
    rule = frame[0]
    assert isinstance(rule, FireSmokeRule)
    rule.update(0.0, [det("fire", 0.9)])
    for k in range(1, 4):
        rule.update_frame(float(k), quiet(k))
    assert rule.active_event_ids["fire"] is not None
    closing = [t for r in [*detection, *frame] for t in r.close(4.0)]  # as a shard removing the camera does
    assert [(t.event_type, t.phase) for t in closing] == [("fire", EventPhase.CLOSED)]


def test_build_lists_by_source() -> None:
    def cam(source: str) -> CameraConfig:
        return CameraConfig(id="c", url="x.mp4", fire_smoke=FireSmokeConfig(source=source))  # type: ignore[arg-type]

    classic, learned = build_camera_rules(cam("classic")), build_camera_rules(cam("learned"))
    assert (len(classic.detection), len(classic.frame)) == (0, 1)
    assert (len(learned.detection), len(learned.frame)) == (1, 0)
    assert len(build_rules(cam("learned"))) == 1 and build_frame_rules(cam("learned")) == []
    assert build_rules(cam("classic")) == [] and len(build_frame_rules(cam("classic"))) == 1


# -- classic unchanged --------------------------------------------------------------------------------------------


def _reference_classic(camera_id: str, cfg: FireSmokeConfig, frames: list) -> list[EventTransition]:
    """The classic rule as it was before the learned source: scorer + two life cycles, nothing else."""
    scorer = FireSmokeScorer(cfg.roi, fire=cfg.fire, smoke=cfg.smoke)
    fire = EventLifecycle(camera_id, "fire", None, cfg.lifecycle, unit="score")
    smoke = EventLifecycle(camera_id, "smoke", None, cfg.lifecycle, unit="score")
    out: list[EventTransition] = []
    for ts, img in frames:
        s = scorer.score(ts, img)
        thr = cfg.fire_score_threshold
        detail = f"flickering flame over {s.fire_area_frac:.2%} of the view"
        out += fire.update(ts, s.fire >= thr, value=round(s.fire, 3), severity="critical", threshold=thr, detail=detail)
        thr = cfg.smoke_score_threshold
        detail = f"smoke region over {s.smoke_area_frac:.1%} of the view"
        out += smoke.update(
            ts, s.smoke >= thr, value=round(s.smoke, 3), severity="warning", threshold=thr, detail=detail
        )
    return out + fire.close(36.0) + smoke.close(36.0)


def test_classic_default_events_are_unchanged() -> None:
    """The scenario of test_fire's open/close test: the rule's events equal the pre-learned rule's, field by field."""
    cfg = FireSmokeConfig(lifecycle=Lifecycle(min_duration_s=3.0, cooldown_s=5.0))
    assert cfg.source == "classic" and cfg.learned is None
    frames = [(float(k), fire_frame(k) if 3 <= k < 15 or k >= 27 else quiet(k)) for k in range(36)]
    (rule,) = build_camera_rules(CameraConfig(id="cam-7", url="x.mp4", fire_smoke=cfg)).frame
    out: list[EventTransition] = []
    for ts, img in frames:
        out += rule.update_frame(ts, img)
        out += rule.update(ts, [det("fire", 0.99)])  # detections never reach a classic rule
    out += rule.close(36.0)  # the second fire is still open
    ref = _reference_classic("cam-7", cfg, frames)

    def strip(ts: list[EventTransition]) -> list[dict]:
        # The box (where the alarm frame is drawn) came after the pre-learned rule; it is checked in test_fire.
        return [{k: v for k, v in dataclasses.asdict(t).items() if k not in ("event_id", "box")} for t in ts]

    assert [t.phase for t in out].count(EventPhase.OPENED) == 2 and out[-1].ts == 36.0
    assert strip(out) == strip(ref)


# -- configuration ------------------------------------------------------------------------------------------------


def test_learned_settings_default_for_learned_and_fused_and_are_refused_for_classic() -> None:
    assert FireSmokeConfig(source="fused").learned == LearnedFireSmokeConfig()
    assert FireSmokeConfig.model_validate({"source": "learned"}).learned == LearnedFireSmokeConfig()
    with pytest.raises(ValidationError, match="learned settings are given but source is 'classic'"):
        FireSmokeConfig.model_validate({"learned": {"min_score": 0.5}})


@pytest.mark.parametrize(
    ("learned", "message"),
    [
        ({"fire_label": ["fire"]}, "fire_label"),
        ({"fire_labels": []}, "fire_labels is empty"),
        ({"smoke_labels": ["smoke", " "]}, r"smoke_labels\[1\] ' ' is blank"),
        ({"fire_labels": ["fire", "flame", "fire"]}, "fire_labels lists 'fire' more than once"),
        ({"fire_labels": ["fire", "smoke"]}, "'smoke' is in both fire_labels and smoke_labels"),
        ({"max_age_s": 0}, "max_age_s"),
    ],
)
def test_bad_learned_settings_name_the_value(learned: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FireSmokeConfig.model_validate({"source": "learned", "learned": learned})


def test_unknown_source_is_named() -> None:
    with pytest.raises(ValidationError, match="lerned"):
        FireSmokeConfig.model_validate({"source": "lerned"})


def test_fused_max_age_shorter_than_the_sampling_interval_is_refused() -> None:
    fs = {"source": "fused", "learned": {"max_age_s": 0.8}}
    with pytest.raises(ValidationError, match=r"max_age_s 0.8 is shorter than the sampling interval 1 s"):
        CameraConfig.model_validate({"id": "c", "url": "x.mp4", "fire_smoke": fs})
    CameraConfig.model_validate({"id": "c", "url": "x.mp4", "analytics_fps": 2, "fire_smoke": fs})


def _app(cameras: list[dict], **extra: object) -> AppConfig:
    return AppConfig.model_validate({"cameras": cameras, **extra})


FIRE_CAM = {"id": "cam-fire-01", "url": "x.mp4", "purpose": "fire", "fire_smoke": {"source": "learned"}}


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({}, "the default detector \\(no purpose_detectors.fire\\): 'yolox_nano' is the stock COCO detector"),
        (
            {"detector": {"model_name": "yolox_nano", "model_version": "1"}},
            "'yolox_nano' is the stock COCO detector",
        ),
        (
            {"purpose_detectors": {"fire": {"model_name": "person_lwpd", "model_version": "1"}}},
            "purpose_detectors.fire: 'person_lwpd' is the stock person detector",
        ),
        (
            {"purpose_detectors": {"fire": {"model_name": "fire_smoke_yolox"}}},
            "'fire_smoke_yolox' is loaded from models_dir without model_version",
        ),
    ],
)
def test_learned_source_with_a_detector_without_fire_classes_is_refused(extra: dict, why: str) -> None:
    with pytest.raises(ValidationError) as info:
        _app([FIRE_CAM], **extra)
    text = str(info.value)
    assert "camera 'cam-fire-01'" in text and "route purpose_detectors.fire to it" in text
    assert re.search(why, text), text


def test_learned_source_routed_to_a_registry_fire_model_is_accepted() -> None:
    cfg = _app([FIRE_CAM, {"id": "cam-street", "url": "y.mp4"}], purpose_detectors={"fire": FIRE_MODEL})
    assert cfg.detector_for("fire").model_name == "fire_smoke_yolox"
    _app([{**FIRE_CAM, "fire_smoke": {"source": "classic"}}])  # classic needs no detector at all


def _manifest(classes: list[str]) -> ModelManifest:
    return ModelManifest(
        name="fire_smoke_yolox",
        version="1",
        format="onnx",
        file_name="m.onnx",
        input_size=416,
        classes=classes,
        sha256="0" * 64,
        size_bytes=1,
        licence="Apache-2.0",
        created_at="2025-01-01T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("source", "smoke", "classes", "refused"),
    [
        ("learned", True, ["fire", "smoke"], None),
        ("learned", True, ["person", "car"], "fire_labels ['fire', 'flame']; smoke_labels ['smoke']"),
        ("learned", True, ["fire"], "none of smoke_labels ['smoke'] among its classes [fire]"),
        ("learned", False, ["fire"], None),
        ("fused", True, ["fire"], None),
        ("fused", True, ["person"], "fire_labels"),
    ],
)
def test_registry_model_classes_are_checked_at_start(
    source: str, smoke: bool, classes: list[str], refused: str | None
) -> None:
    cam = {**FIRE_CAM, "analytics_fps": 1, "fire_smoke": {"source": source, "smoke": smoke}}
    cfg = _app([cam], purpose_detectors={"fire": FIRE_MODEL})
    asked: list[str] = []

    def get_manifest(ref: str) -> ModelManifest:
        asked.append(ref)
        return _manifest(classes)

    problems = fire_smoke_model_problems(cfg, get_manifest)
    assert asked == ["fire_smoke_yolox@1"]
    if refused is None:
        assert problems == []
    else:
        assert len(problems) == 1 and "camera 'cam-fire-01'" in problems[0] and refused in problems[0], problems


def test_models_push_takes_class_names(tmp_path: Path) -> None:
    from cluster.cli import build_parser
    from cluster.models import push_model
    from serve_apps.detector.onnx_runner import ModelLoadError
    from tests.conftest import MODELS_DIR

    args = build_parser().parse_args(
        ["models", "push", "m.onnx", "--name", "f", "--version", "1", "--classes", "fire, smoke"]
    )
    assert args.classes == ["fire", "smoke"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["models", "push", "m.onnx", "--name", "f", "--version", "1", "--classes", "fire,,x"])

    model = MODELS_DIR / "person_lwpd" / "person_lwpd.onnx"
    if not model.is_file():
        pytest.skip(f"{model} not present")

    class Store:
        def push(self, file: Path, **kw: object) -> dict:
            return kw

    pushed = push_model(Store(), model, name="smoke_only", version="1", classes=["smoke"])  # type: ignore[arg-type]
    assert pushed["classes"] == ["smoke"]  # type: ignore[index]
    with pytest.raises(ModelLoadError, match="2 class names given for a model with 1 classes"):
        push_model(Store(), model, name="f", version="1", classes=["fire", "smoke"])  # type: ignore[arg-type]
