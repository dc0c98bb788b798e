"""A camera as the control plane reports it: its stream state and the status record a shard answers for it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CameraState(enum.StrEnum):
    """Where one camera's stream is.

    ``connecting`` → ``streaming`` on the first packet; ``streaming`` → ``stalled`` when no
    packet arrived for the stall timeout; any failure → ``reconnecting`` (back-off with
    jitter); repeated failures → ``down``. A ``down`` camera is still retried at the
    longest back-off but stays ``down`` during those attempts (operators and alerts see
    one steady state, not a down/connecting flicker) until a packet arrives, when it goes
    straight to ``streaming``. ``retired`` when the camera was removed or the shard
    stopped. A camera that comes back resumes inside the same shard: nothing restarts.
    """

    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    DOWN = "down"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """What a shard reports about one camera (no URL: it may carry credentials)."""

    camera_id: str
    district: str
    shard: str
    state: CameraState
    reason: str
    since_ts: float
    last_packet_ts: float | None
    packets: int
    keyframes: int
    frames_decoded: int
    frames_sampled: int
    frames_static: int
    decode_errors: int
    decoder: str
    frames_dropped: int
    detections_received: int
    reconnects: int
    events_opened: int
    width: int | None
    height: int | None
    codec: str | None
    decoder_note: str = ""
    """Why this decoder: e.g. NVDEC was asked for but is unavailable (the error), or the codec has none."""
