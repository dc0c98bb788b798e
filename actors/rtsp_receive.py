"""One receive loop for many RTSP cameras: RTP over TCP or UDP depacketised in one thread, H.264 access units out.

Why (issue 16): with FFmpeg each live camera is a thread blocked in its own ``av_read_frame``; FFmpeg reads
an interleaved RTP packet with two ``recv`` calls (a 4-byte header, then the payload) and wakes its thread
for each, so at 360p a camera costs about 5 CPU-ms per second before any decoding, more than the keyframe
decode itself. Here one thread owns every camera's socket; it wakes every ``poll_interval_s``, reads each
socket once with a large buffer (many RTP packets per system call over TCP) and reassembles access units
in pure Python over a ``memoryview``. GStreamer's ``rtspsrc ! rtph264depay ! h264parse ! appsink`` was
measured as well and costs more than FFmpeg here (``benchmarks/performance/ingest_rtsp.py``).

What it does: RTSP ``DESCRIBE``/``SETUP``/``PLAY`` (Basic or Digest authentication), keep-alive
``OPTIONS`` within the server's session timeout, RTP sequence checks (an access unit with a lost packet is
dropped and counted, never handed on half), H.264 single NAL, STAP-A and FU-A packets (RFC 6184), the SDP's
parameter sets put in front of every IDR that lacks them, 32-bit RTP timestamps unwrapped. H.265 and other
codecs are refused at ``DESCRIBE`` with the codec named. Handshakes run on the caller's thread (``connect``),
so a camera that does not answer never delays the others' packets; reconnection policy belongs to the caller.

This is the measured candidate of issue 16. ``actors.stream.CameraStream`` still receives through PyAV.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from configs.redact import redact_url

log = logging.getLogger(__name__)

START_CODE = b"\x00\x00\x00\x01"
RTP_CLOCK_HZ = 90_000
_IDR, _SPS, _PPS, _STAP_A, _FU_A = 5, 7, 8, 24, 28


class RtspError(RuntimeError):
    """The RTSP exchange failed: the message names the request, the status and the camera (no credentials)."""


class UnsupportedCodec(RtspError):
    """The camera's video is not H.264: the caller can read it another way (FFmpeg)."""


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One H.264 access unit (one picture) in Annex-B form, as received.

    Attributes:
        camera_id: The camera it came from.
        data: NAL units, each behind a 4-byte start code; an IDR carries its SPS and PPS in front.
        pts_90khz: RTP timestamp, unwrapped to 64 bits, on the 90 kHz clock.
        is_keyframe: Contains an IDR slice (decoding can start here).
        wall_ts: Epoch seconds when its last packet was read.
    """

    camera_id: str
    data: bytes
    pts_90khz: int
    is_keyframe: bool
    wall_ts: float


@dataclass(slots=True)
class ReceiveCounters:
    """Per camera; only the receive thread writes them."""

    rtp_packets: int = 0
    bytes: int = 0
    access_units: int = 0
    keyframes: int = 0
    lost_packets: int = 0
    dropped_units: int = 0
    unsupported_nals: int = 0
    skipped_bytes: int = 0


class H264Depacketizer:
    """RTP payloads of one H.264 stream in, whole access units out (RFC 6184, non-interleaved mode)."""

    def __init__(self, camera_id: str, parameter_sets: list[bytes], counters: ReceiveCounters) -> None:
        self.camera_id = camera_id
        self.counters = counters
        self._param_sets = list(parameter_sets)
        self._nals: list[bytes] = []
        self._fu: list[bytes] | None = None
        self._ts: int | None = None
        self._damaged = False
        self._next_seq: int | None = None
        self._ts_high = 0
        self._last_ts32: int | None = None

    def push(self, packet: memoryview, wall_ts: float) -> tuple[AccessUnit, ...]:
        """One RTP packet; returns the access units it completed: usually none or one, two when it both
        starts a new timestamp after a lost marker and carries the marker itself."""
        if len(packet) < 12 or packet[0] >> 6 != 2:
            self.counters.lost_packets += 1
            self._damaged = True
            return ()
        b0, b1 = packet[0], packet[1]
        seq, ts = struct.unpack_from("!HI", packet, 2)
        offset = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension
            if len(packet) < offset + 4:
                self._damaged = True
                return ()
            offset += 4 + 4 * struct.unpack_from("!H", packet, offset + 2)[0]
        end = len(packet)
        if b0 & 0x20:  # padding
            end -= packet[-1]
        payload = packet[offset:end]
        c = self.counters
        c.rtp_packets += 1
        c.bytes += len(packet)
        if self._next_seq is not None and seq != self._next_seq:
            c.lost_packets += (seq - self._next_seq) & 0xFFFF
            self._damaged = True
            self._fu = None
        self._next_seq = (seq + 1) & 0xFFFF
        out: tuple[AccessUnit, ...] = ()
        if self._ts is not None and ts != self._ts and (self._nals or self._fu):
            closed = self._finish(wall_ts)  # the marker bit was lost: a new timestamp closes the unit
            if closed is not None:
                out = (closed,)
        self._ts = ts
        if payload:
            self._payload(payload)
        if b1 & 0x80:  # marker: last packet of the access unit
            done = self._finish(wall_ts)
            if done is not None:
                return (*out, done)
        return out

    def _payload(self, p: memoryview) -> None:
        nal_type = p[0] & 0x1F
        if 1 <= nal_type <= 23:
            self._nals.append(bytes(p))
        elif nal_type == _STAP_A:
            i = 1
            while i + 2 <= len(p):
                (size,) = struct.unpack_from("!H", p, i)
                i += 2
                if size == 0 or i + size > len(p):
                    self._damaged = True
                    return
                self._nals.append(bytes(p[i : i + size]))
                i += size
        elif nal_type == _FU_A:
            if len(p) < 2:
                self._damaged = True
                return
            fu = p[1]
            if fu & 0x80:  # start
                self._fu = [bytes(((p[0] & 0xE0) | (fu & 0x1F),)), bytes(p[2:])]
            elif self._fu is None:
                self._damaged = True  # a fragment without its start
                return
            else:
                self._fu.append(bytes(p[2:]))
            if fu & 0x40:  # end
                self._nals.append(b"".join(self._fu))
                self._fu = None
        else:
            self.counters.unsupported_nals += 1

    def _finish(self, wall_ts: float) -> AccessUnit | None:
        nals, damaged, ts = self._nals, self._damaged or self._fu is not None, self._ts
        self._nals, self._fu, self._damaged = [], None, False
        if not nals or ts is None:
            return None
        if damaged:
            self.counters.dropped_units += 1
            return None
        types = {n[0] & 0x1F for n in nals}
        for n in nals:
            if n[0] & 0x1F in (_SPS, _PPS):
                self._param_sets = [m for m in nals if m[0] & 0x1F in (_SPS, _PPS)]
                break
        keyframe = _IDR in types
        if keyframe and not {_SPS, _PPS} <= types:
            nals = self._param_sets + nals
        if self._last_ts32 is not None and ts < self._last_ts32 and self._last_ts32 - ts > 1 << 31:
            self._ts_high += 1 << 32
        self._last_ts32 = ts
        self.counters.access_units += 1
        self.counters.keyframes += int(keyframe)
        data = START_CODE + START_CODE.join(nals)
        return AccessUnit(self.camera_id, data, self._ts_high + ts, keyframe, wall_ts)


_RTSP_STARTS = (b"RTSP/", b"ANNOUNCE ", b"GET_PARAMETER ", b"SET_PARAMETER ", b"OPTIONS ", b"REDIRECT ")


def split_interleaved(buf: bytearray) -> tuple[list[tuple[int, memoryview]], list[bytes], int, int]:
    """Split an RTSP-over-TCP byte stream into interleaved frames and RTSP messages.

    Returns:
        ``(frames, messages, consumed, skipped)``: ``(channel, payload)`` pairs, whole RTSP messages
        (keep-alive answers, server requests), how many bytes of ``buf`` they used (the rest waits for more
        data), and how many of those were neither and were skipped to find the next ``$`` frame.
    """
    frames: list[tuple[int, memoryview]] = []
    messages: list[bytes] = []
    view = memoryview(buf)
    i, n, skipped = 0, len(buf), 0
    while i + 4 <= n:
        if buf[i] == 0x24:  # '$'
            size = (buf[i + 2] << 8) | buf[i + 3]
            if i + 4 + size > n:
                break
            frames.append((buf[i + 1], view[i + 4 : i + 4 + size]))
            i += 4 + size
            continue
        head = bytes(buf[i : i + 16])
        if not head.startswith(_RTSP_STARTS):
            if n - i < 16 and any(p.startswith(head) for p in _RTSP_STARTS):
                break  # the start of a message cut by the read: wait for the rest
            nxt = buf.find(b"$", i + 1)  # neither a frame nor a message: resynchronise on the next frame
            step = (nxt if nxt >= 0 else n) - i
            skipped += step
            i += step
            continue
        head_end = buf.find(b"\r\n\r\n", i)
        if head_end < 0:
            break
        m = re.search(rb"(?im)^content-length:\s*(\d+)", bytes(buf[i:head_end]))
        total = head_end + 4 + (int(m.group(1)) if m else 0)
        if total > n:
            break
        messages.append(bytes(buf[i:total]))
        i = total
    return frames, messages, i, skipped


@dataclass(frozen=True, slots=True)
class SdpVideo:
    """What SETUP needs from the SDP's first video section."""

    control: str
    payload_type: int
    codec: str
    parameter_sets: list[bytes] = field(default_factory=list)


