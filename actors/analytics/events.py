"""The event life cycle every rule shares, and the one event record they all emit."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable

from configs.analytics import SEVERITY_RANK, Lifecycle, Severity
from contracts.events import Box, EventPhase, EventTransition


def union_box(boxes: Iterable[Box]) -> Box | None:
    """The smallest box holding all of ``boxes`` (None when there are none)."""
    bs = list(boxes)
    if not bs:
        return None
    return (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))


def polygon_box(points: Iterable[tuple[float, float]]) -> Box:
    """The bounding box of a zone polygon (or of a gauge's end points)."""
    pts = list(points)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


class _State(enum.Enum):
    IDLE = "idle"
    PENDING = "pending"  # condition holds, not yet for min_duration_s
    ACTIVE = "active"
    COOLING = "cooling"  # event open, condition absent, waiting cooldown_s


class EventLifecycle:
    """Turns a per-frame "condition holds (with value and severity)" into event transitions.

    * opens once the condition held ``min_duration_s`` (the start is the first frame it held);
    * updates when the value reaches a new peak or the severity rises;
    * closes once the condition was absent ``cooldown_s`` (the end is the last frame it held);
    * after a close, stays quiet ``rearm_s`` (de-duplication of flapping conditions).

    Frames older than the last one seen are ignored (results can arrive out of order).
    """

    def __init__(self, camera_id: str, event_type: str, zone: str | None, timing: Lifecycle, *, unit: str) -> None:
        self.camera_id = camera_id
        self.event_type = event_type
        self.zone = zone
        self.timing = timing
        self.unit = unit
        self._state = _State.IDLE
        self._first_on_ts = 0.0
        self._last_on_ts = 0.0
        self._first_off_ts = 0.0
        self._quiet_until = float("-inf")
        self._last_ts = float("-inf")
        self._event_id: str | None = None
        self._peak = 0.0
        self._severity: Severity = "info"
        self._threshold = 0.0

    @property
    def active_event_id(self) -> str | None:
        return self._event_id

    def update(
        self,
        ts: float,
        on: bool,
        *,
        value: float,
        severity: Severity = "warning",
        threshold: float = 0.0,
        detail: str = "",
        box: Box | None = None,
    ) -> list[EventTransition]:
        """Feed one analysed frame; returns the transitions it caused (often none).

        ``box`` is where the condition holds in this frame (kept on the transitions it causes).
        """
        if ts < self._last_ts:
            return []
        self._last_ts = ts
        t = self.timing
        out: list[EventTransition] = []
        if self._state is _State.IDLE:
            if on and ts >= self._quiet_until:
                self._state, self._first_on_ts, self._last_on_ts = _State.PENDING, ts, ts
        elif self._state is _State.PENDING:
            if on:
                self._last_on_ts = ts
            else:
                self._state = _State.IDLE
        elif self._state is _State.ACTIVE:
            if on:
                self._last_on_ts = ts
            else:
                self._state, self._first_off_ts = _State.COOLING, ts
        elif self._state is _State.COOLING:
            if on:
                self._state, self._last_on_ts = _State.ACTIVE, ts
            elif ts - self._first_off_ts >= t.cooldown_s:
                out.append(self._emit(EventPhase.CLOSED, ts, value, detail, None, ended_at=self._last_on_ts))
                self._reset(ts)
                return out

        if self._state is _State.PENDING and ts - self._first_on_ts >= t.min_duration_s:
            self._state, self._event_id = _State.ACTIVE, uuid.uuid4().hex
            self._peak, self._severity, self._threshold = value, severity, threshold
            out.append(self._emit(EventPhase.OPENED, ts, value, detail, box))
        elif self._state is _State.ACTIVE and on:
            rises = SEVERITY_RANK[severity] > SEVERITY_RANK[self._severity]
            if value > self._peak or rises:
                self._peak = max(self._peak, value)
                if rises:
                    self._severity = severity
                out.append(self._emit(EventPhase.UPDATED, ts, value, detail, box))
        return out

    def close(self, ts: float) -> list[EventTransition]:
        """Close an open event now (camera removed or shutting down)."""
        if self._event_id is None:
            self._state = _State.IDLE
            return []
        out = [self._emit(EventPhase.CLOSED, ts, 0.0, "", None, ended_at=self._last_on_ts)]
        self._reset(ts)
        return out

    def _reset(self, ts: float) -> None:
        self._state, self._event_id, self._peak = _State.IDLE, None, 0.0
        self._quiet_until = ts + self.timing.rearm_s

    def _emit(
        self,
        phase: EventPhase,
        ts: float,
        value: float,
        detail: str,
        box: Box | None,
        ended_at: float | None = None,
    ) -> EventTransition:
        assert self._event_id is not None
        return EventTransition(
            event_id=self._event_id,
            camera_id=self.camera_id,
            event_type=self.event_type,
            zone=self.zone,
            phase=phase,
            severity=self._severity,
            started_at=self._first_on_ts,
            ended_at=ended_at,
            value=value,
            peak_value=self._peak,
            unit=self.unit,
            threshold=self._threshold,
            ts=ts,
            detail=detail,
            box=None if box is None else tuple(round(float(v), 1) for v in box),  # type: ignore[arg-type]
        )
