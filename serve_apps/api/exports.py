"""Emergency clip exports (112 police / 119 fire): the request the control centre sends and the ticket it gets.

The API validates an :class:`ExportRequest` (window order and length), hands it to the camera
controller (``export_clip``), and answers the :class:`ExportTicket` the controller keeps updating
(``export_status``) until the clip is uploaded and a presigned URL can be handed out.
They live beside the API so that the API never imports the control plane; the controller imports
them from here.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.records import Requester

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
    def _window(self) -> "ExportRequest":
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
