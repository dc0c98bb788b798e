"""Which decoded frames the analytics take: the one sampling rule of the product, shared with the benchmarks.

Plain Python (no Ray, no PyAV), so the benchmarks' raw loops and the GPU node scripts convert exactly the frames the
product would.
"""

from __future__ import annotations


class FrameSampler:
    """One frame per ``1 / fps`` of stream time, on the frame times the stream gives.

    A frame is taken when its time reaches the next due time (1 ms of slack for rounding in the time base); the next
    due time is one interval later, but never earlier than half an interval after the frame taken, so a stream that
    jumps ahead (a gap, a reconnect) does not get a burst of frames to catch up.

    Args:
        fps: analytics frames per second of stream time (> 0).
    """

    __slots__ = ("interval_s", "next_t")

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"analytics fps {fps!r} must be > 0")
        self.interval_s = 1.0 / fps
        self.next_t = 0.0

    def take(self, t: float) -> bool:
        """Take the frame at ``t`` if it is due; returns whether it was taken."""
        if t + 1e-3 < self.next_t:
            return False
        self.next_t = max(self.next_t + self.interval_s, t + self.interval_s * 0.5)
        return True
