"""RTP depacketisation, RTSP-over-TCP framing and SDP parsing of actors.rtsp_receive (pure logic, no sockets)."""

from __future__ import annotations

import struct

import pytest

from actors.rtsp_receive import (
    START_CODE,
    H264Depacketizer,
    ReceiveCounters,
    RtspError,
    RtspSession,
    parse_sdp,
    split_interleaved,
)

SPS = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])


def _nal(nal_type: int, size: int, seed: int) -> bytes:
    body = bytes((seed * 31 + i * 7) % 251 + 1 for i in range(size - 1))  # never zero: no start-code emulation
    return bytes([0x60 | nal_type]) + body


def rtp(seq: int, ts: int, payload: bytes, *, marker: bool, csrc: int = 0, pad: int = 0) -> bytes:
    b0 = 0x80 | csrc | (0x20 if pad else 0)
    head = struct.pack("!BBHII", b0, (0x80 if marker else 0) | 96, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1234)
    tail = (b"\x00" * (pad - 1) + bytes([pad])) if pad else b""
    return head + b"\x00\x00\x00\x00" * csrc + payload + tail


def packetize(nals: list[bytes], seq: int, ts: int, mtu: int = 1000) -> list[bytes]:
    """RFC 6184 as a server does it: small NALs alone or aggregated (STAP-A), large ones fragmented (FU-A)."""
    payloads: list[bytes] = []
    small = [n for n in nals if len(n) < 64]
    if len(small) > 1:
        payloads.append(bytes([24]) + b"".join(struct.pack("!H", len(n)) + n for n in small))
    elif small:
        payloads.append(small[0])
    for n in nals:
        if len(n) < 64:
            continue
        if len(n) <= mtu:
            payloads.append(n)
            continue
        head, body = n[0], n[1:]
        chunks = [body[i : i + mtu] for i in range(0, len(body), mtu)]
        for i, chunk in enumerate(chunks):
            fu = (head & 0x1F) | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
            payloads.append(bytes([(head & 0xE0) | 28, fu]) + chunk)
    return [rtp(seq + i, ts, p, marker=i == len(payloads) - 1) for i, p in enumerate(payloads)]


def _depay(sets: list[bytes] | None = None) -> H264Depacketizer:
    return H264Depacketizer("cam-1", sets or [], ReceiveCounters())


def _feed(d: H264Depacketizer, packets: list[bytes]) -> list:
    return [u for p in packets for u in d.push(memoryview(p), 1.0)]


def test_a_keyframe_in_stap_a_and_fu_a_comes_out_whole() -> None:
    idr = _nal(5, 3500, 1)
    d = _depay()
    units = _feed(d, packetize([SPS, PPS, idr], seq=100, ts=9000))
    assert len(units) == 1
    u = units[0]
    assert u.is_keyframe and u.camera_id == "cam-1" and u.pts_90khz == 9000
    assert u.data == START_CODE + START_CODE.join([SPS, PPS, idr])
    assert (d.counters.access_units, d.counters.keyframes, d.counters.lost_packets) == (1, 1, 0)
    assert d.counters.rtp_packets == 5  # STAP-A + 4 fragments


def test_a_p_frame_is_not_a_keyframe_and_csrc_and_padding_are_skipped() -> None:
    p_slice = _nal(1, 400, 2)
    d = _depay()
    (u,) = _feed(d, [rtp(7, 3000, p_slice, marker=True, csrc=2, pad=3)])
    assert not u.is_keyframe
    assert u.data == START_CODE + p_slice


def test_an_idr_without_in_band_parameter_sets_gets_those_of_the_sdp() -> None:
    idr = _nal(5, 200, 3)
    d = _depay([SPS, PPS])
    (u,) = _feed(d, [rtp(1, 0, idr, marker=True)])
    assert u.data == START_CODE + START_CODE.join([SPS, PPS, idr])


def test_in_band_parameter_sets_replace_those_of_the_sdp() -> None:
    new_sps = SPS[:-1] + b"\x99"
    d = _depay([SPS, PPS])
    _feed(d, packetize([new_sps, PPS, _nal(5, 100, 4)], seq=1, ts=0))
    (u,) = _feed(d, [rtp(3, 3000, _nal(5, 100, 5), marker=True)])
    assert u.data.startswith(START_CODE + new_sps)


