"""Compressed video packets and the per-camera pre-roll ring buffer.

A camera keeps its last few seconds as *compressed* packets (a 720p H.264 second is
~100-500 kB, the same second decoded is ~80 MB), so that an event clip can start
before the event: the clip writer remuxes a :meth:`PacketRing.snapshot` without
re-encoding. A remuxed clip must start at a keyframe, so the ring stores and evicts
whole GOPs (a keyframe and the packets up to the next keyframe).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

import av


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One compressed video packet, detached from any container.

    Attributes:
        data: The packet payload exactly as demuxed (AVCC length-prefixed for MP4
            sources, Annex-B start codes for raw H.264/HEVC and most RTSP sources).
        pts: Presentation timestamp in ``time_base`` units.
        dts: Decoding timestamp in ``time_base`` units.
        duration: Duration in ``time_base`` units, if known.
        time_base: Unit of ``pts``/``dts``/``duration`` in seconds.
        is_keyframe: The packet starts a GOP (decoding can begin here).
        wall_ts: Epoch seconds when the packet was received: the live capture time.
    """

    data: bytes
    pts: int | None
    dts: int | None
    duration: int | None
    time_base: Fraction
    is_keyframe: bool
    wall_ts: float

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    @classmethod
    def from_av_packet(cls, packet: av.Packet, wall_ts: float) -> EncodedPacket:
        """Copy a demuxed PyAV packet (its payload and timing) into a picklable packet."""
        time_base = packet.time_base
        if time_base is None:
            raise ValueError(f"packet {packet!r} has no time base")
        return cls(
            data=bytes(packet),
            pts=packet.pts,
            dts=packet.dts,
            duration=packet.duration or None,
            time_base=Fraction(time_base),
            is_keyframe=bool(packet.is_keyframe),
            wall_ts=wall_ts,
        )


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a remuxer needs to know about a video stream, independent of any open container.

    Attributes:
        codec_name: FFmpeg codec name, e.g. ``"h264"`` or ``"hevc"``.
        width: Coded picture width in pixels.
        height: Coded picture height in pixels.
        extradata: Codec configuration: an avcC/hvcC record (MP4 sources; first byte 1)
            or Annex-B parameter sets (RTSP SDP), or None when they are only in-band.
        time_base: Unit of the packets' timestamps in seconds.
        avg_fps: Average frame rate, if the source declares one.
    """

    codec_name: str
    width: int
    height: int
    extradata: bytes | None
    time_base: Fraction
    avg_fps: float | None

    @classmethod
    def from_av_stream(cls, stream: av.VideoStream) -> StreamInfo:
        """Summarise an open PyAV input video stream."""
        ctx = stream.codec_context
        if stream.time_base is None:
            raise ValueError(f"stream {stream!r} has no time base")
        rate = stream.average_rate or stream.guessed_rate
        extradata = ctx.extradata
        return cls(
            codec_name=ctx.name,
            width=ctx.width,
            height=ctx.height,
            extradata=bytes(extradata) if extradata else None,
            time_base=Fraction(stream.time_base),
            avg_fps=float(rate) if rate else None,
        )


@dataclass(frozen=True, slots=True)
class RingStats:
    """A consistent snapshot of a :class:`PacketRing`'s size and counters."""

    num_packets: int
    num_gops: int
    bytes: int
    seconds: float
    evicted_packets: int
    evicted_bytes: int
    skipped_packets: int
    over_budget_gops: int


@dataclass(slots=True)
class _Gop:
    packets: list[EncodedPacket] = field(default_factory=list)
    size_bytes: int = 0
    over_budget: bool = False  # already counted as an over-budget GOP


