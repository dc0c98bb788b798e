"""Which rules watch a camera, built from its configuration.

Two kinds of rule: detection rules consume the detector's output for a frame
(:class:`DetectionRule`), frame rules consume the decoded frame itself
(:class:`FrameRule`: water level, fire and smoke, which need pixels, not boxes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from actors.analytics.crowd import CrowdDensityRule, CrowdRule
from actors.analytics.events import EventTransition
from actors.analytics.fire import FireSmokeRule
from actors.analytics.intrusion import IntrusionRule, LoiteringRule
from actors.analytics.water import WaterLevelRule
from actors.analytics.zones import GroundPlane
from configs.schema import CameraConfig
from serve_apps.detector.types import Detection


class DetectionRule(Protocol):
    def update(self, ts: float, detections: Iterable[Detection]) -> list[EventTransition]: ...

    def close(self, ts: float) -> list[EventTransition]: ...


class FrameRule(Protocol):
    def update_frame(self, ts: float, image: np.ndarray) -> list[EventTransition]: ...

    def close(self, ts: float) -> list[EventTransition]: ...


def build_rules(cam: CameraConfig) -> list[DetectionRule]:
    """The detection rules of a camera's zones."""
    ground = GroundPlane(cam.calibration) if cam.calibration is not None else None
    rules: list[DetectionRule] = []
    for zone in cam.zones:
        if zone.crowd_threshold_people is not None:
            rules.append(CrowdRule(cam.id, zone))
        if zone.crowd_density is not None:
            rules.append(CrowdDensityRule(cam.id, zone, zone.crowd_density, ground))
        if zone.intrusion is not None:
            rules.append(IntrusionRule(cam.id, zone, zone.intrusion, cam.timezone))
        if zone.loitering is not None:
            rules.append(LoiteringRule(cam.id, zone, zone.loitering, cam.timezone))
    return rules


def build_frame_rules(cam: CameraConfig) -> list[FrameRule]:
    """The rules that look at a camera's decoded frames."""
    rules: list[FrameRule] = [WaterLevelRule(cam.id, g) for g in cam.water_gauges]
    if cam.fire_smoke is not None:
        rules.append(FireSmokeRule(cam.id, cam.fire_smoke))
    return rules
