"""A bounded queue whose overflow behaviour is a named, counted policy.

Cameras must never wait for the detector: when the queue is full, ``put`` returns at
once and one item is dropped — the new one (``drop_newest``) or the oldest waiting one
(``drop_oldest``, which keeps analysis as fresh as possible). The caller counts the drop
against the camera of the dropped item.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

from configs.schema import BackpressurePolicy

T = TypeVar("T")


class DropQueue(Generic[T]):
    """Bounded FIFO shared by camera threads (producers) and detector workers (consumers)."""

    def __init__(self, maxsize: int, policy: BackpressurePolicy) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        if policy not in ("drop_newest", "drop_oldest"):
            raise ValueError(f"unknown backpressure policy {policy!r}")
        self.maxsize = maxsize
        self.policy = policy
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> T | None:
        """Enqueue without blocking; returns the item that was dropped, if any."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return item
            dropped: T | None = None
            if len(self._items) >= self.maxsize:
                self.dropped += 1
                if self.policy == "drop_newest":
                    return item
                dropped = self._items.popleft()
            self._items.append(item)
            self._cond.notify()
            return dropped

    def get(self, timeout_s: float | None = None) -> T | None:
        """Dequeue, waiting up to ``timeout_s``; None on time-out or once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout_s)
            return self._items.popleft() if self._items else None

    def get_many(self, max_items: int, timeout_s: float | None = None) -> list[T]:
        """Wait up to ``timeout_s`` for one item, then take it and whatever else is queued, up to ``max_items``.

        Never waits for a batch to fill: at light load a consumer gets single items at once,
        under load it gets what piled up while it was busy.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout_s)
            n = min(max_items, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def close(self) -> list[T]:
        """Stop accepting items, wake all consumers, and return what was still waiting."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return left

    def __len__(self) -> int:
        return len(self._items)
