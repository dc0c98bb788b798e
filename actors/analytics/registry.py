"""Which rules watch a camera, built from its configuration.

Two kinds of rule: detection rules consume the detector's output for a frame
(:class:`DetectionRule`), frame rules consume the decoded frame itself
(:class:`FrameRule`: water level, fire and smoke, which need pixels, not boxes).
A fire/smoke rule fed by a learned detector is a detection rule too: :func:`build_camera_rules`
puts the same instance in both lists (``fused``) or only in the detection list (``learned``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

import numpy as np

from actors.analytics.crowd import CrowdDensityRule, CrowdRule
from actors.analytics.fire import FireSmokeRule
from actors.analytics.intrusion import IntrusionRule, LoiteringRule
from actors.analytics.water import WaterLevelRule
from actors.analytics.zones import GroundPlane
from configs.schema import CameraConfig
from contracts.detector import Detection
from contracts.events import EventTransition


class DetectionRule(Protocol):
    def update(self, ts: float, detections: Iterable[Detection]) -> list[EventTransition]: ...

    def close(self, ts: float) -> list[EventTransition]: ...


class FrameRule(Protocol):
    def update_frame(self, ts: float, image: np.ndarray) -> list[EventTransition]: ...

    def close(self, ts: float) -> list[EventTransition]: ...


class CameraRules(NamedTuple):
    """A camera's rules, by what feeds them (unpacks as ``detection, frame``).

    One rule object may be in both lists (a fused fire/smoke rule): close each distinct object once, or rely on
    ``close`` being idempotent, as every rule's is.
    """

    detection: list[DetectionRule]
    frame: list[FrameRule]


def build_camera_rules(cam: CameraConfig) -> CameraRules:
    """All the rules of a camera, each built once."""
    ground = GroundPlane(cam.calibration) if cam.calibration is not None else None
    detection: list[DetectionRule] = []
    for zone in cam.zones:
        if zone.crowd_threshold_people is not None:
            detection.append(CrowdRule(cam.id, zone))
        if zone.crowd_density is not None:
            detection.append(CrowdDensityRule(cam.id, zone, zone.crowd_density, ground))
        if zone.intrusion is not None:
            detection.append(IntrusionRule(cam.id, zone, zone.intrusion, cam.timezone))
        if zone.loitering is not None:
            detection.append(LoiteringRule(cam.id, zone, zone.loitering, cam.timezone))
    frame: list[FrameRule] = [WaterLevelRule(cam.id, g) for g in cam.water_gauges]
    if cam.fire_smoke is not None:
        fire = FireSmokeRule(cam.id, cam.fire_smoke)
        if fire.uses_detections:
            detection.append(fire)
        if fire.uses_frames:
            frame.append(fire)
    return CameraRules(detection, frame)


def build_rules(cam: CameraConfig) -> list[DetectionRule]:
    """The detection rules of a camera (a learned fire/smoke rule included).

    Built afresh on each call: a caller that also needs the frame rules uses :func:`build_camera_rules`, so that a
    fused fire/smoke rule is one object fed by both.
    """
    return build_camera_rules(cam).detection


def build_frame_rules(cam: CameraConfig) -> list[FrameRule]:
    """The rules that look at a camera's decoded frames (built afresh, see :func:`build_rules`)."""
    return build_camera_rules(cam).frame
