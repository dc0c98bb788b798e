"""Tracker, schedules, intrusion and loitering rules on synthetic detections (1 fps unless said)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from actors.analytics.intrusion import IntrusionRule, LoiteringRule
from actors.analytics.schedule import Schedule
from actors.analytics.tracker import IouTracker, Track
from configs.analytics import IntrusionConfig, Lifecycle, LoiteringConfig, ScheduleWindow
from configs.schema import ZoneConfig
from contracts.detector import Detection
from contracts.events import EventPhase, EventTransition

pytestmark = pytest.mark.unit

ZONE = [(0.0, 0.0), (400.0, 0.0), (400.0, 400.0), (0.0, 400.0)]
SEOUL = ZoneInfo("Asia/Seoul")


def person(x: float, y_foot: float, label: str = "person", h: float = 100.0) -> Detection:
    """A box of height ``h`` standing at (x, y_foot)."""
    return Detection(
        class_id=0 if label == "person" else 2, label=label, score=0.9, box=(x - 20, y_foot - h, x + 20, y_foot)
    )


def ids(tracks: list[Track], ts: float) -> list[int]:
    return [t.track_id for t in tracks if t.seen_at(ts)]


def phases(transitions: list[EventTransition]) -> list[EventPhase]:
    return [t.phase for t in transitions]


def kst(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=SEOUL).timestamp()


# ----------------------------------------------------------------- tracker


def test_tracker_keeps_id_through_jitter() -> None:
    tr = IouTracker()
    jitter = [0, 4, -5, 3, -2, 5, -4, 1]
    seen = {ids(tr.update(float(t), [person(200 + j, 300 - j)]), float(t))[0] for t, j in enumerate(jitter)}
    assert seen == {1}


def test_tracker_bridges_short_misses_and_drops_old_tracks() -> None:
    tr = IouTracker(max_age_s=3.0)
    tr.update(0.0, [person(200, 300)])
    tr.update(1.0, [person(202, 300)])
    assert [t.track_id for t in tr.update(2.0, [])] == [1]  # coasting, still alive
    assert ids(tr.update(4.0, [person(201, 301)]), 4.0) == [1]  # 3 s gap: bridged
    assert tr.update(8.0, []) == []  # unseen 4 s > max_age
    assert ids(tr.update(9.0, [person(201, 301)]), 9.0) == [2]  # ids are never reused


def test_tracker_follows_walker_at_1fps_without_overlap() -> None:
    # 90 px per frame with 40 px wide boxes: consecutive boxes do not overlap at all.
    tr = IouTracker()
    for k in range(8):
        assert ids(tr.update(float(k), [person(50 + 90 * k, 300)]), float(k)) == [1]
    track = tr.tracks[0]
    assert track.hits == 8 and track.first_seen_ts == 0.0 and track.last_seen_ts == 7.0
    assert track.velocity_px_s[0] == pytest.approx(90, abs=1)
    assert track.predicted_foot(8.0) == pytest.approx((50 + 90 * 8, 300), abs=1)


def test_tracker_follows_walker_through_a_missed_frame() -> None:
    tr = IouTracker()
    for k in (0, 1, 2, 4, 5):  # frame 3 missed: a 180 px jump, predicted from the velocity
        assert ids(tr.update(float(k), [person(50 + 90 * k, 300)]), float(k)) == [1]


def test_two_crossing_people_keep_their_ids() -> None:
    """Two people walking towards each other on nearly the same row pass at 1 fps.

    At the crossing frame their boxes overlap; the velocity prediction keeps each on their
    own side. (Limit: if they stop or turn back while overlapping, ids may swap.)
    """
    tr = IouTracker()
    a_ids, b_ids = set(), set()
    for k in range(9):
        ax, bx = 40 + 80 * k, 680 - 80 * k  # same place at k=4
        tracks = tr.update(float(k), [person(ax, 300), person(bx, 310)])
        for t in tracks:
            assert t.foot[0] == (ax if t.foot[1] == 300 else bx)
            (a_ids if t.foot[1] == 300 else b_ids).add(t.track_id)
    assert len(a_ids) == 1 and len(b_ids) == 1 and a_ids != b_ids


def test_tracks_are_per_class() -> None:
    tr = IouTracker()
    tr.update(0.0, [person(200, 300), person(200, 300, label="car")])
    tracks = tr.update(1.0, [person(201, 300), person(199, 300, label="car")])
    assert sorted((t.label, t.track_id) for t in tracks) == [("car", 2), ("person", 1)]


def test_one_frame_false_positive_is_dropped_and_cannot_snap_onto_later_boxes() -> None:
    tr = IouTracker()
    tr.update(0.0, [person(100, 300)])  # a false positive
    assert tr.update(1.0, []) == []  # missed once while seen once: gone
    assert ids(tr.update(2.0, [person(180, 300)]), 2.0) == [2]


def test_stopped_walker_keeps_track_when_a_false_positive_appears_ahead() -> None:
    tr = IouTracker()
    for k in range(4):
        tr.update(float(k), [person(50 + 90 * k, 300)])
    # They stop at x=320; a false positive appears where they would have been (x=410).
    tracks = tr.update(4.0, [person(322, 300), person(405, 300)])
    assert {round(t.foot[0]): t.track_id for t in tracks if t.seen_at(4.0)}[322] == 1


def test_tracker_ignores_older_frames() -> None:
    tr = IouTracker()
    tr.update(5.0, [person(200, 300)])
    assert tr.update(4.0, [person(600, 300)]) == []
    assert [t.box for t in tr.tracks] == [person(200, 300).box]


@pytest.mark.parametrize("kwargs", [{"max_age_s": 0}, {"iou_threshold": 0}, {"max_center_dist_frac": -1}])
def test_tracker_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        IouTracker(**kwargs)


# ----------------------------------------------------------------- schedule


def test_empty_schedule_is_always_active() -> None:
    s = Schedule([], "Asia/Seoul")
    assert s.always and s.active(0.0) and s.active(kst(2025, 6, 8, 3))


def test_schedule_uses_the_camera_time_zone() -> None:
    office = [ScheduleWindow(days=[0, 1, 2, 3, 4], start="09:00", end="18:00")]
    seoul, utc = Schedule(office, "Asia/Seoul"), Schedule(office, "UTC")
    mon_10_kst = kst(2025, 6, 2, 10)  # Monday 10:00 in Seoul = Monday 01:00 UTC
    assert seoul.active(mon_10_kst) and not utc.active(mon_10_kst)
    mon_19_kst = kst(2025, 6, 2, 19)  # = Monday 10:00 UTC
    assert not seoul.active(mon_19_kst) and utc.active(mon_19_kst)
    assert not seoul.active(kst(2025, 6, 2, 18))  # end is exclusive
    assert seoul.active(kst(2025, 6, 2, 9))  # start is inclusive
    assert not seoul.active(kst(2025, 6, 7, 10))  # Saturday


def test_window_wrapping_midnight_belongs_to_its_start_day() -> None:
    friday_night = Schedule([ScheduleWindow(days=[4], start="22:00", end="06:00")], "Asia/Seoul")
    assert friday_night.active(kst(2025, 6, 6, 23))  # Friday 23:00
    assert friday_night.active(kst(2025, 6, 7, 3))  # Saturday 03:00: still Friday's night
    assert not friday_night.active(kst(2025, 6, 7, 6))  # Saturday 06:00: over
    assert not friday_night.active(kst(2025, 6, 6, 3))  # Friday 03:00 is Thursday's night
    assert not friday_night.active(kst(2025, 6, 7, 23))  # Saturday 23:00


def test_window_until_end_of_day_and_full_day() -> None:
    evening = Schedule([ScheduleWindow(days=[6], start="20:00", end="24:00")], "Asia/Seoul")
    assert evening.active(kst(2025, 6, 8, 23, 59)) and not evening.active(kst(2025, 6, 9, 0, 1))
    whole = Schedule([ScheduleWindow(days=[2], start="00:00", end="00:00")], "Asia/Seoul")
    assert whole.active(kst(2025, 6, 4, 0)) and whole.active(kst(2025, 6, 4, 23, 59))
    assert not whole.active(kst(2025, 6, 5, 0))


def test_unknown_time_zone_is_rejected() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Schedule([], "Mars/Olympus_Mons")


# ----------------------------------------------------------------- intrusion


def _intrusion(min_s: float = 1.0, cool_s: float = 3.0, **cfg: object) -> IntrusionRule:
    zone = ZoneConfig(name="yard", polygon=ZONE, crowd_threshold_people=None)
    config = IntrusionConfig(lifecycle=Lifecycle(min_duration_s=min_s, cooldown_s=cool_s), **cfg)
    return IntrusionRule("cam-1", zone, config, "Asia/Seoul")


def test_intrusion_opens_after_min_duration_and_closes_after_cooldown() -> None:
    rule = _intrusion(min_s=2.0, cool_s=3.0)
    assert rule.update(0.0, [person(100, 200)]) == []
    assert rule.update(1.0, [person(102, 201)]) == []
    opened = rule.update(2.0, [person(101, 199)])
    assert phases(opened) == [EventPhase.OPENED]
    ev = opened[0]
    assert (ev.event_type, ev.zone, ev.severity, ev.unit) == ("intrusion", "yard", "warning", "objects")
    assert ev.started_at == 0.0 and ev.value == 1 and ev.detail == "person #1"
    assert ev.box == (81.0, 99.0, 121.0, 199.0)  # the intruder as seen in the opening frame
    # A second intruder: a new peak.
    upd = rule.update(3.0, [person(100, 200), person(300, 300)])
    assert phases(upd) == [EventPhase.UPDATED] and upd[0].value == 2 and upd[0].detail == "person #1, person #2"
    assert upd[0].box == (80.0, 100.0, 320.0, 300.0)  # both of them
    # Both walk out at 90 px/s; from t=6 both feet are outside: closes a cooldown later.
    for t in (4.0, 5.0, 6.0, 7.0, 8.0):
        y = 200 + 90 * (t - 3)
        assert rule.update(t, [person(100, y), person(300, y + 100)]) == []
    closed = rule.update(9.0, [])
    assert phases(closed) == [EventPhase.CLOSED] and closed[0].ended_at == 5.0
    assert rule.active_event_id is None


def test_intrusion_ignores_other_classes_and_feet_outside() -> None:
    rule = _intrusion(min_s=0.0)
    car = person(200, 200, label="car")
    head_in_feet_out = person(200, 450, h=150)  # box reaches into the zone, foot does not
    for t in range(5):
        assert rule.update(float(t), [car, head_in_feet_out]) == []


def test_intrusion_watches_configured_classes() -> None:
    rule = _intrusion(min_s=0.0, classes=["car", "truck"])
    opened = rule.update(0.0, [person(200, 200), person(100, 100, label="car")])
    assert phases(opened) == [EventPhase.OPENED] and opened[0].detail == "car #1"


def test_one_frame_false_positive_does_not_open_intrusion() -> None:
    rule = _intrusion(min_s=1.0)
    assert rule.update(0.0, [person(200, 200)]) == []
    for t in (1.0, 2.0, 3.0):
        assert rule.update(t, []) == []


def test_missed_detection_does_not_restart_min_duration() -> None:
    rule = _intrusion(min_s=3.0)
    assert rule.update(0.0, [person(200, 200)]) == []
    assert rule.update(1.0, [person(201, 200)]) == []
    assert rule.update(2.0, []) == []  # missed: still counted where last seen
    assert phases(rule.update(3.0, [person(200, 201)])) == [EventPhase.OPENED]


def test_corner_clip_then_miss_does_not_open() -> None:
    rule = _intrusion(min_s=1.0)
    assert rule.update(0.0, [person(-60, 200)]) == []
    assert rule.update(1.0, [person(10, 200)]) == []  # one frame inside the corner ...
    assert rule.update(2.0, []) == []  # ... then missed: not held
    assert rule.update(3.0, [person(150, 470)]) == []


def test_intrusion_is_inert_outside_schedule_and_closes_when_it_ends() -> None:
    nights = [ScheduleWindow(days=[0, 1, 2, 3, 4], start="22:00", end="06:00")]
    rule = _intrusion(min_s=1.0, schedule=nights)
    day = kst(2025, 6, 3, 14)  # Tuesday afternoon: off
    for k in range(5):
        assert rule.update(day + k, [person(200, 200)]) == []
    t0 = kst(2025, 6, 3, 5, 58)  # Tuesday 05:58, in Monday's night
    rule = _intrusion(min_s=1.0, schedule=nights)
    rule.update(t0, [person(200, 200)])
    assert phases(rule.update(t0 + 1, [person(200, 200)])) == [EventPhase.OPENED]
    assert rule.update(t0 + 60, [person(200, 200)]) == []
    closed = rule.update(t0 + 120, [person(200, 200)])  # 06:00: the window is over
    assert phases(closed) == [EventPhase.CLOSED]
    assert rule.update(t0 + 121, [person(200, 200)]) == []


def test_intrusion_ignores_late_frames_and_closes_on_demand() -> None:
    rule = _intrusion(min_s=0.0)
    assert phases(rule.update(5.0, [person(200, 200)])) == [EventPhase.OPENED]
    assert rule.update(4.0, [person(300, 300), person(100, 100)]) == []
    assert phases(rule.close(6.0)) == [EventPhase.CLOSED]
    assert rule.close(7.0) == []


# ----------------------------------------------------------------- loitering


def _loitering(dwell_s: float = 10.0, cool_s: float = 3.0, **cfg: object) -> LoiteringRule:
    zone = ZoneConfig(name="atm", polygon=ZONE, crowd_threshold_people=None)
    config = LoiteringConfig(dwell_s=dwell_s, lifecycle=Lifecycle(min_duration_s=0.0, cooldown_s=cool_s), **cfg)
    return LoiteringRule("cam-1", zone, config, "Asia/Seoul")


def _sway(t: int) -> tuple[float, float]:
    return 200.0 + (3 if t % 2 else -3), 250.0 + (t % 3) - 1


def test_loitering_opens_after_dwell_and_closes_after_leaving() -> None:
    rule = _loitering(dwell_s=10.0, cool_s=3.0)
    events: list[EventTransition] = []
    for t in range(15):
        events += rule.update(float(t), [person(*_sway(t))])
    assert phases(events) == [EventPhase.OPENED]
    ev = events[0]
    assert ev.ts == 10.0 and ev.started_at == 10.0 and ev.value == 10.0 and ev.threshold == 10.0
    assert (ev.event_type, ev.unit, ev.zone) == ("loitering", "s", "atm")
    assert ev.detail == "track 1: 10 s"
    x, y = _sway(10)
    assert ev.box == (x - 20, y - 100, x + 20, y)  # the loiterer as seen in the opening frame
    # Twice the dwell time: one update (the value steps by dwell_s, not every frame).
    for t in range(15, 22):
        events += rule.update(float(t), [person(*_sway(t))])
    assert phases(events) == [EventPhase.OPENED, EventPhase.UPDATED] and events[1].value == 20.0
    # Walks out at 60 px/s: out from t=24; seen out twice (t=25) the stay ends, and the event
    # closes a cooldown later. (An object that vanishes without being seen leaving keeps its
    # stay up to max_gap_s: it may just be hidden.)
    for t in range(22, 29):
        events += rule.update(float(t), [person(200, 250 + 60 * (t - 21))])
    assert phases(events)[-1] is EventPhase.CLOSED and events[-1].ts == 28.0
    assert events[-1].ended_at == 24.0


def test_passer_by_does_not_loiter() -> None:
    rule = _loitering(dwell_s=10.0)
    for t in range(12):  # crosses the zone at 90 px/s: about 4.5 s inside
        assert rule.update(float(t), [person(-150 + 90 * t, 250)]) == []


def test_stay_just_under_dwell_does_not_loiter() -> None:
    rule = _loitering(dwell_s=10.0)
    for t in range(9):
        assert rule.update(float(t), [person(*_sway(t))]) == []
    for t in range(9, 20):
        assert rule.update(float(t), [person(200, 420 + 60 * (t - 8))]) == []


def test_loitering_tolerates_missed_detections_and_a_track_break() -> None:
    rule = _loitering(dwell_s=12.0)
    events: list[EventTransition] = []
    for t in range(16):
        # misses at 3 and 4; then nothing from 6 to 11 (6 s > the tracker's 5 s: a new track)
        dets = [] if t in (3, 4) or 6 <= t <= 11 else [person(*_sway(t))]
        events += rule.update(float(t), dets)
    assert phases(events) == [EventPhase.OPENED]
    assert events[0].ts == 12.0  # dwell counted from t=0 across the new track id
    assert events[0].detail.startswith("track 2: 12 s")


def test_passer_by_hiding_the_loiterer_does_not_take_their_dwell() -> None:
    rule = _loitering(dwell_s=10.0)
    events: list[EventTransition] = []
    for t in range(13):
        loiterer = person(*_sway(t))
        passer_x = -100 + 60 * t  # reaches the loiterer's spot around t=5
        hidden = abs(passer_x - 200) <= 30  # behind the passer-by when they overlap
        dets = [person(passer_x, 270)] if hidden else [loiterer, person(passer_x, 270)]
        events += rule.update(float(t), dets)
    assert phases(events) == [EventPhase.OPENED] and events[0].ts == 10.0
    assert events[0].detail.startswith("track 1: 10 s")


def test_loitering_ignores_other_classes() -> None:
    rule = _loitering(dwell_s=5.0)
    for t in range(12):
        assert rule.update(float(t), [person(200, 250, label="car")]) == []


def test_loitering_is_inert_outside_schedule() -> None:
    nights = [ScheduleWindow(days=[0, 1, 2, 3, 4], start="22:00", end="06:00")]
    rule = _loitering(dwell_s=5.0, schedule=nights)
    sunday_3am = kst(2025, 6, 8, 3)  # Saturday's night: not configured
    for k in range(20):
        assert rule.update(sunday_3am + k, [person(*_sway(k))]) == []
    rule = _loitering(dwell_s=5.0, schedule=nights)
    saturday_3am = kst(2025, 6, 7, 3)  # Friday's night
    events: list[EventTransition] = []
    for k in range(8):
        events += rule.update(saturday_3am + k, [person(*_sway(k))])
    assert phases(events) == [EventPhase.OPENED]
