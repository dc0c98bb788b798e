"""The per-camera state machine and the status record a shard reports for each camera."""

from __future__ import annotations

import enum
import threading
import time
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


_ALLOWED: dict[CameraState, frozenset[CameraState]] = {
    CameraState.CONNECTING: frozenset(
        {CameraState.STREAMING, CameraState.RECONNECTING, CameraState.DOWN, CameraState.RETIRED}
    ),
    CameraState.STREAMING: frozenset(
        {
            CameraState.STALLED,
            CameraState.RECONNECTING,
            CameraState.DOWN,
            CameraState.RETIRED,
            CameraState.CONNECTING,
        }
    ),
    CameraState.STALLED: frozenset(
        {CameraState.STREAMING, CameraState.RECONNECTING, CameraState.DOWN, CameraState.RETIRED}
    ),
    CameraState.RECONNECTING: frozenset({CameraState.CONNECTING, CameraState.DOWN, CameraState.RETIRED}),
    CameraState.DOWN: frozenset({CameraState.CONNECTING, CameraState.STREAMING, CameraState.RETIRED}),
    CameraState.RETIRED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A state change the machine does not allow (a bug, never an input problem)."""


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


class StateMachine:
    """Thread-safe holder of one camera's state, its reason and when it was entered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = CameraState.CONNECTING
        self._reason = "starting"
        self._since_ts = time.time()

    @property
    def state(self) -> CameraState:
        return self._state

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def since_ts(self) -> float:
        return self._since_ts

    def to(self, new: CameraState, reason: str) -> bool:
        """Move to ``new``; returns False (and changes nothing) once retired.

        Raises:
            InvalidTransition: when the move is not in the table above.
        """
        with self._lock:
            if self._state is CameraState.RETIRED:
                return False
            if new is self._state:
                self._reason = reason
                return True
            if new not in _ALLOWED[self._state]:
                raise InvalidTransition(f"camera state {self._state.value} -> {new.value} is not allowed")
            self._state, self._reason, self._since_ts = new, reason, time.time()
            return True
