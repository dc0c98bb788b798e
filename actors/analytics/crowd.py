"""Crowd rules: people in a zone over a count threshold; density levels on a calibrated zone."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np

from actors.analytics.events import EventLifecycle, polygon_box, union_box
from actors.analytics.zones import PERSON_LABEL, GroundPlane, in_zone
from configs.analytics import CrowdDensityConfig, Lifecycle, Severity
from configs.schema import ZoneConfig
from contracts.detector import Detection
from contracts.events import Box, EventTransition

LEVELS: tuple[Severity, Severity, Severity] = ("caution", "warning", "severe")


def people_in_zone(detections: Iterable[Detection], zone: ZoneConfig) -> tuple[int, Box]:
    """(persons whose foot point is in the zone, the box around them; the zone's box when there are none)."""
    dets = list(detections)
    counted = [dets[i] for i in in_zone(dets, zone.polygon, {PERSON_LABEL})]
    return len(counted), union_box(d.box for d in counted) or polygon_box(zone.polygon)


class CrowdRule:
    """People in a zone at or over ``crowd_threshold_people`` for ``min_duration_s`` opens an event.

    The event is updated when the count reaches a new peak and closes once the count stayed
    under the threshold for ``cooldown_s``. Timestamps are frame capture times, so the rule
    behaves the same whatever the detector latency.
    """

    event_type = "crowd"

    def __init__(self, camera_id: str, zone: ZoneConfig) -> None:
        if zone.crowd_threshold_people is None:
            raise ValueError(f"zone {zone.name!r} has no crowd_threshold_people")
        self.zone = zone
        self.threshold = zone.crowd_threshold_people
        timing = Lifecycle(min_duration_s=zone.min_duration_s, cooldown_s=zone.cooldown_s)
        self.events = EventLifecycle(camera_id, self.event_type, zone.name, timing, unit="people")

    @property
    def active_event_id(self) -> str | None:
        return self.events.active_event_id

    def update(self, ts: float, detections: Iterable[Detection]) -> list[EventTransition]:
        count, box = people_in_zone(detections, self.zone)
        return self.events.update(
            ts,
            count >= self.threshold,
            value=float(count),
            severity="warning",
            threshold=float(self.threshold),
            detail=f"{count} people in zone {self.zone.name}",
            box=box,
        )

    def close(self, ts: float) -> list[EventTransition]:
        return self.events.close(ts)


class CrowdDensityRule:
    """Smoothed people count or density in a zone, with caution/warning/severe levels.

    With a ground calibration the zone's area is known and the value is people/m², compared
    with ``levels_people_per_m2`` (Seoul: 3 caution, 4 warning, 5 severe). Without one the value
    is the count, compared with ``levels_people``. The count is the median over ``window_s``
    so a single missed or doubled detection does not flap the level.
    """

    event_type = "crowd_density"

    def __init__(self, camera_id: str, zone: ZoneConfig, cfg: CrowdDensityConfig, ground: GroundPlane | None) -> None:
        self.zone = zone
        self.cfg = cfg
        if ground is not None:
            self.area_m2: float | None = ground.area_m2(zone.polygon)
            if self.area_m2 <= 0:
                raise ValueError(f"zone {zone.name!r} has no ground area under the camera's calibration")
            self.levels: tuple[float, float, float] = cfg.levels_people_per_m2
            unit = "people/m2"
        elif cfg.levels_people is not None:
            self.area_m2 = None
            self.levels = tuple(float(x) for x in cfg.levels_people)  # type: ignore[assignment]
            unit = "people"
        else:
            raise ValueError(
                f"zone {zone.name!r}: crowd_density needs the camera's ground calibration or levels_people"
            )
        self._window: deque[tuple[float, int]] = deque()
        self.events = EventLifecycle(camera_id, self.event_type, zone.name, cfg.lifecycle, unit=unit)

    def measure(self, ts: float, detections: Iterable[Detection]) -> float:
        """Smoothed value (count or density) at ``ts``."""
        return self._measure(ts, detections)[0]

    def _measure(self, ts: float, detections: Iterable[Detection]) -> tuple[float, Box]:
        now, box = people_in_zone(detections, self.zone)
        self._window.append((ts, now))
        while self._window and self._window[0][0] < ts - self.cfg.window_s:
            self._window.popleft()
        count = float(np.median([c for _, c in self._window]))
        return (count / self.area_m2 if self.area_m2 else count), box

    def level(self, value: float) -> Severity | None:
        found: Severity | None = None
        for name, bound in zip(LEVELS, self.levels, strict=True):
            if value >= bound:
                found = name
        return found

    def update(self, ts: float, detections: Iterable[Detection]) -> list[EventTransition]:
        value, box = self._measure(ts, detections)
        level = self.level(value)
        if self.area_m2:
            detail = f"{value:.2f} people/m2 over {self.area_m2:.0f} m2 of zone {self.zone.name}"
        else:
            detail = f"{value:.0f} people in zone {self.zone.name}"
        return self.events.update(
            ts,
            level is not None,
            value=round(value, 3),
            severity=level or "caution",
            threshold=self.levels[0],
            detail=detail,
            box=box,
        )

    def close(self, ts: float) -> list[EventTransition]:
        return self.events.close(ts)
