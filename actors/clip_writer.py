"""Remux compressed packets (a :class:`~actors.packets.PacketRing` snapshot) into an MP4 clip.

No frame is decoded or re-encoded: the clip holds the camera's own packets, so writing
a 10 s 1080p clip costs milliseconds and the evidence is bit-exact.

How the output stream is configured without the source container:
PyAV 18's ``add_stream(codec)`` opens an *encoder* when the header is written (and
libx264 then replaces the extradata with its own), and ``add_mux_stream`` cannot set
extradata. So a codec-less template stream is taken from an empty raw-bitstream input
(``av.open(BytesIO(b""), format="h264")``), copied with ``add_stream_from_template``
(whose codec context is never opened), and the stored :class:`StreamInfo` fields
(size, time base, extradata) are set on that copy before the header is written.

Both packet layouts work because FFmpeg's MP4 muxer follows the extradata:

* AVCC/HVCC packets (MP4 sources): extradata is the avcC/hvcC record (first byte 1);
  packets are written byte-for-byte.
* Annex-B packets (raw .h264, RTSP): extradata is Annex-B parameter sets or None; the
  muxer builds the avcC/hvcC from them (or from the first keyframe's in-band SPS/PPS)
  and rewrites start codes as 4-byte lengths.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging

from actors.packets import EncodedPacket, StreamInfo

log = logging.getLogger(__name__)

# Codec name -> FFmpeg raw-bitstream demuxer that yields a stream of that codec.
_TEMPLATE_FORMATS: dict[str, str] = {"h264": "h264", "hevc": "hevc"}
# NAL unit types of the sequence parameter set: the decoder cannot start without it.
_SPS_NAL_TYPE: dict[str, int] = {"h264": 7, "hevc": 33}


@dataclass(frozen=True, slots=True)
class ClipInfo:
    """A written clip.

    Attributes:
        path: The MP4 file.
        size_bytes: Its size on disk.
        num_packets: Packets written (= frames for video).
        duration_s: Presentation span, first frame start to last frame end.
        start_wall_ts: Receive time (epoch s) of the first written packet.
        end_wall_ts: Receive time (epoch s) of the last written packet.
        skipped_leading: Packets before the first keyframe, not written.
        dropped_packets: Packets dropped because their timestamps could not be made valid.
        adjusted_packets: Packets whose dts was nudged to keep dts strictly increasing.
    """

    path: Path
    size_bytes: int
    num_packets: int
    duration_s: float
    start_wall_ts: float
    end_wall_ts: float
    skipped_leading: int = 0
    dropped_packets: int = 0
    adjusted_packets: int = 0


@dataclass(frozen=True, slots=True)
class _Timed:
    pkt: EncodedPacket
    pts: int
    dts: int
    duration: int | None


def is_annexb(data: bytes) -> bool:
    """True if ``data`` starts with an Annex-B start code (00 00 01 or 00 00 00 01)."""
    return data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")


def _annexb_nal_types(data: bytes, codec_name: str) -> set[int]:
    types: set[int] = set()
    i = data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        header = data[i + 3]
        types.add(header & 0x1F if codec_name == "h264" else (header >> 1) & 0x3F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


def _check_layout(info: StreamInfo, first: EncodedPacket) -> None:
    """Refuse inputs the MP4 muxer would turn into an undecodable file."""
    if info.extradata and info.extradata[0] == 1:
        return  # avcC/hvcC record: packets are length-prefixed and written as they are
    if not is_annexb(first.data):
        raise ValueError(
            f"{info.codec_name} packets are not Annex-B (first bytes {first.data[:4].hex()}) and "
            f"extradata is {'missing' if not info.extradata else info.extradata[:4].hex()}: "
            "length-prefixed packets need their avcC/hvcC extradata"
        )
    if info.extradata:
        return  # Annex-B parameter sets (e.g. from an RTSP SDP)
    if _SPS_NAL_TYPE[info.codec_name] not in _annexb_nal_types(first.data, info.codec_name):
        raise ValueError(
            f"no extradata and the first keyframe (pts={first.pts}) carries no in-band "
            f"{info.codec_name} SPS: the clip would not decode"
        )


def _rescale(ts: int | None, src: Fraction, dst: Fraction) -> int | None:
    if ts is None or src == dst:
        return ts
    return round(ts * src / dst)


def _frame_ticks(info: StreamInfo, timed: Sequence[_Timed]) -> int:
    """Typical frame duration in time-base ticks, for a last packet without a duration."""
    durations = Counter(t.duration for t in timed if t.duration)
    if durations:
        return durations.most_common(1)[0][0]
    deltas = Counter(b.dts - a.dts for a, b in itertools.pairwise(timed) if b.dts > a.dts)
    if deltas:
        return deltas.most_common(1)[0][0]
    if info.avg_fps:
        return max(1, round(1 / (info.avg_fps * info.time_base)))
    return 1


def _retime(info: StreamInfo, packets: Sequence[EncodedPacket]) -> tuple[list[_Timed], int, int]:
    """Rebase timestamps so the clip starts at 0 and make dts strictly increasing.

    Returns:
        The packets to write with their new timestamps, the number dropped and the
        number whose dts was adjusted.
    """
    tb = info.time_base
    origin: int | None = None
    prev_dts: int | None = None
    prev_step = 1
    out: list[_Timed] = []
    dropped = adjusted = 0
    for pkt in packets:
        pts = _rescale(pkt.pts, pkt.time_base, tb)
        dts = _rescale(pkt.dts, pkt.time_base, tb)
        duration = _rescale(pkt.duration, pkt.time_base, tb)
        if pts is None and dts is None:
            # No timing at all: one frame after the previous one.
            dts = pts = 0 if prev_dts is None else prev_dts + prev_step
        else:
            if origin is None:
                origin = pts if pts is not None else dts
            assert origin is not None
            pts = None if pts is None else pts - origin
            dts = None if dts is None else dts - origin
            # A missing dts is only recoverable without B-frames, where dts == pts.
            dts = pts if dts is None else dts
            pts = dts if pts is None else pts
        assert pts is not None and dts is not None
        if prev_dts is not None and dts <= prev_dts:
            if prev_dts + 1 > pts:
                dropped += 1
                continue
            dts = prev_dts + 1
            adjusted += 1
        if pts < dts:
            dropped += 1
            continue
        if prev_dts is not None:
            prev_step = max(1, dts - prev_dts)
        prev_dts = dts
        out.append(_Timed(pkt=pkt, pts=pts, dts=dts, duration=duration or None))
    return out, dropped, adjusted


def _add_stream(container: av.container.OutputContainer, info: StreamInfo) -> av.VideoStream:
    fmt = _TEMPLATE_FORMATS[info.codec_name]
    # Capture: probing the empty input logs "could not find codec parameters", which is expected.
    with av.logging.Capture(local=True), av.open(io.BytesIO(b""), format=fmt) as template_src:
        stream = container.add_stream_from_template(template_src.streams.video[0])
    ctx = stream.codec_context
    ctx.width = info.width
    ctx.height = info.height
    ctx.time_base = info.time_base
    stream.time_base = info.time_base
    if info.extradata:
        ctx.extradata = info.extradata
    return stream


def write_mp4(path: Path, info: StreamInfo, packets: Sequence[EncodedPacket]) -> ClipInfo:
    """Remux ``packets`` into an MP4 at ``path`` without re-encoding.

    The clip starts at the first keyframe (earlier packets are skipped), its
    timestamps are rebased so the first frame is at 0, and packets whose dts would
    not increase are nudged or dropped (counted in the result). The file is written
    to ``path.with_suffix('.part')`` and renamed, so readers never see half a clip.

    Raises:
        ValueError: No keyframe, an unsupported codec, or packets that cannot be
            decoded with the given extradata.
        av.error.FFmpegError: The muxer refused the stream or a packet.
        OSError: The file could not be written.
    """
    if info.codec_name not in _TEMPLATE_FORMATS:
        raise ValueError(f"cannot remux codec {info.codec_name!r}: supported {sorted(_TEMPLATE_FORMATS)}")
    first_key = next((i for i, p in enumerate(packets) if p.is_keyframe), None)
    if first_key is None:
        raise ValueError(f"no keyframe among {len(packets)} packets: cannot start a clip at {path}")
    _check_layout(info, packets[first_key])
    timed, dropped, adjusted = _retime(info, packets[first_key:])
    tb = info.time_base

    last_ticks = _frame_ticks(info, timed)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    try:
        with av.open(str(part), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
            stream = _add_stream(out, info)
            for i, t in enumerate(timed):
                packet = av.Packet(t.pkt.data)
                packet.pts = t.pts
                packet.dts = t.dts
                # A packet without a duration (the receive loop's, some RTSP servers') gets the step to the
                # next one; the last gets the typical frame length. Without it MP4 gives the last sample
                # zero length and players (FFmpeg included) drop that frame.
                packet.duration = t.duration or (timed[i + 1].dts - t.dts if i + 1 < len(timed) else last_ticks)
                packet.time_base = tb
                packet.is_keyframe = t.pkt.is_keyframe
                packet.stream = stream
                out.mux(packet)
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)  # a failed write leaves nothing behind

    end = max(t.pts + (t.duration or last_ticks) for t in timed)
    start = min(t.pts for t in timed)
    if dropped or adjusted:
        log.warning("clip %s: dropped %d and adjusted %d packets with bad dts", path, dropped, adjusted)
    return ClipInfo(
        path=path,
        size_bytes=path.stat().st_size,
        num_packets=len(timed),
        duration_s=float((end - start) * tb),
        start_wall_ts=timed[0].pkt.wall_ts,
        end_wall_ts=timed[-1].pkt.wall_ts,
        skipped_leading=first_key,
        dropped_packets=dropped,
        adjusted_packets=adjusted,
    )
