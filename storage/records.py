"""Typed records stored beside each clip, and the object-key layout of the clip bucket.

Keys are deterministic (camera, event id, day), so re-uploading the same event overwrites the
same two objects: a retried upload can never create a duplicate.
"""

from __future__ import annotations

import re
from datetime import date

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from configs.schema import CAMERA_ID_PATTERN
from contracts.exports import Requester

EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""Event ids become one path segment of an object key: no slashes, no leading dot."""

CLIP_PREFIX = "clips/"
EXPORT_PREFIX = "exports/"
CLIP_SUFFIX = ".mp4"
SIDECAR_SUFFIX = ".json"
FRAME_SUFFIX = ".jpg"

_CAMERA_RE = re.compile(CAMERA_ID_PATTERN)
_EVENT_RE = re.compile(EVENT_ID_PATTERN)


class ExportRecord(BaseModel):
    """Who asked for an emergency export, why, and which part of the asked window the clip covers.

    ``covered_*`` are the receive times of the clip's first packet and of the end of its last one.
    ``start_clipped``: the pre-roll buffer no longer held ``requested_start`` (the clip starts at its
    oldest keyframe); ``end_clipped``: the camera stopped sending before ``requested_end``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    requester: Requester
    case_number: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=2000)
    requested_at: AwareDatetime
    requested_start: AwareDatetime
    requested_end: AwareDatetime
    covered_start: AwareDatetime
    covered_end: AwareDatetime
    start_clipped: bool = False
    end_clipped: bool = False


class AlarmFrameRecord(BaseModel):
    """The frame an alarm opened on, as an operator judges it: a JPEG with the region boxed, stored beside the clip.

    ``box`` is ``(x1, y1, x2, y2)`` in the frame's pixels (None: the rule could not say where); ``cue`` is what
    fired (the event's detail at opening); ``sha256`` and ``size_bytes`` are of the JPEG bytes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    object_key: str = Field(min_length=len(CLIP_PREFIX) + len(FRAME_SUFFIX) + 1)
    captured_at: AwareDatetime
    box: tuple[float, float, float, float] | None = None
    score: float = Field(description="The measured value at opening, in the clip's ``unit``.")
    cue: str = Field(default="", max_length=2000)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> AlarmFrameRecord:
        if not self.object_key.endswith(FRAME_SUFFIX):
            raise ValueError(f"alarm frame object_key {self.object_key!r} does not end with {FRAME_SUFFIX!r}")
        return self


class ClipSidecar(BaseModel):
    """Everything known about one evidence clip; stored as JSON next to the MP4.

    Datetimes must carry a time zone (UTC recommended): a naive timestamp in an evidence record
    is ambiguous. ``sha256`` is the lowercase hex digest of the MP4 bytes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(pattern=EVENT_ID_PATTERN)
    camera_id: str = Field(pattern=CAMERA_ID_PATTERN)
    event_type: str = Field(min_length=1, max_length=64)
    started_at: AwareDatetime
    ended_at: AwareDatetime
    clip_start: AwareDatetime
    clip_end: AwareDatetime
    peak_value: float = Field(ge=0, description="Highest measured value during the event, in ``unit``.")
    unit: str = Field(default="people", max_length=32)
    severity: str = Field(default="warning", max_length=16)
    zone: str | None = None
    detector: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    object_key: str = Field(min_length=len(CLIP_PREFIX) + len(CLIP_SUFFIX) + 1)
    export: ExportRecord | None = Field(
        default=None, description="Set on emergency exports (event_type 'export'); None on event clips."
    )
    evidence: bool = Field(default=False, description="Evidence: the spool must never drop it; kept under hold.")
    alarm_frame: AlarmFrameRecord | None = Field(
        default=None, description="The frame the alarm opened on (boxed JPEG beside the clip); None on exports."
    )
    schema_version: int = 1

    @model_validator(mode="after")
    def _consistent(self) -> ClipSidecar:
        if self.ended_at < self.started_at:
            raise ValueError(f"ended_at {self.ended_at.isoformat()} is before started_at {self.started_at.isoformat()}")
        if self.clip_end < self.clip_start:
            raise ValueError(f"clip_end {self.clip_end.isoformat()} is before clip_start {self.clip_start.isoformat()}")
        if not self.object_key.endswith(CLIP_SUFFIX):
            raise ValueError(f"object_key {self.object_key!r} does not end with {CLIP_SUFFIX!r}")
        frame = self.alarm_frame
        if frame is not None and frame.object_key != frame_key_for(self.object_key):
            raise ValueError(f"alarm frame key {frame.object_key!r} is not {frame_key_for(self.object_key)!r}")
        return self

    @property
    def sidecar_key(self) -> str:
        """Object key of this sidecar's JSON."""
        return sidecar_key_for(self.object_key)

    def to_json_bytes(self) -> bytes:
        """Serialise as UTF-8 JSON (the sidecar object's body)."""
        return self.model_dump_json(indent=2).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> ClipSidecar:
        """Parse a sidecar JSON body; raises ``pydantic.ValidationError`` naming the bad field."""
        return cls.model_validate_json(data)


def _check_segment(kind: str, value: str, pattern: re.Pattern[str]) -> None:
    if not pattern.match(value):
        raise ValueError(f"{kind} {value!r} cannot be an object-key segment (must match {pattern.pattern})")


def clip_object_key(camera_id: str, event_id: str, day: date) -> str:
    """Key of an event clip: ``clips/YYYY/MM/DD/<camera_id>/<event_id>.mp4``.

    ``day`` is the (UTC) day the clip starts; a ``datetime`` works too (its date is used).
    """
    _check_segment("camera_id", camera_id, _CAMERA_RE)
    _check_segment("event_id", event_id, _EVENT_RE)
    return f"{CLIP_PREFIX}{day:%Y/%m/%d}/{camera_id}/{event_id}{CLIP_SUFFIX}"


def export_object_key(camera_id: str, export_id: str, day: date) -> str:
    """Key of an emergency export: ``exports/YYYY/MM/DD/<camera_id>/<export_id>.mp4`` (day of the asked start)."""
    _check_segment("camera_id", camera_id, _CAMERA_RE)
    _check_segment("export_id", export_id, _EVENT_RE)
    return f"{EXPORT_PREFIX}{day:%Y/%m/%d}/{camera_id}/{export_id}{CLIP_SUFFIX}"


def sidecar_object_key(camera_id: str, event_id: str, day: date) -> str:
    """Key of the JSON sidecar: the clip key with ``.json`` instead of ``.mp4``."""
    return sidecar_key_for(clip_object_key(camera_id, event_id, day))


def sidecar_key_for(clip_key: str) -> str:
    """Map a clip key (``....mp4``) to its sidecar key (``....json``)."""
    if not clip_key.endswith(CLIP_SUFFIX):
        raise ValueError(f"clip key {clip_key!r} does not end with {CLIP_SUFFIX!r}")
    return clip_key[: -len(CLIP_SUFFIX)] + SIDECAR_SUFFIX


def frame_key_for(clip_key: str) -> str:
    """Map a clip key (``....mp4``) to the key of its alarm frame (``....jpg``)."""
    if not clip_key.endswith(CLIP_SUFFIX):
        raise ValueError(f"clip key {clip_key!r} does not end with {CLIP_SUFFIX!r}")
    return clip_key[: -len(CLIP_SUFFIX)] + FRAME_SUFFIX
