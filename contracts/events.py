"""Events as every layer names them: a rule's transition, the shard's notice of it, an operator's acknowledgement.

The rules (``actors/analytics``) emit :class:`EventTransition`; the shard keeps each as an :class:`EventNotice`;
the controller answers the API with an :class:`EventView` (notices, districts, acknowledgements), typed end to end.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from configs.analytics import Severity

Box = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)`` in the pixels of the frame the rule saw."""


class EventPhase(enum.StrEnum):
    """Where an event is in its life: opened once, updated on a new peak or level, closed once."""

    OPENED = "opened"
    UPDATED = "updated"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class EventTransition:
    """One step of an event's life (what the recorder, the API and the metrics consume).

    Attributes:
        event_id: Stable id of the event across its transitions.
        camera_id: Camera the event belongs to.
        event_type: Rule name: ``crowd``, ``intrusion``, ``loitering``, ``water_level``, ``fire``, ``smoke``.
        zone: Zone (or gauge) name, when the rule is zoned.
        phase: Opened, updated or closed.
        severity: ``info`` .. ``critical``; may rise (an update) while the event is open.
        started_at: Capture time (epoch s) of the first frame where the condition held.
        ended_at: Capture time of the last frame where it held (set when closed).
        value: The measured value in the frame that caused this transition.
        peak_value: Highest value so far in the event.
        unit: Unit of ``value``: ``people``, ``people/m2``, ``cm``, ``score``, ``s``.
        threshold: The threshold that opened the event.
        ts: Capture time of the frame that caused this transition.
        detail: Free text for operators: the cue that fired (e.g. "flickering flame over 1.20% of the view",
            the track id of an intruder).
        box: Where in the frame the condition holds, in frame pixels (the flame region, the intruder, the
            people counted in the zone); None when the rule cannot say. The alarm frame is drawn with it.
    """

    event_id: str
    camera_id: str
    event_type: str
    zone: str | None
    phase: EventPhase
    severity: Severity
    started_at: float
    ended_at: float | None
    value: float
    peak_value: float
    unit: str
    threshold: float
    ts: float
    detail: str = ""
    box: Box | None = None


@dataclass(frozen=True, slots=True)
class EventNotice:
    """An event transition as kept by the shard for status/API queries."""

    transition: EventTransition
    received_ts: float


class Acknowledgement(BaseModel):
    """Who acknowledged an event, when, and their note."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    operator: str
    note: str
    by: str = Field(description="The API caller (token name) that sent the acknowledgement.")
    ts: float


@dataclass(frozen=True, slots=True)
class EventView:
    """What the controller answers for the event list: transitions, each camera's district, acknowledgements.

    Attributes:
        notices: every transition the shards hold, oldest received first.
        districts: camera id -> its district now (a camera no longer configured is absent).
        acks: event id -> its acknowledgement (only acknowledged events).
    """

    notices: tuple[EventNotice, ...]
    districts: Mapping[str, str]
    acks: Mapping[str, Acknowledgement]
