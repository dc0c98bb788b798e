"""Crowd rule and zone geometry on synthetic detections."""

from __future__ import annotations

import numpy as np
import pytest

from actors.analytics.crowd import CrowdRule, people_in_zone
from actors.analytics.zones import count_people_in_zone, points_in_polygon
from configs.schema import ZoneConfig
from contracts.detector import Detection
from contracts.events import EventPhase

SQUARE = [(0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0)]


def person(x: float, y_foot: float, label: str = "person") -> Detection:
    return Detection(class_id=0, label=label, score=0.9, box=(x - 5, y_foot - 30, x + 5, y_foot))


def people(n: int, inside: bool = True) -> list[Detection]:
    y = 50.0 if inside else 150.0
    return [person(10.0 + i, y) for i in range(n)]


def test_points_in_polygon_square_and_concave() -> None:
    pts = np.array([[50, 50], [150, 50], [0.5, 99.5], [-1, 50]], dtype=float)
    assert points_in_polygon(pts, SQUARE).tolist() == [True, False, True, False]
    # An L shape: the notch at (75, 75) is outside.
    ell = [(0, 0), (100, 0), (100, 50), (50, 50), (50, 100), (0, 100)]
    assert points_in_polygon(np.array([[75, 75], [25, 75], [75, 25]], float), ell).tolist() == [False, True, True]


def test_count_uses_foot_point_and_only_persons() -> None:
    dets = [person(50, 90), person(50, 130), person(50, 60, label="car")]
    # The first box's foot is inside; the second's head is inside but its foot is not.
    assert count_people_in_zone(dets, SQUARE) == 1


def _rule(**kw: float) -> CrowdRule:
    zone = ZoneConfig(
        name="z",
        polygon=SQUARE,
        crowd_threshold_people=int(kw.get("threshold", 3)),
        min_duration_s=kw.get("min_s", 2.0),
        cooldown_s=kw.get("cool_s", 3.0),
    )
    return CrowdRule("cam-1", zone)


def test_event_opens_only_after_min_duration() -> None:
    rule = _rule()
    assert rule.update(0.0, people(3)) == []
    assert rule.update(1.0, people(3)) == []
    opened = rule.update(2.0, people(4))
    assert [t.phase for t in opened] == [EventPhase.OPENED]
    ev = opened[0]
    assert ev.started_at == 0.0 and ev.value == 4 and ev.peak_value == 4 and ev.threshold == 3
    assert ev.box == (5.0, 20.0, 18.0, 50.0)  # around the four people counted (x 10..13, +-5; feet at 50)
    assert ev.detail == "4 people in zone z"


def test_crowd_box_counts_only_people_in_the_zone_and_falls_back_to_the_zone() -> None:
    rule = _rule(threshold=1, min_s=0.0)
    (opened,) = rule.update(0.0, [*people(1), *people(2, inside=False), person(50, 60, label="car")])
    assert opened.box == (5.0, 20.0, 15.0, 50.0)  # the one person inside, not those outside nor the car
    assert people_in_zone([], rule.zone) == (0, (0.0, 0.0, 100.0, 100.0))  # none counted: the zone itself


def test_short_spike_opens_nothing() -> None:
    rule = _rule()
    rule.update(0.0, people(5))
    rule.update(1.0, people(5))
    assert rule.update(1.5, people(1)) == []
    assert rule.update(2.5, people(5)) == []  # pending again from 2.5
    assert rule.active_event_id is None


def test_peak_updates_and_close_after_cooldown() -> None:
    rule = _rule()
    for t in (0.0, 1.0, 2.0):
        opened = rule.update(t, people(3))
    event_id = opened[0].event_id
    upd = rule.update(3.0, people(6))
    assert [(t.phase, t.peak_value) for t in upd] == [(EventPhase.UPDATED, 6)]
    assert rule.update(4.0, people(1)) == []  # cooling starts
    assert rule.update(6.0, people(0)) == []  # 2 s < cooldown 3 s
    closed = rule.update(7.0, people(0))
    assert [t.phase for t in closed] == [EventPhase.CLOSED]
    assert closed[0].event_id == event_id
    assert closed[0].ended_at == 3.0  # last frame over threshold
    assert closed[0].peak_value == 6
    assert rule.active_event_id is None


def test_back_over_threshold_during_cooldown_keeps_one_event() -> None:
    rule = _rule()
    for t in (0.0, 1.0, 2.0):
        rule.update(t, people(3))
    rule.update(3.0, people(0))
    assert rule.update(4.0, people(3)) == []
    assert rule.update(6.5, people(0)) == []
    assert rule.update(9.0, people(0)) == []  # 2.5 s below
    closed = rule.update(9.6, people(0))
    assert closed and closed[0].ended_at == 4.0


def test_out_of_order_results_are_ignored() -> None:
    rule = _rule(min_s=0.0)
    assert rule.update(5.0, people(3))[0].phase is EventPhase.OPENED
    assert rule.update(4.0, people(9)) == []


def test_close_now_closes_open_event_only() -> None:
    rule = _rule(min_s=0.0)
    assert rule.close(1.0) == []
    rule.update(1.0, people(3))
    closed = rule.close(2.0)
    assert [t.phase for t in closed] == [EventPhase.CLOSED]
    assert rule.close(3.0) == []


@pytest.mark.parametrize("n_outside", [5, 50])
def test_people_outside_zone_never_open(n_outside: int) -> None:
    rule = _rule(min_s=0.0)
    assert rule.update(0.0, people(n_outside, inside=False)) == []