def parse_sdp(sdp: str, base_url: str) -> SdpVideo:
    """The first ``m=video`` section of a DESCRIBE answer.

    Raises:
        RtspError: No video section, or its codec is not H.264 (the codec is named).
    """
    in_video, control, pt, codec, sets = False, None, None, None, []
    for line in sdp.splitlines():
        if line.startswith("m="):
            if in_video:
                break
            in_video = line.startswith("m=video")
            if in_video:
                pt = int(line.split()[3])
        elif in_video and line.startswith("a=control:"):
            control = line[len("a=control:") :].strip()
        elif in_video and line.startswith("a=rtpmap:"):
            codec = line.split(None, 1)[1].split("/")[0].upper()
        elif in_video and line.startswith("a=fmtp:") and "sprop-parameter-sets=" in line:
            value = line.split("sprop-parameter-sets=", 1)[1].split(";")[0].strip()
            sets = [base64.b64decode(s + "=" * (-len(s) % 4)) for s in value.split(",") if s]
    if pt is None:
        raise RtspError("the SDP has no video section")
    if codec != "H264":
        raise UnsupportedCodec(f"video codec {codec!r} is not supported by this receiver (H264 only)")
    if control is None or control == "*":
        url = base_url
    elif "://" in control:
        url = control
    else:
        url = base_url.rstrip("/") + "/" + control
    return SdpVideo(control=url, payload_type=pt, codec=codec, parameter_sets=sets)


