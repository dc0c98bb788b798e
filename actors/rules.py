"""Analytics rules: pure functions of detections over time, no Ray, no I/O.

A rule's per-camera state lives in the decoder shard that owns the camera; the rule
turns each detector result into zero or more :class:`EventTransition` messages that the
recorder, the metrics and (later) the API consume.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from configs.schema import ZoneConfig
from serve_apps.detector.types import Detection

PERSON_LABEL = "person"


class EventPhase(enum.StrEnum):
    """Where an event is in its life: opened once, updated on a new peak, closed once."""

    OPENED = "opened"
    UPDATED = "updated"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class EventTransition:
    """One step of an event's life, emitted by a rule.

    Attributes:
        event_id: Stable id of the event across its transitions.
        camera_id: Camera the event belongs to.
        event_type: Rule name, e.g. ``"crowd"``.
        zone: Zone name, when the rule is zoned.
        phase: Opened, updated or closed.
        started_at: Capture time (epoch s) of the first frame over threshold.
        ended_at: Capture time of the last frame over threshold (set when closed).
        count: Count in the frame that caused this transition.
        peak_count: Highest count seen so far in the event.
        threshold: The configured threshold.
        ts: Capture time of the frame that caused this transition.
    """

    event_id: str
    camera_id: str
    event_type: str
    zone: str | None
    phase: EventPhase
    started_at: float
    ended_at: float | None
    count: int
    peak_count: int
    threshold: int
    ts: float


def points_in_polygon(points: np.ndarray, polygon: Sequence[tuple[float, float]]) -> np.ndarray:
    """Even-odd ray casting, vectorised over points.

    Args:
        points: Array of shape (N, 2) with (x, y) in pixels.
        polygon: Vertices in pixels, in order, at least three.

    Returns:
        Boolean array of shape (N,).
    """
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    poly = np.asarray(polygon, dtype=np.float64)
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    crossings = straddles & (x < x_cross)
    return (crossings.sum(axis=1) % 2) == 1


def count_people_in_zone(detections: Iterable[Detection], polygon: Sequence[tuple[float, float]]) -> int:
    """Count persons whose foot point (bottom centre of the box) lies inside the zone.

    The foot point, not the box centre, is used because zones are drawn on the ground.
    """
    feet = [((d.box[0] + d.box[2]) / 2.0, d.box[3]) for d in detections if d.label == PERSON_LABEL]
    if not feet:
        return 0
    return int(points_in_polygon(np.asarray(feet, dtype=np.float64), polygon).sum())


class _Phase(enum.Enum):
    IDLE = "idle"
    PENDING = "pending"  # over threshold, not yet for min_duration_s
    ACTIVE = "active"
    COOLING = "cooling"  # event open, under threshold, waiting cooldown_s


class CrowdRule:
    """People in a zone at or over a threshold for a minimum time opens an event.

    The event stays open while the count stays high, is updated when the peak rises,
    and closes once the count has stayed under the threshold for ``cooldown_s``.
    Timestamps are frame capture times, so the rule behaves the same whatever the
    detector latency.
    """

    event_type = "crowd"

    def __init__(self, camera_id: str, zone: ZoneConfig) -> None:
        self.camera_id = camera_id
        self.zone = zone
        self._phase = _Phase.IDLE
        self._first_over_ts = 0.0
        self._last_over_ts = 0.0
        self._first_under_ts = 0.0
        self._event_id: str | None = None
        self._peak = 0
        self._last_ts = float("-inf")

    @property
    def active_event_id(self) -> str | None:
        return self._event_id

    def update(self, ts: float, detections: Iterable[Detection]) -> list[EventTransition]:
        """Feed one analysed frame; returns the transitions it caused (often none).

        Frames older than the last one seen are ignored: results can arrive out of order
        when several detector requests of one camera are in flight.
        """
        if ts < self._last_ts:
            return []
        self._last_ts = ts
        count = count_people_in_zone(detections, self.zone.polygon)
        over = count >= self.zone.crowd_threshold_people
        out: list[EventTransition] = []

        if self._phase is _Phase.IDLE:
            if over:
                self._phase, self._first_over_ts, self._last_over_ts = _Phase.PENDING, ts, ts
        elif self._phase is _Phase.PENDING:
            if not over:
                self._phase = _Phase.IDLE
            else:
                self._last_over_ts = ts
        elif self._phase is _Phase.ACTIVE:
            if over:
                self._last_over_ts = ts
            else:
                self._phase, self._first_under_ts = _Phase.COOLING, ts
        elif self._phase is _Phase.COOLING:
            if over:
                self._phase, self._last_over_ts = _Phase.ACTIVE, ts
            elif ts - self._first_under_ts >= self.zone.cooldown_s:
                out.append(self._transition(EventPhase.CLOSED, ts, count, ended_at=self._last_over_ts))
                self._phase, self._event_id, self._peak = _Phase.IDLE, None, 0
                return out

        if self._phase is _Phase.PENDING and ts - self._first_over_ts >= self.zone.min_duration_s:
            self._phase, self._event_id, self._peak = _Phase.ACTIVE, uuid.uuid4().hex, count
            out.append(self._transition(EventPhase.OPENED, ts, count))
        elif self._phase is _Phase.ACTIVE and count > self._peak:
            self._peak = count
            out.append(self._transition(EventPhase.UPDATED, ts, count))
        return out

    def close(self, ts: float) -> list[EventTransition]:
        """Close an open event now (camera removed or shutting down)."""
        if self._event_id is None:
            return []
        out = [self._transition(EventPhase.CLOSED, ts, 0, ended_at=self._last_over_ts)]
        self._phase, self._event_id, self._peak = _Phase.IDLE, None, 0
        return out

    def _transition(self, phase: EventPhase, ts: float, count: int, ended_at: float | None = None) -> EventTransition:
        assert self._event_id is not None
        return EventTransition(
            event_id=self._event_id,
            camera_id=self.camera_id,
            event_type=self.event_type,
            zone=self.zone.name,
            phase=phase,
            started_at=self._first_over_ts,
            ended_at=ended_at,
            count=count,
            peak_count=self._peak,
            threshold=self.zone.crowd_threshold_people,
            ts=ts,
        )
