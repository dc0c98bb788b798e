"""Alarm frames for the storage tests: a real JPEG and the sidecar that records it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from storage.records import AlarmFrameRecord, ClipSidecar, frame_key_for


def with_alarm_frame(directory: Path, sidecar: ClipSidecar) -> tuple[Path, ClipSidecar]:
    """A JPEG written beside the clip (``<event_id>.jpg``) and a copy of ``sidecar`` recording it."""
    image = np.random.default_rng(7).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    if not ok:
        raise RuntimeError("cv2.imencode could not encode a 64x48 test frame")
    data = buf.tobytes()
    path = directory / f"{sidecar.event_id}.jpg"
    path.write_bytes(data)
    record = AlarmFrameRecord(
        object_key=frame_key_for(sidecar.object_key),
        captured_at=sidecar.started_at,
        box=(4.0, 5.0, 40.0, 30.0),
        score=sidecar.peak_value,
        cue="6 people in zone gate",
        width=64,
        height=48,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )
    return path, sidecar.model_copy(update={"alarm_frame": record})
