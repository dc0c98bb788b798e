"""The per-camera state machine (its states and the status record are in ``contracts/cameras.py``)."""

from __future__ import annotations

import threading
import time

from contracts.cameras import CameraState

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