def test_a_lost_fragment_drops_that_unit_only_and_is_counted() -> None:
    d = _depay()
    first = packetize([SPS, PPS, _nal(5, 3500, 6)], seq=1, ts=0)
    del first[2]  # the second fragment of the IDR
    assert _feed(d, first) == []
    nxt = _nal(1, 300, 7)
    (u,) = _feed(d, [rtp(6, 3000, nxt, marker=True)])
    assert u.data == START_CODE + nxt
    assert (d.counters.lost_packets, d.counters.dropped_units, d.counters.access_units) == (1, 1, 1)


def test_a_lost_marker_packet_is_noticed_by_the_next_timestamp() -> None:
    a, b = _nal(1, 100, 8), _nal(1, 100, 9)
    d = _depay()
    units = _feed(d, [rtp(1, 0, a, marker=False), rtp(2, 3000, b, marker=True)])
    assert [u.data for u in units] == [START_CODE + a, START_CODE + b]
    assert [u.pts_90khz for u in units] == [0, 3000]


def test_the_32_bit_rtp_clock_is_unwrapped() -> None:
    d = _depay()
    near_end = 2**32 - 1500
    units = _feed(d, [rtp(1, near_end, _nal(1, 50, 1), marker=True), rtp(2, 1500, _nal(1, 50, 2), marker=True)])
    assert units[1].pts_90khz - units[0].pts_90khz == 3000


def test_a_packet_that_is_not_rtp_version_2_is_refused_and_counted() -> None:
    d = _depay()
    assert d.push(memoryview(b"\x00" * 20), 1.0) == ()
    assert d.counters.lost_packets == 1


def test_interleaved_frames_rtsp_answers_and_a_partial_tail() -> None:
    reply = b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nContent-Length: 4\r\n\r\nbody"
    f0 = b"$\x00" + struct.pack("!H", 5) + b"hello"
    f1 = b"$\x01" + struct.pack("!H", 3) + b"rtc"
    partial = b"$\x00" + struct.pack("!H", 10) + b"abc"
    buf = bytearray(f0 + reply + f1 + partial)
    frames, messages, used, skipped = split_interleaved(buf)
    assert [(ch, bytes(p)) for ch, p in frames] == [(0, b"hello"), (1, b"rtc")]
    assert messages == [reply]
    assert (used, skipped) == (len(f0 + reply + f1), 0)
    del frames


def test_bytes_that_are_neither_frame_nor_message_are_skipped_to_the_next_frame_and_counted() -> None:
    f0 = b"$\x00" + struct.pack("!H", 2) + b"ok"
    frames, messages, used, skipped = split_interleaved(bytearray(b"\x17\x99garbage" + f0))
    assert [bytes(p) for _, p in frames] == [b"ok"] and messages == []
    assert (used, skipped) == (9 + len(f0), 9)
    del frames


