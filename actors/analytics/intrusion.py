"""Intrusion and loitering: tracked objects of chosen classes inside a zone, on a schedule.

Both rules follow KISA's intelligent-CCTV definitions: *intrusion* is an object of a watched
class entering a forbidden area; *loitering* is one object staying in an area longer than a
set time. Both are judged on the object's foot point (bottom centre of its box), because a
zone is drawn on the ground: a person standing behind a fence with their head over it has
not intruded.

Detections come at 1-2 fps with misses, jitter and the odd false positive, so both rules sit
on an :class:`~actors.analytics.tracker.IouTracker`:

* an intruder seen in the zone in at least two frames in a row and then missed still counts
  where it was last seen while its track lives, so a missed detection does not restart
  ``min_duration_s``; a dwell time survives gaps up to ``max_gap_s``;
* an object seen in the zone in a single frame counts only in that frame, so a one-frame
  false positive -- also one that took over a real object's track -- or a walker clipping a
  corner of the zone and then missed cannot hold a condition on its own. (Counting a missed
  track where its velocity takes it was tried: it rescues a few short intrusions at a 20 %
  miss rate and opens events for false positives that took a track over, so it is not done.)

Outside the schedule a rule is inert: it closes an open event and opens none. It keeps
tracking, so a person already loitering when the schedule starts is judged on their whole
stay, not from the schedule's start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from actors.analytics.events import EventLifecycle, union_box
from actors.analytics.schedule import Schedule
from actors.analytics.tracker import IouTracker, Track
from actors.analytics.zones import points_in_polygon
from configs.analytics import IntrusionConfig, LoiteringConfig
from configs.schema import ZoneConfig
from contracts.detector import Detection
from contracts.events import EventTransition

CONFIRMED_IN_ZONE = 2
"""In-zone detections in a row after which a missed track still counts as in the zone."""
REID_MIN_SIGHTINGS = 3
"""In-zone sightings a lost stay needs to be taken over (two false positives in a row happen)."""
REID_MAX_SPEED_HEIGHTS_S = 0.5
"""A lost stay is taken over by a new track only if its object was slower than this when last
seen (box heights per second; walking is ~0.8): a walker who vanishes has walked on, and a
later passer-by at the same place is someone else."""
LEFT_AFTER_OUT = 2
"""Out-of-zone detections in a row of a track that end its stay (one may be jitter at the edge)."""


def _speed_heights_s(track: Track) -> float:
    height = max(track.box[3] - track.box[1], 1.0)
    return math.hypot(*track.velocity_px_s) / height


def _feet_in_zone(tracks: list[Track], polygon: list[tuple[float, float]]) -> list[bool]:
    if not tracks:
        return []
    feet = np.asarray([t.foot for t in tracks], dtype=np.float64)
    return [bool(v) for v in points_in_polygon(feet, polygon)]


class IntrusionRule:
    """Objects of ``cfg.classes`` with their foot point in the zone open an ``intrusion`` event.

    The condition must hold ``cfg.lifecycle.min_duration_s`` (default 1 s) to open, so a
    one-frame false positive or someone clipping the zone's corner does not alarm. The value
    is the number of intruders (an update on each new peak); the detail lists them (``person #3, person #7``).
    The event closes once the zone was empty for ``cooldown_s``.

    Args:
        camera_id: Camera the rule watches.
        zone: The zone (its ``polygon`` in frame pixels).
        cfg: Classes, life-cycle timing and schedule.
        timezone: The camera's IANA time zone (for the schedule).
        tracker: Tracker to use (tests); by default a fresh :class:`IouTracker`.
    """

    event_type = "intrusion"

    def __init__(
        self,
        camera_id: str,
        zone: ZoneConfig,
        cfg: IntrusionConfig,
        timezone: str,
        *,
        tracker: IouTracker | None = None,
    ) -> None:
        self.zone = zone
        self.cfg = cfg
        self.classes = frozenset(cfg.classes)
        self.schedule = Schedule(cfg.schedule, timezone)
        self.tracker = tracker or IouTracker()
        self.events = EventLifecycle(camera_id, self.event_type, zone.name, cfg.lifecycle, unit="objects")
        self._in_zone_streak: dict[int, int] = {}
        self._last_ts = float("-inf")

    @property
    def active_event_id(self) -> str | None:
        return self.events.active_event_id

    def intruders(self, ts: float, detections: Iterable[Detection]) -> list[Track]:
        """Track the frame and return the tracks counted as inside the zone at ``ts``."""
        tracks = self.tracker.update(ts, (d for d in detections if d.label in self.classes))
        streaks: dict[int, int] = {}
        out: list[Track] = []
        for t, inside in zip(tracks, _feet_in_zone(tracks, self.zone.polygon), strict=True):
            streak = self._in_zone_streak.get(t.track_id, 0)
            if t.seen_at(ts):
                streak = streak + 1 if inside else 0
                if inside:
                    out.append(t)
            elif inside and streak >= CONFIRMED_IN_ZONE:
                out.append(t)
            streaks[t.track_id] = streak
        self._in_zone_streak = streaks
        return out

    def update(self, ts: float, detections: Iterable[Detection]) -> list[EventTransition]:
        if ts < self._last_ts:
            return []
        self._last_ts = ts
        inside = self.intruders(ts, detections)
        if not self.schedule.active(ts):
            return self.events.close(ts)
        return self.events.update(
            ts,
            bool(inside),
            value=float(len(inside)),
            severity="warning",
            threshold=1.0,
            detail=", ".join(f"{t.label} #{t.track_id}" for t in inside),
            box=union_box(t.box for t in inside),
        )

    def close(self, ts: float) -> list[EventTransition]:
        return self.events.close(ts)


@dataclass(slots=True)
class _Stay:
    """One object's current stay in the zone (follows the object across a change of track id)."""

    track_id: int
    enter_ts: float
    last_in_ts: float
    foot: tuple[float, float]
    """Where the object was last seen in the zone."""
    enter_frame: int
    """Index of the rule's frame where the stay started."""
    last_in_frame: int
    """Index of the rule's frame where it was last seen in the zone."""
    seen_in: int = 1
    """In-zone observations so far."""
    seen_out: int = 0
    """Observations of its track out of the zone in a row (2 end the stay: the object left)."""
    speed_heights_s: float = 0.0
    """Its track's speed at the last sighting, in box heights per second."""

    def see(self, track: Track, ts: float, frame: int) -> None:
        self.track_id, self.last_in_ts, self.last_in_frame, self.foot = track.track_id, ts, frame, track.foot
        self.speed_heights_s = _speed_heights_s(track)
        self.seen_in += 1
        self.seen_out = 0

    @property
    def trusted(self) -> bool:
        """Seen in at least three frames, and in half of the frames from its start to its last sighting.

        Chains of false positives (one box here, another there a few seconds later, which
        the tracker may join) are seen in few of those frames; a real object in most. The
        frames since the last sighting do not count: a run of misses is what a lost stay is.
        """
        return self.seen_in >= REID_MIN_SIGHTINGS and self.seen_in >= 0.5 * (self.last_in_frame - self.enter_frame + 1)

    @property
    def dwell_s(self) -> float:
        return self.last_in_ts - self.enter_ts


class LoiteringRule:
    """One tracked object of ``cfg.classes`` in the zone for ``cfg.dwell_s`` opens ``loitering``.

    A stay starts at an object's first in-zone observation and lasts while it keeps being
    observed in the zone; it survives gaps of up to ``max_gap_s`` (missed detections) and a
    single observation out of the zone (a jittered foot point stepping over the edge), and
    ends on the second observation in a row out of the zone. The dwell time is from the first to
    the latest in-zone observation, so it never counts time the object was not seen.

    Tracks break: at a high miss rate the tracker may give a loiterer a new id, or a false
    positive may take over a missed loiterer's track. Restarting the dwell time then would
    miss exactly the long stays the rule is for, so stays are re-identified by place: a track
    seen in the zone within ``reid_radius_frac`` of its box height of where an older stay's
    object was last seen continues that older stay, if that object is not seen in the zone in
    this frame, was seen there in at least three frames and in half the frames from its entry
    to its last sighting (chains of false positives are not), was slow when last seen (a
    walker who vanishes has walked on), and if the two follow each other: the track
    was born after the stay's object was last seen, or the stay's track has gone or left
    (see :meth:`_handed_over`), so a passer-by walking past a hidden loiterer does not carry
    the loiterer's dwell time away. The price: someone taking a loiterer's exact place within
    ``max_gap_s`` of the loiterer leaving, after the loiterer was last seen, inherits their
    dwell time.

    The event's value is the longest current dwell rounded down to a whole multiple of
    ``dwell_s`` (so the event is updated at 2x, 3x ... the dwell time instead of on every
    frame); the detail gives each loitering track's id and exact dwell. The event closes once
    no object has been dwelling for ``cooldown_s``.

    Args:
        camera_id: Camera the rule watches.
        zone: The zone (its ``polygon`` in frame pixels).
        cfg: Classes, dwell time, life-cycle timing and schedule.
        timezone: The camera's IANA time zone (for the schedule).
        max_gap_s: Longest gap in the in-zone observations a stay survives (and a lost stay can
            be taken over by a new track). Misses come in runs (shadows, a passing bus): 10 s
            keeps a minute-long stay through them; it never adds unseen time to a dwell.
        track_max_age_s: The tracker's ``max_age_s``: longer than a few seconds and a
            stationary loiterer's coasting track would pick up false positives around it.
        reid_radius_frac: Re-identification radius, as a fraction of the new track's box height.
    """

    event_type = "loitering"

    def __init__(
        self,
        camera_id: str,
        zone: ZoneConfig,
        cfg: LoiteringConfig,
        timezone: str,
        *,
        max_gap_s: float = 10.0,
        track_max_age_s: float = 5.0,
        reid_radius_frac: float = 0.75,
    ) -> None:
        self.zone = zone
        self.cfg = cfg
        self.classes = frozenset(cfg.classes)
        self.max_gap_s = max_gap_s
        self.reid_radius_frac = reid_radius_frac
        self.schedule = Schedule(cfg.schedule, timezone)
        self.tracker = IouTracker(max_age_s=track_max_age_s)
        self.events = EventLifecycle(camera_id, self.event_type, zone.name, cfg.lifecycle, unit="s")
        self._stays: list[_Stay] = []
        self._alive: dict[int, Track] = {}  # the tracks of the last frame, by id (boxes for the alarm frame)
        self._frame = 0
        self._last_ts = float("-inf")

    @property
    def active_event_id(self) -> str | None:
        return self.events.active_event_id

    def dwelling(self, ts: float, detections: Iterable[Detection]) -> dict[int, float]:
        """Track the frame; return ``{track_id: dwell_s}`` of every stay still open at ``ts``."""
        tracks = self.tracker.update(ts, (d for d in detections if d.label in self.classes))
        self._frame += 1
        seen = [t for t in tracks if t.seen_at(ts)]
        in_zone = [t for t, inside in zip(seen, _feet_in_zone(seen, self.zone.polygon), strict=True) if inside]
        alive = {t.track_id: t for t in tracks}
        self._alive = alive
        by_track = {s.track_id: s for s in self._stays}
        for t in in_zone:  # first refresh every stay whose object is seen, so none is taken as lost
            stay = by_track.get(t.track_id)
            if stay is not None:
                stay.see(t, ts, self._frame)
        inside_ids = {t.track_id for t in in_zone}
        for t in seen:
            stay = by_track.get(t.track_id)
            if stay is not None and t.track_id not in inside_ids:
                stay.seen_out += 1
        for t in in_zone:
            own = by_track.get(t.track_id)
            radius = self.reid_radius_frac * (t.box[3] - t.box[1])
            lost = [
                (math.dist(s.foot, t.foot), i)
                for i, s in enumerate(self._stays)
                if s.last_in_ts < ts
                and s.trusted
                and s.speed_heights_s < REID_MAX_SPEED_HEIGHTS_S
                and (own is None or s.enter_ts < own.enter_ts)
                and self._handed_over(s, t, alive)
                and math.dist(s.foot, t.foot) <= radius
            ]
            if lost:
                found = self._stays.pop(min(lost)[1])
                if own is not None:  # the track is younger than its object's stay: merge
                    self._stays = [s for s in self._stays if s is not own]
                found.see(t, ts, self._frame)
                found.seen_in += own.seen_in if own is not None else 0
                self._stays.append(found)
                by_track[t.track_id] = found
            elif own is None:
                by_track[t.track_id] = _Stay(
                    t.track_id, ts, ts, t.foot, self._frame, self._frame, speed_heights_s=_speed_heights_s(t)
                )
                self._stays.append(by_track[t.track_id])
        self._stays = [s for s in self._stays if ts - s.last_in_ts <= self.max_gap_s and s.seen_out < LEFT_AFTER_OUT]
        return {s.track_id: s.dwell_s for s in self._stays}

    @staticmethod
    def _handed_over(lost: _Stay, track: Track, alive: dict[int, Track]) -> bool:
        """Whether ``track`` may be the object of the older stay ``lost``, under a new id.

        Yes when the track was born no earlier than ``lost`` was last seen (one object, two
        track ids one after the other), or when ``lost``'s track is gone or was seen since
        out of the zone (it left, or a false positive took it over). Not when ``lost``'s
        track is merely missed and ``track`` was around before that: two objects, e.g. a
        passer-by walking past a loiterer who hides behind them; the passer-by must not carry
        the loiterer's dwell time away.
        """
        if track.first_seen_ts >= lost.last_in_ts:
            return True
        previous = alive.get(lost.track_id)
        return previous is None or previous.last_seen_ts > lost.last_in_ts

    def update(self, ts: float, detections: Iterable[Detection]) -> list[EventTransition]:
        if ts < self._last_ts:
            return []
        self._last_ts = ts
        dwell = self.dwelling(ts, detections)
        if not self.schedule.active(ts):
            return self.events.close(ts)
        loiterers = sorted(((d, tid) for tid, d in dwell.items() if d >= self.cfg.dwell_s), reverse=True)
        longest = loiterers[0][0] if loiterers else 0.0
        step = self.cfg.dwell_s
        return self.events.update(
            ts,
            bool(loiterers),
            value=float(int(longest // step) * step),
            severity="caution",
            threshold=self.cfg.dwell_s,
            detail=", ".join(f"track {tid}: {d:.0f} s" for d, tid in loiterers),
            box=union_box(self._alive[tid].box for _, tid in loiterers if tid in self._alive),
        )

    def close(self, ts: float) -> list[EventTransition]:
        return self.events.close(ts)