class PacketRing:
    """Bounded pre-roll buffer of compressed packets that always starts at a keyframe.

    Bounded by ``max_seconds`` (span of ``wall_ts`` from the oldest to the newest kept
    packet) and by ``max_bytes``. When either is exceeded, whole GOPs are evicted from
    the front, so the ring holds between ``max_seconds - one GOP`` and ``max_seconds``:
    size ``max_seconds`` as pre-roll + one GOP. The newest (current) GOP is never
    evicted; if it alone exceeds a bound it is kept and counted in ``over_budget_gops``.
    Packets before the first keyframe (after construction or :meth:`clear`) cannot
    start a clip and are dropped (``skipped_packets``).

    One camera thread appends while other threads snapshot: every method takes a lock.
    """

    def __init__(self, max_seconds: float, max_bytes: int) -> None:
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes!r}")
        self.max_seconds = float(max_seconds)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._gops: deque[_Gop] = deque()
        self._bytes = 0
        self._num_packets = 0
        self._evicted_packets = 0
        self._evicted_bytes = 0
        self._skipped_packets = 0
        self._over_budget_gops = 0

    def append(self, pkt: EncodedPacket) -> None:
        """Add the newest packet, then evict old GOPs while over a bound."""
        with self._lock:
            if pkt.is_keyframe:
                self._gops.append(_Gop())
            elif not self._gops:
                self._skipped_packets += 1
                return
            gop = self._gops[-1]
            gop.packets.append(pkt)
            gop.size_bytes += len(pkt.data)
            self._bytes += len(pkt.data)
            self._num_packets += 1
            self._evict_locked()

    def _seconds_locked(self) -> float:
        if not self._gops:
            return 0.0
        return self._gops[-1].packets[-1].wall_ts - self._gops[0].packets[0].wall_ts

    def _over_locked(self) -> bool:
        return self._bytes > self.max_bytes or self._seconds_locked() > self.max_seconds

    def _evict_locked(self) -> None:
        while len(self._gops) > 1 and self._over_locked():
            old = self._gops.popleft()
            self._bytes -= old.size_bytes
            self._num_packets -= len(old.packets)
            self._evicted_packets += len(old.packets)
            self._evicted_bytes += old.size_bytes
        current = self._gops[-1] if self._gops else None
        if current is not None and not current.over_budget and self._over_locked():
            current.over_budget = True
            self._over_budget_gops += 1

    def snapshot(self, since_wall_ts: float) -> list[EncodedPacket]:
        """Packets from the last keyframe at or before ``since_wall_ts`` through the newest.

        If ``since_wall_ts`` is older than the ring, the snapshot starts at the oldest
        kept keyframe. An empty ring gives an empty list.
        """
        with self._lock:
            start = 0
            for i, gop in enumerate(self._gops):
                if gop.packets[0].wall_ts <= since_wall_ts:
                    start = i
                else:
                    break
            out: list[EncodedPacket] = []
            for i in range(start, len(self._gops)):
                out.extend(self._gops[i].packets)
            return out

    def clear(self) -> None:
        """Drop every packet (on reconnect or codec change: they belong to another stream).

        Counters are kept; packets up to the next keyframe are skipped again.
        """
        with self._lock:
            self._gops.clear()
            self._bytes = 0
            self._num_packets = 0

    def stats(self) -> RingStats:
        """Size and counters read under one lock acquisition."""
        with self._lock:
            return RingStats(
                num_packets=self._num_packets,
                num_gops=len(self._gops),
                bytes=self._bytes,
                seconds=self._seconds_locked(),
                evicted_packets=self._evicted_packets,
                evicted_bytes=self._evicted_bytes,
                skipped_packets=self._skipped_packets,
                over_budget_gops=self._over_budget_gops,
            )

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def seconds(self) -> float:
        """Span of ``wall_ts`` from the oldest to the newest kept packet."""
        with self._lock:
            return self._seconds_locked()

    @property
    def num_packets(self) -> int:
        with self._lock:
            return self._num_packets

    @property
    def num_gops(self) -> int:
        with self._lock:
            return len(self._gops)

    @property
    def evicted_packets(self) -> int:
        with self._lock:
            return self._evicted_packets

    @property
    def evicted_bytes(self) -> int:
        with self._lock:
            return self._evicted_bytes

    @property
    def skipped_packets(self) -> int:
        """Packets dropped because no keyframe had been seen yet."""
        with self._lock:
            return self._skipped_packets

    @property
    def over_budget_gops(self) -> int:
        """GOPs that alone exceeded a bound (kept anyway, since they are current)."""
        with self._lock:
            return self._over_budget_gops

    @property
    def over_budget(self) -> bool:
        with self._lock:
            return self._over_locked()
