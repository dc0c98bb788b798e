"""Events as the control centre sees them: one record per event, filters, pages, SSE frames.

The shards keep event *transitions* (opened, updated, closed); the API folds them into one
record per event id (the latest transition's values, the highest severity, the acknowledgement)
and filters and pages those records. Pure functions: the API passes in what the controller
answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from configs.analytics import SEVERITY_RANK, Severity
from contracts.events import Acknowledgement, EventNotice, EventView
from storage.records import EVENT_ID_PATTERN

Phase = Literal["opened", "updated", "closed"]


class AckRequest(BaseModel):
    """Body of ``POST /events/{event_id}/ack``."""

    model_config = ConfigDict(extra="forbid")

    operator: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$", description="Operator id.")
    note: str = Field(default="", max_length=2000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")


class EventRecord(BaseModel):
    """One event: its latest state across its transitions."""

    model_config = ConfigDict(extra="forbid")

    event_id: str
    camera_id: str
    district: str | None = Field(description="The camera's district now (None: camera no longer configured).")
    event_type: str
    zone: str | None
    phase: Phase = Field(description="Latest phase: open events are 'opened' or 'updated'.")
    severity: Severity = Field(description="Highest severity the event reached.")
    started_at: float
    ended_at: float | None
    value: float
    peak_value: float
    unit: str
    threshold: float
    detail: str = Field(description="What fired, in the latest transition (the cue).")
    box: tuple[float, float, float, float] | None = Field(
        default=None,
        description="Where the alarm opened: (x1, y1, x2, y2) in frame pixels, as boxed in GET /events/{id}/frame.",
    )
    updated_ts: float = Field(description="Capture time of the latest transition.")
    received_ts: float = Field(description="When the shard received the latest transition.")
    transitions: int
    acknowledged: Acknowledgement | None = None


class EventPage(BaseModel):
    """One page of events, newest first."""

    model_config = ConfigDict(extra="forbid")

    items: list[EventRecord]
    total: int = Field(description="Events that match the filters (all pages).")
    offset: int
    limit: int
    next_offset: int | None = Field(description="Offset of the next page; None on the last one.")


def transition_dict(notice: Any) -> dict[str, Any]:
    """An ``EventNotice`` as plain JSON-able data (phase as its string)."""
    t = asdict(notice.transition)
    t["phase"] = str(notice.transition.phase.value)
    return {**t, "received_ts": notice.received_ts}


def fold(view: EventView) -> list[EventRecord]:
    """One :class:`EventRecord` per event id from the view's transitions (any order, any subset)."""
    districts, acks = view.districts, view.acks
    by_id: dict[str, list[EventNotice]] = {}
    for n in view.notices:
        by_id.setdefault(n.transition.event_id, []).append(n)
    out: list[EventRecord] = []
    for event_id, ns in by_id.items():
        ns.sort(key=lambda n: (n.transition.ts, n.received_ts))
        last = ns[-1].transition
        severity = max((n.transition.severity for n in ns), key=lambda s: SEVERITY_RANK.get(s, 0))
        out.append(
            EventRecord(
                event_id=event_id,
                camera_id=last.camera_id,
                district=districts.get(last.camera_id),
                event_type=last.event_type,
                zone=last.zone,
                phase=str(last.phase.value),  # type: ignore[arg-type]
                severity=severity,
                started_at=min(n.transition.started_at for n in ns),
                ended_at=last.ended_at,
                value=last.value,
                peak_value=max(n.transition.peak_value for n in ns),
                unit=last.unit,
                threshold=last.threshold,
                detail=last.detail,
                box=next((n.transition.box for n in ns if n.transition.box is not None), None),
                updated_ts=last.ts,
                received_ts=ns[-1].received_ts,
                transitions=len(ns),
                acknowledged=acks.get(event_id),
            )
        )
    return out


def select(
    records: Iterable[EventRecord],
    *,
    since_ts: float,
    until_ts: float,
    camera_id: str | None = None,
    district: str | None = None,
    event_type: str | None = None,
    severities: Sequence[str] | None = None,
    acknowledged: bool | None = None,
) -> list[EventRecord]:
    """Events that overlap ``[since_ts, until_ts]`` and match every given filter, newest first."""
    out = [
        r
        for r in records
        if r.started_at <= until_ts
        and (r.ended_at if r.ended_at is not None else max(r.updated_ts, r.received_ts)) >= since_ts
        and (camera_id is None or r.camera_id == camera_id)
        and (district is None or r.district == district)
        and (event_type is None or r.event_type == event_type)
        and (not severities or r.severity in severities)
        and (acknowledged is None or (r.acknowledged is not None) == acknowledged)
    ]
    return sorted(out, key=lambda r: (-r.started_at, r.event_id))


def page(records: Sequence[EventRecord], offset: int, limit: int) -> EventPage:
    items = list(records[offset : offset + limit])
    nxt = offset + limit if offset + limit < len(records) else None
    return EventPage(items=items, total=len(records), offset=offset, limit=limit, next_offset=nxt)


def matches(
    transition: Mapping[str, Any],
    district_of: Mapping[str, str],
    *,
    camera_id: str | None,
    district: str | None,
    event_type: str | None,
    severities: Sequence[str] | None,
) -> bool:
    """Whether a transition (as :func:`transition_dict`) passes the stream's filters."""
    return (
        (camera_id is None or transition["camera_id"] == camera_id)
        and (district is None or district_of.get(transition["camera_id"]) == district)
        and (event_type is None or transition["event_type"] == event_type)
        and (not severities or transition["severity"] in severities)
    )


def sse_frame(data: Mapping[str, Any], *, event: str, frame_id: str | None = None) -> bytes:
    """One Server-Sent Events frame (``data`` as one line of JSON)."""
    head = f"id: {frame_id}\n" if frame_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


EVENT_ID_FIELD = Field(pattern=EVENT_ID_PATTERN, max_length=128)
