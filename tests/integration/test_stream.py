"""CameraStream on real video, without Ray: decode modes, faults, stream changes, credentials."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from actors.packets import PacketRing
from actors.stream import CameraStream, SampledFrame
from cluster.footage import prepare_stream
from configs.schema import CameraConfig, IngestConfig
from contracts.cameras import CameraState
from tests.conftest import CACHE_DIR
from tests.support.wait import wait_for

INGEST = IngestConfig(
    open_timeout_s=2, stall_timeout_s=3, reconnect_initial_s=0.2, reconnect_max_s=0.5, max_failures_before_down=2
)


@pytest.fixture(scope="module")
def vtest_stream(vtest_path: Path) -> Path:
    return prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=1.0)  # 768x576, 10 fps, 795 frames


def play(url: str, *, mode: str = "keyframe", fps: float = 1.0, timeout_s: float = 60, **cam: object):
    """Run one stream unpaced until its file ends; returns (stream, frames)."""
    frames: list[SampledFrame] = []
    cfg = CameraConfig(id="cam-t", url=url, analytics_fps=fps, decode_mode=mode, **cam)  # type: ignore[arg-type]
    s = CameraStream(
        cfg,
        shard="t",
        ingest=INGEST,
        ring=PacketRing(max_seconds=5, max_bytes=64 * 1024**2),
        on_frame=frames.append,
        realtime=False,
    )
    s.start()
    s._thread.join(timeout_s)
    assert not s.alive, "stream did not finish"
    return s, frames


def test_keyframe_mode_decodes_only_keyframes(vtest_stream: Path) -> None:
    s, frames = play(str(vtest_stream), mode="keyframe", fps=1.0)
    c = s.counters
    assert c.packets == 795 and c.keyframes == 80
    assert c.frames_decoded == c.keyframes  # not one non-key frame was decoded
    assert c.frames_sampled == len(frames) == 80  # 1 fps over 79.5 s of 1 s GOPs
    assert s.status().state is CameraState.DOWN and "end of file" in s.status().reason
    assert frames[0].image.shape == (576, 768, 3)
    assert len({f.frame_seq for f in frames}) == len(frames)


def test_sampled_mode_decodes_all_but_converts_only_samples(vtest_stream: Path) -> None:
    s, frames = play(str(vtest_stream), mode="sampled", fps=2.0)
    c = s.counters
    assert c.frames_decoded == 795
    assert 158 <= c.frames_sampled == len(frames) <= 160  # 2 fps over 79.5 s


def test_all_mode_analyses_every_frame(vtest_stream: Path) -> None:
    s, frames = play(str(vtest_stream), mode="all", fps=1.0)
    assert s.counters.frames_decoded == len(frames) == 795


def test_realtime_pacing_follows_native_rate(vtest_stream: Path) -> None:
    got: list[SampledFrame] = []
    cfg = CameraConfig(id="cam-rt", url=str(vtest_stream), analytics_fps=1.0, decode_mode="keyframe", loop=True)
    s = CameraStream(cfg, shard="t", ingest=INGEST, ring=PacketRing(5, 2**24), on_frame=got.append)
    s.start()
    time.sleep(4.0)
    s.stop()
    # 4 s of a 10 fps stream: ~40 packets, ~4 samples (not the 795 an unpaced read gives).
    assert 30 <= s.counters.packets <= 50 and 3 <= len(got) <= 6


def test_motion_gate_marks_static_frames(tmp_path: Path) -> None:
    # A scene that is static for 6 s then changes.
    path = tmp_path / "static.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 320, 240, "yuv420p"
        vs.options = {"g": "10", "keyint_min": "10", "sc_threshold": "0", "bf": "0"}
        for i in range(100):
            img = np.full((240, 320, 3), 90, np.uint8)
            if i >= 60:
                img[60:180, 80:240] = 250
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    s, frames = play(str(path), mode="keyframe", fps=1.0, motion_gate=True, motion_max_skip_s=100.0)
    flags = [f.static for f in frames]
    assert flags[0] is False and all(flags[1:6]) and flags[6] is False
    assert s.status().frames_static == sum(flags)


def _raw_h264(path: Path, size: tuple[int, int], n: int) -> None:
    with av.open(str(path), "w", format="h264") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.options = {"g": "10", "keyint_min": "10", "sc_threshold": "0", "bf": "0", "repeat-headers": "1"}
        rng = np.random.default_rng(1)
        for _ in range(n):
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)


def test_resolution_change_mid_stream_is_followed(tmp_path: Path) -> None:
    a, b, joined = tmp_path / "a.h264", tmp_path / "b.h264", tmp_path / "joined.h264"
    _raw_h264(a, (320, 240), 30)
    _raw_h264(b, (640, 480), 30)
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    s, frames = play(str(joined), mode="all", fps=10.0)
    shapes = {f.image.shape[:2] for f in frames}
    assert shapes == {(240, 320), (480, 640)}
    assert (s.info.width, s.info.height) == (640, 480)
    # The ring was restarted at the change: it holds no packet of the old resolution.
    assert s.ring.num_packets <= 30


def test_corrupt_bytes_cost_frames_not_the_stream(vtest_stream: Path, tmp_path: Path) -> None:
    data = bytearray(vtest_stream.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 150_000] = np.random.default_rng(7).integers(0, 256, 150_000, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    s, frames = play(str(bad), mode="sampled", fps=1.0)
    assert s.counters.packets == 795  # the container is intact; sample data is damaged
    assert s.counters.frames_decoded >= 700 and len(frames) >= 70


def test_truncated_file_plays_what_it_has(vtest_stream: Path, tmp_path: Path) -> None:
    half = tmp_path / "half.mp4"
    half.write_bytes(vtest_stream.read_bytes()[: vtest_stream.stat().st_size // 2])
    s, _ = play(str(half), mode="keyframe", fps=1.0)
    assert 0 < s.counters.packets < 795
    assert s.status().state is CameraState.DOWN


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("rtsp://admin:pa55word@127.0.0.1:9/stream1", "reconnect"),
        ("http://admin:pa55word@127.0.0.1:9/cam.mjpg", "reconnect"),
    ],
)
def test_unreachable_source_goes_down_with_reason_and_no_password(
    url: str, expect: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = CameraConfig(id="cam-x", url=url, district="d")
    s = CameraStream(cfg, shard="t", ingest=INGEST, ring=PacketRing(5, 2**20), on_frame=lambda f: None)
    s.start()
    try:
        wait_for(lambda: s.status().state is CameraState.DOWN, 20, f"{cfg.id} down", interval_s=0.1, detail=s.status)
        st = s.status()  # before stop: a stopped stream is retired
    finally:
        s.stop()
    assert st.state is CameraState.DOWN and st.reason
    assert st.reconnects >= 1
    text = caplog.text + st.reason + repr(st)
    assert "pa55word" not in text
    assert "admin:***@" in caplog.text or "admin" not in caplog.text


def test_not_video_goes_down(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_text("hello\n" * 1000)
    cfg = CameraConfig(id="cam-j", url=str(junk), loop=True)
    s = CameraStream(cfg, shard="t", ingest=INGEST, ring=PacketRing(5, 2**20), on_frame=lambda f: None)
    s.start()
    try:
        wait_for(lambda: s.status().state is CameraState.DOWN, 15, f"{cfg.id} down", interval_s=0.1, detail=s.status)
        st = s.status()  # before stop: a stopped stream is retired
    finally:
        s.stop()
    assert st.state is CameraState.DOWN and "InvalidData" in st.reason


def test_stop_is_prompt_even_while_connecting() -> None:
    cfg = CameraConfig(id="cam-s", url="rtsp://127.0.0.1:9/x")
    s = CameraStream(cfg, shard="t", ingest=INGEST, ring=PacketRing(5, 2**20), on_frame=lambda f: None)
    s.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 5 and s.status().state is CameraState.RETIRED
    assert threading.active_count() < 50


def test_http_source_streams(vtest_stream: Path) -> None:
    """An HTTP(S) camera URL goes through the same demux/decode path (here: a real local HTTP server)."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(vtest_stream.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{vtest_stream.name}"
        got: list[SampledFrame] = []
        cfg = CameraConfig(id="cam-http", url=url, analytics_fps=1.0, decode_mode="keyframe")
        s = CameraStream(cfg, shard="t", ingest=INGEST, ring=PacketRing(5, 2**24), on_frame=got.append)
        s.start()
        try:
            wait_for(
                lambda: s.counters.packets >= 795, 30, "all 795 packets over HTTP", interval_s=0.2, detail=s.status
            )
        finally:
            s.stop()
        assert s.counters.packets >= 795 and s.counters.frames_decoded >= 79 and len(got) >= 79
        assert s.status().codec == "h264" and (s.status().width, s.status().height) == (768, 576)
    finally:
        server.shutdown()