def test_an_rtsp_answer_split_across_reads_waits_for_the_rest() -> None:
    buf = bytearray(b"RTSP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert split_interleaved(buf) == ([], [], 0, 0)
    assert split_interleaved(bytearray(b"RTSP/1.")) == ([], [], 0, 0)  # a message's first bytes: wait


SDP = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=cam
m=audio 0 RTP/AVP 0
a=control:stream=1
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAHtoCgA==,aM48gA==;profile-level-id=42c01e
a=control:stream=0
"""


def test_sdp_gives_the_video_control_url_and_parameter_sets() -> None:
    v = parse_sdp(SDP, "rtsp://10.0.0.5:8554/cam3/")
    assert v.control == "rtsp://10.0.0.5:8554/cam3/stream=0"
    assert v.payload_type == 96 and v.codec == "H264"
    assert v.parameter_sets == [SPS, PPS]
    absolute = SDP.replace("a=control:stream=0", "a=control:rtsp://other/x")
    assert parse_sdp(absolute, "rtsp://10.0.0.5/").control == "rtsp://other/x"
    star = SDP.replace("a=control:stream=0", "a=control:*")
    assert parse_sdp(star, "rtsp://10.0.0.5/cam").control == "rtsp://10.0.0.5/cam"


def test_sdp_with_h265_or_without_video_is_refused_by_name() -> None:
    with pytest.raises(RtspError, match="'H265'"):
        parse_sdp(SDP.replace("H264/90000", "H265/90000"), "rtsp://h/")
    with pytest.raises(RtspError, match="no video"):
        parse_sdp("v=0\nm=audio 0 RTP/AVP 0\n", "rtsp://h/")


def test_credentials_leave_the_url_and_never_reach_the_messages() -> None:
    s = RtspSession("cam-9", "rtsp://admin:p%40ss@10.1.2.3:8554/live", "tcp", 1.0)
    assert s.url == "rtsp://10.1.2.3:8554/live"
    assert "p%40ss" not in s.safe_url and "p@ss" not in s.safe_url
    assert "p@ss" not in s.keepalive_request().decode()
    with pytest.raises(ValueError, match="not an rtsp:// URL") as info:
        RtspSession("cam-9", "http://admin:secret@h/x", "tcp", 1.0)
    assert "secret" not in str(info.value)
    with pytest.raises(ValueError, match="'sctp'"):
        RtspSession("cam-9", "rtsp://h/x", "sctp", 1.0)


def test_rtp_that_follows_the_play_answer_in_the_same_read_is_kept_for_the_loop() -> None:
    """Servers start sending right after PLAY's answer: those bytes are the first frames, not to be lost."""
    import socket

    s = RtspSession("cam-1", "rtsp://127.0.0.1:9/x", "tcp", 1.0)
    a, b = socket.socketpair()
    with a, b:
        s.sock = a
        b.sendall(b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nContent-Length: 2\r\n\r\nhi$\x00\x00\x02ok")
        status, headers, body = s._read_response()
        assert (status, headers["cseq"], body) == (200, "3", b"hi")
        assert bytes(s.buf) == b"$\x00\x00\x02ok"
        s.sock = None


def test_a_refused_keep_alive_ends_the_session_by_its_status_and_other_messages_do_not() -> None:
    """A 454 to the keep-alive means the server dropped the session: said now, not at the stall timeout."""
    s = RtspSession("cam-1", "rtsp://admin:pa55word@127.0.0.1:9/x", "tcp", 1.0)
    s.check_message(b"RTSP/1.0 200 OK\r\nCSeq: 7\r\n\r\n")
    s.check_message(b"GET_PARAMETER rtsp://127.0.0.1:9/x RTSP/1.0\r\nCSeq: 1\r\n\r\n")  # the server's own request
    with pytest.raises(RtspError, match="454 Session Not Found") as info:
        s.check_message(b"RTSP/1.0 454 Session Not Found\r\nCSeq: 8\r\n\r\n")
    assert "pa55word" not in str(info.value) and "cam-1" in str(info.value)
    with pytest.raises(RtspError, match="not an RTSP answer"):
        s.check_message(b"RTSP/1.0\r\n\r\n")


def test_units_before_the_first_keyframe_are_counted_as_dropped() -> None:
    """A server that joins the camera mid-GOP sends P-frames first: nothing can decode them, and each is counted."""
    from fractions import Fraction

    from actors.packets import PacketRing
    from actors.rtsp_receive import RTP_CLOCK_HZ, AccessUnit
    from actors.stream import CameraStream, _LoopSession, _Timeline
    from configs.schema import CameraConfig, IngestConfig

    cam = CameraStream(
        CameraConfig(id="cam-1", url="rtsp://127.0.0.1:9/x", decode_mode="keyframe"),
        shard="t",
        ingest=IngestConfig(rtsp_receiver="loop"),
        ring=PacketRing(5, 2**20),
        on_frame=lambda _f: None,
    )
    loop = _LoopSession(_Timeline(Fraction(1, RTP_CLOCK_HZ), 0.0), dropped_base=4)
    loop.session = RtspSession("cam-1", "rtsp://127.0.0.1:9/x", "tcp", 1.0)
    loop.session.counters.dropped_units = 2  # the depayloader's own drops (lost packets)
    for i in range(3):
        cam._on_unit(loop, AccessUnit("cam-1", START_CODE + bytes([0x41, 0x9A, i]), 3000 * i, False, 1.0 + i))
    cam._sync_receive_counters(loop)
    assert (loop.skipped, cam.counters.units_dropped) == (3, 4 + 2 + 3)
    assert not loop.line.got  # the timeline starts at the first keyframe, not before
