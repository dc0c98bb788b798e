"""One camera: demux → compressed ring buffer → sampler → decode → frames for the detector.

A :class:`CameraStream` owns one persistent demuxer and decoder, in one thread, for
the life of the camera (reconnecting as needed). PyAV releases the GIL while it
demuxes and decodes, so one shard process runs many such threads.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import av
import numpy as np

from actors.camera_state import StateMachine
from actors.decoder import open_codec_decoder, open_decoder
from actors.frame_sampler import FrameSampler
from actors.motion import MotionGate
from actors.packets import EncodedPacket, PacketRing, StreamInfo
from actors.rtsp_receive import (
    RTP_CLOCK_HZ,
    START_CODE,
    AccessUnit,
    RtspError,
    RtspReceiver,
    RtspSession,
    UnsupportedCodec,
)
from configs.redact import redact_url
from configs.schema import CameraConfig, IngestConfig
from contracts.cameras import CameraState, CameraStatus

log = logging.getLogger(__name__)

MAX_BAD_PACKETS_IN_A_ROW = 25


@dataclass(frozen=True, slots=True)
class SampledFrame:
    """A decoded frame chosen by the sampler, on its way to the detector."""

    camera_id: str
    frame_seq: int
    capture_ts: float
    image: np.ndarray  # BGR, frame resolution
    static: bool = False  # the motion gate saw no change since the last analysed frame
    ready_ts: float = 0.0
    """Wall-clock time the BGR image was ready (``ready_ts - capture_ts`` is the decode stage)."""
    enqueued_ts: float = 0.0
    """Wall-clock time the shard queued it for the detector (set by the shard)."""


@dataclass(slots=True)
class StreamCounters:
    """Monotonic per-camera counters (read by the shard for metrics and status)."""

    packets: int = 0
    keyframes: int = 0
    bytes: int = 0
    frames_decoded: int = 0
    frames_sampled: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    rtp_lost_packets: int = 0
    """Loop receiver only: RTP packets lost to sequence gaps."""
    units_dropped: int = 0
    """Loop receiver only: access units dropped because a packet of theirs was lost or malformed."""
    decode_s: float = 0.0
    """CPU seconds (this thread's) spent in the decoder and the BGR conversion: the decode stage's cost, not
    its wait, so that it stays true on a busy machine."""


def is_file_source(url: str) -> bool:
    """True for local files (plain paths or file:// URLs), which are paced at native rate."""
    scheme = urlsplit(url).scheme.lower()
    return scheme in {"", "file"} or len(scheme) == 1  # a Windows drive letter reads as a scheme


def _open_options(cfg: CameraConfig, ingest: IngestConfig) -> dict[str, str]:
    scheme = urlsplit(cfg.url).scheme.lower()
    opts: dict[str, str] = {}
    if scheme in {"rtsp", "rtsps"}:
        opts["rtsp_transport"] = cfg.rtsp_transport
        opts["stimeout"] = str(int(ingest.stall_timeout_s * 1e6))
        opts["timeout"] = str(int(ingest.stall_timeout_s * 1e6))
    elif scheme in {"http", "https"}:
        opts["rw_timeout"] = str(int(ingest.stall_timeout_s * 1e6))
        opts["reconnect"] = "0"
    return opts


class CameraStream:
    """Demux, buffer, sample and decode one camera in its own thread.

    Args:
        cfg: The camera.
        shard: Name of the owning shard (for status).
        ingest: Time-outs and back-off.
        ring: Pre-roll ring buffer of compressed packets for this camera.
        on_frame: Called from the camera thread with each sampled frame. Must not block.
        on_packet: Called with each packet after it entered the ring (the recorder).
        on_stream_info: Called when the stream (re)opens with its codec parameters.
        receiver: The shard's one receive loop (``ingest.rtsp_receiver: loop``): an ``rtsp://`` camera is
            received there instead of by its own FFmpeg demuxer; this thread then only connects, waits
            and reconnects. Other sources, and cameras that are not H.264, use FFmpeg.
        realtime: Pace packets at the stream's native rate. Default: files are paced (replayed
            as live cameras), network sources are not (they arrive in real time). Benchmarks
            turn pacing off to measure the path's throughput.
    """

    def __init__(
        self,
        cfg: CameraConfig,
        *,
        shard: str,
        ingest: IngestConfig,
        ring: PacketRing,
        on_frame: Callable[[SampledFrame], None],
        on_packet: Callable[[EncodedPacket], None] | None = None,
        on_stream_info: Callable[[StreamInfo], None] | None = None,
        realtime: bool | None = None,
        receiver: RtspReceiver | None = None,
    ) -> None:
        self.cfg = cfg
        self.shard = shard
        self.ingest = ingest
        self.ring = ring
        self._on_frame = on_frame
        self._on_packet = on_packet
        self._on_stream_info = on_stream_info
        self.sm = StateMachine()
        self.counters = StreamCounters()
        self.info: StreamInfo | None = None
        self.last_packet_ts: float | None = None
        self.frames_dropped = 0
        self.detections_received = 0
        self.events_opened = 0
        self._frame_seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cam-{cfg.id}", daemon=True)
        self._file = is_file_source(cfg.url)
        self._paced = self._file if realtime is None else realtime
        self.gate = MotionGate(cfg.motion_threshold, cfg.motion_max_skip_s) if cfg.motion_gate else None
        self.decoder_backend = "cpu"
        self.decoder_note = "not opened yet"  # why this decoder (e.g. NVDEC asked for but unavailable)
        self._safe_url = redact_url(cfg.url)
        # Timestamps keep rising across loops and reconnects so clips stay monotonic.
        self._ts_offset_s = 0.0
        self._sampler = FrameSampler(cfg.analytics_fps)  # persists across loops and reconnects, as the offset
        self._receiver = receiver if urlsplit(cfg.url).scheme.lower() == "rtsp" else None
        self._loop: _LoopSession | None = None
        self._end_reason = ""

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if (loop := self._loop) is not None:
            loop.lost.set()  # wake the camera thread waiting on the receive loop at once
        self._thread.join(timeout_s)
        self.sm.to(CameraState.RETIRED, "stopped")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> CameraStatus:
        state = self.sm.state
        now = time.time()
        if (
            state is CameraState.STREAMING
            and self.last_packet_ts is not None
            and now - self.last_packet_ts > self.ingest.stall_timeout_s
        ):
            self.sm.to(CameraState.STALLED, f"no packet for {now - self.last_packet_ts:.1f} s")
            state = CameraState.STALLED
        return CameraStatus(
            camera_id=self.cfg.id,
            district=self.cfg.district,
            shard=self.shard,
            state=state,
            reason=self.sm.reason,
            since_ts=self.sm.since_ts,
            last_packet_ts=self.last_packet_ts,
            packets=self.counters.packets,
            keyframes=self.counters.keyframes,
            frames_decoded=self.counters.frames_decoded,
            frames_sampled=self.counters.frames_sampled,
            frames_static=self.gate.skipped if self.gate is not None else 0,
            decode_errors=self.counters.decode_errors,
            decoder=self.decoder_backend,
            decoder_note=self.decoder_note,
            frames_dropped=self.frames_dropped,
            detections_received=self.detections_received,
            reconnects=self.counters.reconnects,
            events_opened=self.events_opened,
            width=self.info.width if self.info else None,
            height=self.info.height if self.info else None,
            codec=self.info.codec_name if self.info else None,
        )

    # -- the camera thread ------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        backoff_s = self.ingest.reconnect_initial_s
        while not self._stop.is_set():
            try:
                got_packets = self._session()
            except (av.error.FFmpegError, OSError, ValueError, IndexError, RtspError) as exc:
                got_packets = False
                failures += 1
                reason = self._describe(exc)
                state = (
                    CameraState.DOWN if failures >= self.ingest.max_failures_before_down else CameraState.RECONNECTING
                )
                self.sm.to(state, reason)
                log.warning("camera %s %s: %s", self.cfg.id, state.value, reason)
            else:
                if got_packets:
                    failures, backoff_s = 0, self.ingest.reconnect_initial_s
                    if self._file and self.cfg.loop:
                        continue  # loop a file at once, as a live source would go on
                    if self._file:
                        self.sm.to(CameraState.DOWN, "end of file (loop is off)")
                        return
                    self.sm.to(CameraState.RECONNECTING, self._end_reason or "stream ended")
                else:
                    failures += 1
                    self.sm.to(
                        CameraState.DOWN
                        if failures >= self.ingest.max_failures_before_down
                        else CameraState.RECONNECTING,
                        "stream opened but carried no video packet",
                    )
            if self._stop.is_set():
                break
            self.counters.reconnects += 1
            delay_s = backoff_s * random.uniform(0.8, 1.2)
            backoff_s = min(backoff_s * 2, self.ingest.reconnect_max_s)
            self._stop.wait(delay_s)

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).replace(self.cfg.url, self._safe_url)
        return f"{type(exc).__name__}: {redact_url(text)}"[:300]

    def _session(self) -> bool:
        """Open the source once and pump it until it ends; True if any packet arrived."""
        if self.sm.state not in (CameraState.CONNECTING, CameraState.DOWN):
            # A down camera keeps its state and last reason while it is retried.
            self.sm.to(CameraState.CONNECTING, f"opening {self._safe_url}")
        if self._receiver is not None:
            return self._receive_session(self._receiver)
        url = self.cfg.url
        if self._file:
            path = Path(urlsplit(url).path if url.startswith("file:") else url)
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            url = str(path)
        container = av.open(
            url,
            options=_open_options(self.cfg, self.ingest),
            timeout=(self.ingest.open_timeout_s, self.ingest.stall_timeout_s),
        )
        try:
            if not container.streams.video:
                raise ValueError("source has no video stream")
            stream = container.streams.video[0]
            self._set_info(StreamInfo.from_av_stream(stream))
            decoder = open_decoder(stream, self.ingest.decoder, keyframe_only=self.cfg.decode_mode == "keyframe")
            self.decoder_backend, self.decoder_note = decoder.backend, decoder.note
            if self.ingest.decoder != "cpu" and decoder.backend == "cpu":
                log.warning("camera %s: %s", self.cfg.id, decoder.note)
            return self._pump(container, stream, decoder.codec_context)
        finally:
            container.close()

    def _set_info(self, info: StreamInfo) -> None:
        """Adopt new stream parameters; a codec or size change starts a new pre-roll."""
        old = self.info
        if old is not None and (info.codec_name, info.width, info.height) != (old.codec_name, old.width, old.height):
            log.info(
                "camera %s changed stream: %s %dx%d -> %s %dx%d",
                self.cfg.id,
                old.codec_name,
                old.width,
                old.height,
                info.codec_name,
                info.width,
                info.height,
            )
            self.ring.clear()  # old packets belong to another stream: a clip must not mix them
            if self.gate is not None:
                self.gate.reset()
        self.info = info
        if self._on_stream_info is not None:
            self._on_stream_info(info)

    def _pump(
        self,
        container: av.container.InputContainer,
        stream: av.VideoStream,
        codec: av.codec.context.CodecContext,
    ) -> bool:
        tb = stream.time_base
        if tb is None:
            raise ValueError("video stream has no time base")
        line = _Timeline(tb, self._ts_offset_s)
        start_wall = time.time()
        for packet in container.demux(stream):
            if self._stop.is_set():
                break
            if packet.size == 0:
                continue  # flush packet at end of stream
            t_rel = line.see(packet.pts if packet.pts is not None else packet.dts)
            if self._paced:
                # Files are replayed as live cameras: at their native rate.
                delay_s = start_wall + t_rel - time.time()
                if delay_s > 0 and self._stop.wait(delay_s):
                    break
            now = time.time()
            pkt = EncodedPacket(
                data=bytes(packet),
                pts=line.shifted(packet.pts),
                dts=line.shifted(packet.dts),
                duration=packet.duration,
                time_base=tb,
                is_keyframe=packet.is_keyframe,
                wall_ts=now,
            )
            self._accept(pkt, now)
            self._decode(codec, packet, line, t_rel, now)
        if line.first_t is not None:
            frame_s = 1.0 / float(stream.average_rate) if stream.average_rate else 0.04
            self._ts_offset_s = line.end_offset_s(frame_s)
        return line.got

    # -- shared by both receive paths ---------------------------------------------------

    def _accept(self, pkt: EncodedPacket, now: float) -> None:
        """A packet arrived: the state machine, the ring, the recorder and the counters learn of it."""
        state = self.sm.state
        if state is not CameraState.STREAMING:
            why = "packets resumed" if state is CameraState.STALLED else "receiving packets"
            self.sm.to(CameraState.STREAMING, why)
        self.ring.append(pkt)
        if self._on_packet is not None:
            self._on_packet(pkt)
        c = self.counters
        c.packets += 1
        c.bytes += len(pkt.data)
        c.keyframes += int(pkt.is_keyframe)
        self.last_packet_ts = now

    def _decode(
        self,
        codec: av.codec.context.CodecContext,
        packet: av.Packet,
        line: _Timeline,
        t_rel: float,
        now: float,
    ) -> None:
        """Decode what the decode mode asks for and hand the sampled frames on.

        Raises:
            av.error.InvalidDataError: ``MAX_BAD_PACKETS_IN_A_ROW`` corrupt packets in a row (a broken source).
        """
        c = self.counters
        if self.cfg.decode_mode == "keyframe" and not packet.is_keyframe:
            return  # never hand a non-key packet to the decoder
        t_dec = time.thread_time()
        try:
            frames = codec.decode(packet)
        except av.error.InvalidDataError:
            # A corrupt packet costs that frame, not the stream; many in a row mean a broken source.
            c.decode_errors += 1
            line.bad_in_a_row += 1
            if line.bad_in_a_row >= MAX_BAD_PACKETS_IN_A_ROW:
                raise
            return
        line.bad_in_a_row = 0
        c.decode_s += time.thread_time() - t_dec
        for frame in frames:
            c.frames_decoded += 1
            if self.info is None or (frame.width, frame.height) != (self.info.width, self.info.height):
                self._set_info(self._info_for(frame))
            frame_t = self._ts_offset_s + (t_rel if frame.pts is None else (frame.pts - line.first_ticks) * line.tb_s)
            if not self._sampler.take(frame_t) and self.cfg.decode_mode != "all":
                continue
            c.frames_sampled += 1
            self._frame_seq += 1
            t_conv = time.thread_time()
            image = frame.to_ndarray(format="bgr24")
            c.decode_s += time.thread_time() - t_conv
            ready_ts = time.time()
            static = self.gate is not None and not self.gate.decide(image, now).analyse
            self._on_frame(
                SampledFrame(
                    camera_id=self.cfg.id,
                    frame_seq=self._frame_seq,
                    capture_ts=now,
                    image=image,
                    static=static,
                    ready_ts=ready_ts,
                )
            )

    def _info_for(self, frame: av.VideoFrame) -> StreamInfo:
        """Stream parameters after a decoded frame showed a new size (or the first one, on the loop path)."""
        if self.info is not None:
            return dataclasses.replace(self.info, width=frame.width, height=frame.height)
        loop = self._loop
        return StreamInfo(
            codec_name="h264",
            width=frame.width,
            height=frame.height,
            extradata=loop.parameter_sets if loop is not None else None,
            time_base=Fraction(1, RTP_CLOCK_HZ),
            avg_fps=None,
        )

    # -- the receive-loop path (ingest.rtsp_receiver: loop) --------------------------------

    def _receive_session(self, receiver: RtspReceiver) -> bool:
        """Hand the camera to the shard's receive loop and wait here until it is lost or stopped."""
        loop = _LoopSession(
            _Timeline(Fraction(1, RTP_CLOCK_HZ), self._ts_offset_s),
            lost_base=self.counters.rtp_lost_packets,
            dropped_base=self.counters.units_dropped,
        )
        self._end_reason = ""
        choice = open_codec_decoder("h264", self.ingest.decoder, keyframe_only=self.cfg.decode_mode == "keyframe")
        loop.codec = choice.codec_context
        self.decoder_backend, self.decoder_note = choice.backend, choice.note
        self._loop = loop
        try:
            loop.session = receiver.connect(
                self.cfg.id,
                self.cfg.url,
                self.cfg.rtsp_transport,
                timeout_s=self.ingest.open_timeout_s,
                on_unit=lambda unit: self._on_unit(loop, unit),
                on_lost=lambda reason: self._on_lost(loop, reason),
            )
        except UnsupportedCodec as exc:
            log.info("camera %s: %s; reading it with FFmpeg instead", self.cfg.id, exc)
            self._receiver = None
            return self._session()
        try:
            while not loop.lost.wait(1.0) and not self._stop.is_set():
                pass
        finally:
            receiver.disconnect(loop.session)
            loop.closed = True
            self._sync_receive_counters(loop)
        if loop.line.first_t is not None:
            self._ts_offset_s = loop.line.end_offset_s(1.0 / 30)
        if loop.error is not None:
            raise loop.error
        self._end_reason = loop.reason
        return loop.line.got

    def _on_unit(self, loop: _LoopSession, unit: AccessUnit) -> None:
        """One access unit, on the receive thread (never raises: a failure ends this camera's session only)."""
        if loop.closed or self._stop.is_set():
            return
        line = loop.line
        if not line.got and not unit.is_keyframe:
            loop.skipped += 1  # nothing before the first keyframe can be decoded or clipped: counted as dropped
            if loop.skipped == 1:
                self._sync_receive_counters(loop)
            return
        key = unit.is_keyframe
        t_rel = line.see(unit.pts_90khz)
        pts = line.shifted(unit.pts_90khz)
        pkt = EncodedPacket(
            data=unit.data,
            pts=pts,
            dts=pts,
            duration=None,
            time_base=line.tb,
            is_keyframe=key,
            wall_ts=unit.wall_ts,
        )
        if not key and self.cfg.decode_mode == "keyframe":
            self._accept(pkt, unit.wall_ts)  # the common case: into the ring, never to the decoder
            return
        packet = av.Packet(unit.data)  # a copy for FFmpeg: made only for what is decoded
        packet.pts = packet.dts = unit.pts_90khz
        packet.time_base = line.tb
        packet.is_keyframe = key
        try:
            if key:
                loop.parameter_sets = _parameter_sets(unit.data)
                self._sync_receive_counters(loop)  # once a GOP is often enough for counters read each second
            if self.info is None:
                self._decode(loop.codec, packet, line, t_rel, unit.wall_ts)  # learns the size before the ring
                self._accept(pkt, unit.wall_ts)
            else:
                self._accept(pkt, unit.wall_ts)
                self._decode(loop.codec, packet, line, t_rel, unit.wall_ts)
        except (av.error.FFmpegError, ValueError) as exc:
            loop.error = exc
            loop.lost.set()

    def _on_lost(self, loop: _LoopSession, reason: str) -> None:
        loop.reason = reason
        loop.lost.set()

    def _sync_receive_counters(self, loop: _LoopSession) -> None:
        if loop.session is None:
            return
        rc, c = loop.session.counters, self.counters
        c.rtp_lost_packets = loop.lost_base + rc.lost_packets
        c.units_dropped = loop.dropped_base + rc.dropped_units + loop.skipped


class _Timeline:
    """Timestamps of one session: relative times, and ticks shifted so they keep rising across sessions."""

    __slots__ = ("_offset_s", "bad_in_a_row", "first_t", "first_ticks", "got", "last_t", "shift", "tb", "tb_s")

    def __init__(self, tb: Fraction, offset_s: float) -> None:
        self.tb, self.tb_s = tb, float(tb)  # float, not Fraction, on the per-packet path
        self.first_t: float | None = None
        self.first_ticks = 0
        self.last_t = 0.0
        self.shift = 0
        self.got = False
        self.bad_in_a_row = 0
        self._offset_s = offset_s

    def see(self, ticks: int | None) -> float:
        """A packet's timestamp in; seconds since the session's first packet out."""
        t = ticks * self.tb_s if ticks is not None else self.last_t
        if self.first_t is None:
            self.first_t, self.first_ticks = t, ticks or 0
            self.shift = round(self._offset_s / self.tb_s) - self.first_ticks  # continuous across loops
        self.got = True
        self.last_t = max(self.last_t, t)
        return t - self.first_t

    def shifted(self, ticks: int | None) -> int | None:
        return None if ticks is None else ticks + self.shift

    def end_offset_s(self, frame_s: float) -> float:
        assert self.first_t is not None
        return self._offset_s + (self.last_t - self.first_t) + frame_s


@dataclass
class _LoopSession:
    """One connection of a camera on the receive loop; written by the receive thread."""

    line: _Timeline
    codec: av.codec.context.CodecContext | None = None
    session: RtspSession | None = None
    lost: threading.Event = dataclasses.field(default_factory=threading.Event)
    reason: str = ""
    error: Exception | None = None
    closed: bool = False
    skipped: int = 0
    parameter_sets: bytes | None = None
    lost_base: int = 0
    dropped_base: int = 0


def _parameter_sets(annexb: bytes) -> bytes | None:
    """The SPS and PPS NAL units of a keyframe access unit, as Annex-B (the recorder's extradata)."""
    nals = [n for n in annexb.split(START_CODE) if n and n[0] & 0x1F in (7, 8)]
    return START_CODE + START_CODE.join(nals) if nals else None