class RtspSession:
    """One camera's RTSP control connection (blocking, used by ``connect`` only) and its RTP state."""

    def __init__(self, camera_id: str, url: str, transport: str, timeout_s: float) -> None:
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be 'tcp' or 'udp', got {transport!r}")
        parts = urlsplit(url)
        if parts.scheme != "rtsp" or not parts.hostname:
            raise ValueError(f"camera {camera_id}: not an rtsp:// URL: {redact_url(url)}")
        self.camera_id, self.transport, self.timeout_s = camera_id, transport, timeout_s
        self.safe_url = redact_url(url)
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else ""
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.url = urlunsplit(("rtsp", netloc, parts.path, parts.query, ""))
        self._addr = (parts.hostname, parts.port or 554)
        self._cseq = 0
        self._auth: tuple[str, dict[str, str]] | None = None
        self.session_id: str | None = None
        self.session_timeout_s = 60.0
        self.sock: socket.socket | None = None
        self.rtp_sock: socket.socket | None = None
        self.rtcp_sock: socket.socket | None = None
        self.counters = ReceiveCounters()
        self.depay: H264Depacketizer | None = None
        self.buf = bytearray()
        self.last_data_ts = 0.0
        self.last_keepalive_ts = 0.0
        self.on_unit: Callable[[AccessUnit], None] = lambda unit: None
        self.on_lost: Callable[[str], None] | None = None

    def open(self) -> None:
        """DESCRIBE, SETUP and PLAY; on return RTP flows (over ``sock`` or ``rtp_sock``)."""
        self.sock = socket.create_connection(self._addr, timeout=self.timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _, headers, body = self._request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        base = headers.get("content-base", self.url)
        video = parse_sdp(body.decode("utf-8", "replace"), base)
        self.depay = H264Depacketizer(self.camera_id, video.parameter_sets, self.counters)
        if self.transport == "tcp":
            transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
        else:
            self.rtp_sock, self.rtcp_sock = _udp_pair()
            port = self.rtp_sock.getsockname()[1]
            transport = f"RTP/AVP;unicast;client_port={port}-{port + 1}"
        _, headers, _ = self._request("SETUP", video.control, {"Transport": transport})
        session = headers.get("session")
        if not session:
            raise RtspError(f"camera {self.camera_id}: SETUP answered without a Session header")
        self.session_id = session.split(";")[0].strip()
        m = re.search(r"timeout=(\d+)", session)
        if m:
            self.session_timeout_s = float(m.group(1))
        if self.transport == "udp":
            m = re.search(r"server_port=(\d+)", headers.get("transport", ""))
            if m and self.rtp_sock is not None:  # a first datagram opens NAT/firewall state towards the server
                self.rtp_sock.sendto(b"\x80\x00\x00\x00" * 3, (self._addr[0], int(m.group(1))))
        self._request("PLAY", self.url, {"Range": "npt=0.000-"})
        self.sock.setblocking(False)
        self.last_data_ts = self.last_keepalive_ts = time.monotonic()

    def keepalive_request(self) -> bytes:
        """An ``OPTIONS`` that renews the session; its answer arrives interleaved (see :meth:`check_message`)."""
        self._cseq += 1
        return self._format("OPTIONS", self.url, {}).encode()

    def check_message(self, message: bytes) -> None:
        """An RTSP message that arrived between the RTP frames: a keep-alive's answer or the server's own request.

        A refused keep-alive (``454 Session Not Found``, ``5xx``) means the server has dropped the session;
        saying so now, by its status, beats waiting for the stall timeout. Requests the server sends
        (``GET_PARAMETER``, ``ANNOUNCE``) are ignored.

        Raises:
            RtspError: The message is an answer whose status is not 2xx; it names the status, never the password.
        """
        if not message.startswith(b"RTSP/"):
            return
        line = message.split(b"\r\n", 1)[0].decode("latin-1")
        try:
            status = int(line.split()[1])
        except (IndexError, ValueError):
            raise RtspError(f"camera {self.camera_id}: not an RTSP answer: {line[:60]!r}") from None
        if not 200 <= status < 300:
            raise RtspError(f"camera {self.camera_id}: {self.safe_url} answered the keep-alive with {line[9:60]!r}")

    def close(self) -> None:
        for s in (self.sock, self.rtp_sock, self.rtcp_sock):
            if s is not None:
                s.close()
        self.sock = self.rtp_sock = self.rtcp_sock = None

    def _format(self, method: str, url: str, extra: dict[str, str]) -> str:
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self._cseq}", "User-Agent: cctv-cluster"]
        if self.session_id:
            lines.append(f"Session: {self.session_id}")
        if self._auth is not None:
            lines.append(f"Authorization: {self._authorization(method, url)}")
        lines += [f"{k}: {v}" for k, v in extra.items()]
        return "\r\n".join(lines) + "\r\n\r\n"

    def _request(self, method: str, url: str, extra: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for _attempt in range(2):
            self._cseq += 1
            assert self.sock is not None
            self.sock.sendall(self._format(method, url, extra).encode())
            status, headers, body = self._read_response()
            if status == 401 and self._auth is None and self._user is not None:
                self._auth = _parse_challenge(headers.get("www-authenticate", ""))
                continue
            if status != 200:
                raise RtspError(f"camera {self.camera_id}: {method} {self.safe_url} answered {status}")
            return status, headers, body
        raise RtspError(f"camera {self.camera_id}: {method} {self.safe_url} refused the credentials (401)")

    def _read_response(self) -> tuple[int, dict[str, str], bytes]:
        assert self.sock is not None
        data = bytes(self.buf)
        self.buf.clear()
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RtspError(f"camera {self.camera_id}: {self.safe_url} closed the connection")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            raise RtspError(f"camera {self.camera_id}: not an RTSP answer: {lines[0][:60]!r}") from None
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RtspError(f"camera {self.camera_id}: {self.safe_url} closed the connection")
            rest += chunk
        self.buf += rest[length:]  # RTP that followed the PLAY answer in the same read: the loop parses it
        return status, headers, rest[:length]

    def _authorization(self, method: str, url: str) -> str:
        assert self._auth is not None
        scheme, params = self._auth
        if scheme == "basic":
            return "Basic " + base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
        realm, nonce = params.get("realm", ""), params.get("nonce", "")
        ha1 = hashlib.md5(f"{self._user}:{realm}:{self._password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{url}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        return f'Digest username="{self._user}", realm="{realm}", nonce="{nonce}", uri="{url}", response="{response}"'


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', rest))
    return scheme.lower(), params


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    """An even/odd pair of bound UDP ports (RTP, RTCP), as RFC 3550 asks."""
    for _ in range(50):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("0.0.0.0", 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("0.0.0.0", port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            rtp.setblocking(False)
            rtcp.setblocking(False)
            return rtp, rtcp
        rtp.close()
    raise RtspError("no free even/odd UDP port pair for RTP")


class RtspReceiver:
    """Every connected camera's RTP in one thread, which calls each camera's ``on_unit`` per access unit.

    Args:
        poll_interval_s: Sleep between rounds, so each read finds many packets (latency added: at most this).
        stall_timeout_s: A camera that sends nothing this long is dropped and its ``on_lost`` called.
        read_bytes: Size of the one read buffer (a TCP read takes what the socket holds, up to this).
    """

    def __init__(
        self,
        *,
        poll_interval_s: float = 0.05,
        stall_timeout_s: float = 10.0,
        read_bytes: int = 256 * 1024,
    ) -> None:
        self.poll_interval_s, self.stall_timeout_s = poll_interval_s, stall_timeout_s
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._sessions: dict[str, RtspSession] = {}
        self._pending: list[RtspSession] = []
        self._leaving: list[RtspSession] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtsp-receive", daemon=True)
        self._read_bytes = read_bytes

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        for s in list(self._sessions.values()) + self._pending:
            s.close()

    def connect(
        self,
        camera_id: str,
        url: str,
        transport: str = "tcp",
        timeout_s: float = 10.0,
        *,
        on_unit: Callable[[AccessUnit], None],
        on_lost: Callable[[str], None] | None = None,
    ) -> RtspSession:
        """Handshake on the caller's thread, then hand the camera to the receive loop.

        Args:
            on_unit: Gets each complete access unit, on the receive thread: keep it short (a keyframe
                decode at 1 fps is fine, a model call is not).
            on_lost: Gets the reason when the connection ends or stalls; the camera is then gone from
                the loop (``connect`` again to resume).

        Raises:
            UnsupportedCodec: The video is not H.264 (the codec is named).
            RtspError, OSError: The camera did not answer or refused (the message names it, no credentials).
        """
        session = RtspSession(camera_id, url, transport, timeout_s)
        session.on_unit, session.on_lost = on_unit, on_lost
        try:
            session.open()
        except BaseException:
            session.close()
            raise
        with self._lock:
            self._pending.append(session)
        return session

    def disconnect(self, session: RtspSession) -> None:
        """Take a camera out of the loop (from any thread); its callbacks are not called after the next round."""
        with self._lock:
            self._leaving.append(session)

    def counters(self, camera_id: str) -> ReceiveCounters | None:
        s = self._sessions.get(camera_id)
        return None if s is None else s.counters

    def _adopt(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            leaving, self._leaving = self._leaving, []
        for s in leaving:
            if s in pending:
                pending.remove(s)
                s.close()
            elif self._sessions.get(s.camera_id) is s:
                self._drop(s)
        for s in pending:
            if (old := self._sessions.get(s.camera_id)) is not None:
                self._drop(old)  # a reconnect before the old session was noticed gone
            self._sessions[s.camera_id] = s
            if s.transport == "tcp":
                self._sel.register(s.sock, selectors.EVENT_READ, s)
            else:
                self._sel.register(s.rtp_sock, selectors.EVENT_READ, s)
                self._sel.register(s.sock, selectors.EVENT_READ, s)  # RTSP answers and server close

    def _run(self) -> None:
        scratch = bytearray(self._read_bytes)
        while not self._stop.is_set():
            if self._pending or self._leaving:
                self._adopt()
            t0 = time.monotonic()
            for key, _ in self._sel.select(timeout=self.poll_interval_s):
                s: RtspSession = key.data
                try:
                    self._read(s, key.fileobj, scratch)  # type: ignore[arg-type]
                except (OSError, RtspError) as exc:
                    self._lose(s, f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # a camera's handler failing must end that camera only, never the loop
                    log.exception("camera %s: access unit handler failed", s.camera_id)
                    self._lose(s, f"handler failed: {type(exc).__name__}: {exc}")
            now = time.monotonic()
            for s in list(self._sessions.values()):
                if now - s.last_data_ts > self.stall_timeout_s:
                    self._lose(s, f"no data for {self.stall_timeout_s:g} s")
                elif now - s.last_keepalive_ts > s.session_timeout_s / 2 and s.sock is not None:
                    s.last_keepalive_ts = now
                    try:
                        s.sock.send(s.keepalive_request())
                    except OSError as exc:
                        self._lose(s, f"keep-alive failed: {exc}")
            rest = self.poll_interval_s - (time.monotonic() - t0)
            if rest > 0:
                self._stop.wait(rest)

    def _read(self, s: RtspSession, sock: socket.socket, scratch: bytearray) -> None:
        wall = time.time()
        assert s.depay is not None
        if sock is s.rtp_sock:  # UDP: one datagram per call, drain what is queued
            view = memoryview(scratch)
            while True:
                try:
                    n = sock.recv_into(scratch)
                except BlockingIOError:
                    break
                s.last_data_ts = time.monotonic()
                for unit in s.depay.push(view[:n], wall):
                    s.on_unit(unit)
            return
        n = sock.recv_into(scratch)
        if n == 0:
            raise RtspError(f"camera {s.camera_id}: {s.safe_url} closed the connection")
        s.last_data_ts = time.monotonic()
        s.buf += memoryview(scratch)[:n]
        frames, messages, used, skipped = split_interleaved(s.buf)
        s.counters.skipped_bytes += skipped
        for message in messages:
            s.check_message(message)
        payload = None
        for channel, payload in frames:
            if channel == 0:
                for unit in s.depay.push(payload, wall):
                    s.on_unit(unit)
        frames = payload = None  # type: ignore[assignment]  # release the views before the buffer shrinks
        del s.buf[:used]

    def _drop(self, s: RtspSession) -> None:
        for sock in (s.sock, s.rtp_sock):
            if sock is not None:
                with contextlib.suppress(KeyError, ValueError):  # never registered, or already gone
                    self._sel.unregister(sock)
        s.close()
        if self._sessions.get(s.camera_id) is s:
            del self._sessions[s.camera_id]

    def _lose(self, s: RtspSession, reason: str) -> None:
        self._drop(s)
        log.warning("camera %s: receive ended: %s", s.camera_id, reason)
        if s.on_lost is not None:
            s.on_lost(reason)
