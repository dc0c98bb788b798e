"""The export vocabulary (112 police / 119 fire emergency exports), shared by the API, the controller and the shard.

* :class:`ExportRequest` (the body of ``POST /exports``) and :class:`ExportTicket` (what the API answers) are the
  control centre's side; the controller's :class:`~cluster.exports.ExportDesk` keeps the tickets.
* :class:`ExportOrder` is what the camera's shard is told to record, :class:`ExportProgress` what it answers while it
  records, writes and uploads (``actors/export_recorder.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Requester = Literal["112", "119", "internal"]
"""Who may ask for an emergency export: 112 (police), 119 (fire/rescue) or the control centre itself."""

ExportState = Literal["pending", "recording", "uploading", "done", "failed"]

#: Longest window a request may ask for when the API config does not say (ApiConfig.max_export_s).
DEFAULT_MAX_EXPORT_S = 1800.0


class ExportRequest(BaseModel):
    """Body of ``POST /exports``: which camera, which time window, who asks and why."""

    model_config = ConfigDict(extra="forbid")

    camera_id: str = Field(min_length=1, max_length=128)
    start_ts: float = Field(gt=0, description="Window start, UNIX seconds.")
    end_ts: float = Field(gt=0, description="Window end, UNIX seconds (may lie in the future: recording goes on).")
    requester: Requester = Field(description="112 (police), 119 (fire/rescue) or internal.")
    case_number: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    reason: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$")

    @model_validator(mode="after")
    def _window(self) -> ExportRequest:
        if self.end_ts <= self.start_ts:
            raise ValueError("end_ts must be after start_ts")
        return self

    def check_max(self, max_export_s: float = DEFAULT_MAX_EXPORT_S) -> None:
        """Raise ``ValueError`` when the window is longer than ``max_export_s``."""
        if self.end_ts - self.start_ts > max_export_s:
            span = self.end_ts - self.start_ts
            raise ValueError(f"export window {span:.0f}s exceeds the maximum {max_export_s:.0f}s")


class ExportTicket(BaseModel):
    """An export's progress; ``url`` is filled in by the API (presigned) once ``state`` is ``done``."""

    model_config = ConfigDict(extra="forbid")

    export_id: str
    state: ExportState
    clip_key: str | None = None
    url: str | None = None
    error: str | None = None
    requested_by: str = Field(description="The requester (112/119/internal) and the case number.")


@dataclass(frozen=True, slots=True)
class ExportOrder:
    """A manual recording of one camera over a fixed window (an emergency export), as the shard gets it.

    Attributes:
        export_id: Unique id; the object key's last segment.
        camera_id: The camera.
        start_ts: Window start, epoch seconds (receive time); may be in the past (ring) or future.
        end_ts: Window end, epoch seconds; after ``start_ts``.
        requester: ``112`` (police), ``119`` (fire) or ``internal``.
        case_number: The requester's case reference (kept in the sidecar, used for the evidence hold).
        reason: Free text, kept in the sidecar.
        requested_at: When the request was accepted, epoch seconds.
    """

    export_id: str
    camera_id: str
    start_ts: float
    end_ts: float
    requester: Requester
    case_number: str
    reason: str
    requested_at: float


class ExportPhase(StrEnum):
    RECORDING = "recording"  # future part still arriving
    WRITING = "writing"  # window complete, MP4 being remuxed
    UPLOADING = "uploading"  # in the upload spool
    DONE = "done"  # clip and sidecar stored
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ExportProgress:
    """Where one export stands (answered while it records, and after).

    ``covered_start``/``covered_end`` are known once the first/last packet is in; ``start_clipped``
    says the ring no longer held ``start_ts``, ``end_clipped`` that the camera stopped before ``end_ts``.
    """

    export_id: str
    camera_id: str
    phase: ExportPhase
    start_ts: float
    end_ts: float
    requester: str
    case_number: str
    object_key: str | None = None
    covered_start: float | None = None
    covered_end: float | None = None
    start_clipped: bool = False
    end_clipped: bool = False
    duration_s: float | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    error: str | None = None
