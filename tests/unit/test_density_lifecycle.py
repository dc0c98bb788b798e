"""Ground calibration, crowd density levels and the shared event life cycle."""

from __future__ import annotations

import pytest

from actors.analytics.crowd import CrowdDensityRule
from actors.analytics.events import EventLifecycle
from actors.analytics.zones import GroundPlane, homography
from configs.analytics import CrowdDensityConfig, GroundCalibration, Lifecycle
from configs.schema import ZoneConfig
from contracts.detector import Detection
from contracts.events import EventPhase

# A 10 m x 10 m square of ground seen in perspective: far edge narrower (y=100), near edge wide (y=500).
CAL = GroundCalibration(
    image_points=[(300, 100), (500, 100), (700, 500), (100, 500)],
    ground_points_m=[(0, 10), (10, 10), (10, 0), (0, 0)],
)
ZONE = ZoneConfig(name="plaza", polygon=[(300, 100), (500, 100), (700, 500), (100, 500)], crowd_threshold_people=None)


def people(n: int) -> list[Detection]:
    return [Detection(0, "person", 0.9, (390 + i % 10, 300 - 40, 400 + i % 10, 300)) for i in range(n)]


def test_homography_maps_the_calibration_points_and_area() -> None:
    g = GroundPlane(CAL)
    mapped = g.to_ground(__import__("numpy").asarray(CAL.image_points, float))
    assert mapped == pytest.approx(__import__("numpy").asarray(CAL.ground_points_m, float), abs=1e-6)
    assert g.area_m2(ZONE.polygon) == pytest.approx(100.0, rel=1e-6)
    with pytest.raises(ValueError, match="collinear"):
        homography([(0, 0), (1, 1), (2, 2), (3, 3)], [(0, 0), (1, 0), (1, 1), (0, 1)])


def test_density_levels_on_a_calibrated_zone() -> None:
    cfg = CrowdDensityConfig(window_s=0.1, lifecycle=Lifecycle(min_duration_s=0, cooldown_s=0))
    rule = CrowdDensityRule("cam", ZONE, cfg, GroundPlane(CAL))
    assert rule.update(0.0, people(200)) == []  # 2 people/m2: below caution (3)
    opened = rule.update(1.0, people(320))  # 3.2/m2: caution
    assert [(t.phase, t.severity, t.unit) for t in opened] == [(EventPhase.OPENED, "caution", "people/m2")]
    assert opened[0].value == pytest.approx(3.2)
    up = rule.update(2.0, people(420))  # 4.2/m2: warning
    assert [(t.phase, t.severity) for t in up] == [(EventPhase.UPDATED, "warning")]
    up = rule.update(3.0, people(510))  # 5.1/m2: severe
    assert up[0].severity == "severe" and up[0].peak_value == pytest.approx(5.1)
    assert rule.update(4.0, people(10)) == []  # below caution: cooling starts
    closed = rule.update(5.0, people(10))
    assert [t.phase for t in closed] == [EventPhase.CLOSED] and closed[0].severity == "severe"


def test_density_smoothing_ignores_a_single_spike() -> None:
    cfg = CrowdDensityConfig(window_s=5.0, levels_people=(5, 10, 20), lifecycle=Lifecycle(min_duration_s=0))
    rule = CrowdDensityRule("cam", ZONE, cfg, None)
    for t in range(4):
        assert rule.update(float(t), people(2)) == []
    assert rule.update(4.0, people(30)) == []  # one frame of 30 in a window of 2s: median stays 2
    assert rule.events.active_event_id is None


def test_density_needs_calibration_or_count_levels() -> None:
    with pytest.raises(ValueError, match="calibration or levels_people"):
        CrowdDensityRule("cam", ZONE, CrowdDensityConfig(), None)


def test_lifecycle_rearm_suppresses_flapping() -> None:
    ev = EventLifecycle("cam", "x", "z", Lifecycle(min_duration_s=0, cooldown_s=1, rearm_s=10), unit="u")
    assert ev.update(0.0, True, value=1)[0].phase is EventPhase.OPENED
    ev.update(1.0, False, value=0)
    assert ev.update(2.0, False, value=0)[0].phase is EventPhase.CLOSED
    assert ev.update(3.0, True, value=1) == []  # within rearm_s of the close
    assert ev.update(13.0, True, value=1)[0].phase is EventPhase.OPENED


def test_lifecycle_severity_only_rises_while_open() -> None:
    ev = EventLifecycle("cam", "x", "z", Lifecycle(min_duration_s=0, cooldown_s=5), unit="u")
    ev.update(0.0, True, value=1, severity="warning")
    assert ev.update(1.0, True, value=1, severity="caution") == []
    up = ev.update(2.0, True, value=1, severity="critical")
    assert up and up[0].severity == "critical"
