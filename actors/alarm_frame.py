"""The frame an alarm opened on, drawn so an operator can judge it in a second: the region boxed, what fired.

The shard renders it when an event opens (once per event, a few milliseconds of JPEG encoding), keeps the latest
ones in memory for the API (``GET /events/{id}/frame`` answers while the event is still open), and hands it to the
recorder, which stores it beside the event's clip with its record in the clip's sidecar
(:class:`storage.records.AlarmFrameRecord`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from contracts.events import Box, EventTransition

SEVERITY_BGR = {
    "info": (200, 200, 200),
    "caution": (0, 215, 255),
    "warning": (0, 140, 255),
    "severe": (0, 0, 255),
    "critical": (0, 0, 255),
}
"""Box colour by severity (BGR): yellow, orange, red."""

MAX_CUE_CHARS = 90


@dataclass(frozen=True, slots=True)
class AlarmFrame:
    """A rendered alarm frame and what it shows.

    Attributes:
        event_id: The event it opened.
        camera_id: The camera.
        event_type: ``fire``, ``smoke``, ``crowd``...
        captured_ts: Capture time (epoch s) of the frame.
        box: The boxed region, frame pixels (None: the rule could not say where; nothing is boxed).
        score: The measured value at opening, in ``unit``.
        unit: ``score``, ``people``, ``people/m2``, ``cm``, ``s``...
        severity: Severity at opening.
        cue: What fired (the event's detail).
        width: Frame width, pixels.
        height: Frame height, pixels.
        jpeg: The JPEG bytes (the frame with box and caption drawn on it).
    """

    event_id: str
    camera_id: str
    event_type: str
    captured_ts: float
    box: Box | None
    score: float
    unit: str
    severity: str
    cue: str
    width: int
    height: int
    jpeg: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only: anything else becomes '?'."""
    return text.encode("ascii", "replace").decode("ascii")


def caption(t: EventTransition) -> tuple[str, str]:
    """The two caption lines: what and how much; the cue."""
    zone = f" [{t.zone}]" if t.zone else ""
    head = f"{t.event_type.upper()}{zone} {t.value:g} {t.unit}  {t.severity}  (threshold {t.threshold:g})"
    cue = t.detail if len(t.detail) <= MAX_CUE_CHARS else t.detail[: MAX_CUE_CHARS - 3] + "..."
    return _ascii(head), _ascii(cue)


def draw_alarm(image: np.ndarray, t: EventTransition) -> np.ndarray:
    """A copy of ``image`` (BGR or grey) with the transition's box and a caption band drawn on it."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    h, w = canvas.shape[:2]
    colour = SEVERITY_BGR.get(t.severity, SEVERITY_BGR["warning"])
    thick = max(2, round(min(w, h) / 240))
    if t.box is not None:
        x1, y1, x2, y2 = (round(v) for v in t.box)
        x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
        y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
        # A dark outline under the coloured one keeps the box visible on a bright scene (flames, sky).
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 0, 0), thick + 2)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick)
    scale = max(0.4, min(w, h) / 720)
    line_h = round(26 * scale) + 4
    band = canvas[: 2 * line_h + 6]
    band[:] = (band * 0.35).astype(np.uint8)  # darken, so white text reads on any frame
    for i, text in enumerate(caption(t)):
        y = (i + 1) * line_h
        cv2.putText(canvas, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour if i == 0 else (255, 255, 255), 1)
    return canvas


def render_alarm_frame(image: np.ndarray, t: EventTransition, *, captured_ts: float, quality: int = 85) -> AlarmFrame:
    """The alarm frame of ``t`` (an opening transition) drawn on ``image``, the frame it was decided on.

    Raises:
        ValueError: the image cannot be encoded (not an 8-bit BGR or grey frame).
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"alarm frame of event {t.event_id}: expected an 8-bit frame, got {image.dtype} {image.shape}")
    ok, buf = cv2.imencode(".jpg", draw_alarm(image, t), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"alarm frame of event {t.event_id}: JPEG encoding failed")
    h, w = image.shape[:2]
    return AlarmFrame(
        event_id=t.event_id,
        camera_id=t.camera_id,
        event_type=t.event_type,
        captured_ts=captured_ts,
        box=t.box,
        score=t.value,
        unit=t.unit,
        severity=t.severity,
        cue=t.detail,
        width=w,
        height=h,
        jpeg=buf.tobytes(),
    )


class AlarmFrames:
    """The latest alarm frames by event id, at most ``max_kept`` (the oldest forgotten first).

    Not thread-safe on its own: the shard calls it under its lock.
    """

    def __init__(self, max_kept: int) -> None:
        if max_kept < 1:
            raise ValueError(f"max_kept={max_kept} must be at least 1")
        self.max_kept = max_kept
        self._frames: OrderedDict[str, AlarmFrame] = OrderedDict()

    def add(self, frame: AlarmFrame) -> None:
        self._frames[frame.event_id] = frame
        self._frames.move_to_end(frame.event_id)
        while len(self._frames) > self.max_kept:
            self._frames.popitem(last=False)

    def get(self, event_id: str) -> AlarmFrame | None:
        return self._frames.get(event_id)

    def __len__(self) -> int:
        return len(self._frames)
