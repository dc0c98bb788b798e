"""CameraStream on the shard's one receive loop (ingest.rtsp_receiver: loop), on the real RTSP simulator.

The guarantees the FFmpeg path has, checked for the loop path: cameras stream and sample at their analytics
rate with every access unit in the pre-roll ring; a refused or unreachable camera goes down with a reason
that names it and not its password, while the others keep streaming; when the server goes away every
camera reconnects with backoff and resumes when it is back, timestamps still rising; drops are counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from actors.clip_writer import write_mp4
from actors.packets import PacketRing
from actors.rtsp_receive import RtspReceiver
from actors.stream import CameraStream, SampledFrame
from cluster.footage import prepare_stream
from cluster.rtsp_sim import RtspSimulator, system_ready
from configs.schema import CameraConfig, IngestConfig
from contracts.cameras import CameraState
from tests.conftest import CACHE_DIR
from tests.support.wait import wait_for

USER, PASSWORD = "operator", "L00p-s3cret"
INGEST = IngestConfig(
    open_timeout_s=5,
    stall_timeout_s=3,
    reconnect_initial_s=0.3,
    reconnect_max_s=2,
    max_failures_before_down=2,
    rtsp_receiver="loop",
)


@pytest.fixture(scope="module")
def source(vtest_path: Path) -> Path:
    ok, why = system_ready()
    if not ok:
        pytest.fail(f"GStreamer RTSP server not usable: {why} (make test installs scripts/debian-packages.txt)")
    return prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=1.0, max_height=360)


@pytest.fixture
def receiver() -> Iterator[RtspReceiver]:
    rx = RtspReceiver(poll_interval_s=INGEST.receive_poll_interval_s, stall_timeout_s=INGEST.stall_timeout_s)
    rx.start()
    yield rx
    rx.stop()


def _stream(cam_id: str, url: str, rx: RtspReceiver, frames: dict[str, list[SampledFrame]]) -> CameraStream:
    frames[cam_id] = []
    cfg = CameraConfig(id=cam_id, url=url, analytics_fps=2.0, decode_mode="keyframe")
    return CameraStream(
        cfg, shard="t", ingest=INGEST, ring=PacketRing(20, 2**26), on_frame=frames[cam_id].append, receiver=rx
    )


def test_cameras_on_the_loop_stream_fail_alone_and_come_back_after_the_server_does(
    source: Path, receiver: RtspReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    frames: dict[str, list[SampledFrame]] = {}
    sim = RtspSimulator({"vtest": source}, cameras=3, user=USER, password=PASSWORD, log_path=tmp_path / "sim1.log")
    sim.start()
    port = sim.port
    good = [_stream(f"cam{i}", sim.url(f"cam{i}"), receiver, frames) for i in (1, 2, 3)]
    wrong = sim.url("cam1", with_credentials=False).replace("rtsp://", f"rtsp://{USER}:not-{PASSWORD}@")
    refused = _stream("refused", wrong, receiver, frames)
    unreachable = _stream("unreachable", f"rtsp://{USER}:{PASSWORD}@127.0.0.1:9/cam1", receiver, frames)
    streams = [*good, refused, unreachable]
    try:
        for s in streams:
            s.start()
        wait_for(lambda: all(s.status().state is CameraState.STREAMING for s in good), timeout_s=20, what="streaming")
        wait_for(
            lambda: all(s.status().state is CameraState.DOWN for s in (refused, unreachable)), timeout_s=20, what="down"
        )
        for s in (refused, unreachable):
            reason = s.status().reason or ""
            assert PASSWORD not in reason, reason
            assert s.status().reason
        assert "401" in (refused.status().reason or "")
        time.sleep(3.0)
        for s in good:
            st = s.status()
            assert (st.codec, st.width, st.height) == ("h264", 480, 360), st
            assert st.frames_sampled >= 4 and st.keyframes >= 3, st
            assert s.decoder_backend == "cpu"
            pkts = s.ring.snapshot(0.0)
            assert pkts and pkts[0].is_keyframe, "the ring must start at a keyframe"
            pts = [p.pts for p in pkts]
            assert pts == sorted(pts) and len(set(pts)) == len(pts)
            assert len(pkts) == st.packets  # every access unit is kept (the ring is not full)
            assert s.counters.rtp_lost_packets == 0 and s.counters.units_dropped == 0
        shape = frames["cam1"][-1].image.shape
        assert shape == (360, 480, 3), shape
        # The ring is what event clips are cut from: it remuxes to an MP4 that decodes, without re-encoding.
        cam1 = good[0]
        assert cam1.info is not None
        clip = write_mp4(tmp_path / "cam1.mp4", cam1.info, cam1.ring.snapshot(0.0))
        assert clip.num_packets >= 25 and clip.dropped_packets == 0, clip
        with av.open(str(clip.path)) as container:
            decoded = [f for f in container.decode(video=0)]
        assert len(decoded) == clip.num_packets and (decoded[0].width, decoded[0].height) == (480, 360)
        last_pts = {s.cfg.id: s.ring.snapshot(0.0)[-1].pts for s in good}
        reconnects = {s.cfg.id: s.counters.reconnects for s in good}

        sim.stop()  # the server goes away: every camera notices, retries with backoff, and resumes
        wait_for(
            lambda: all(s.status().state in (CameraState.RECONNECTING, CameraState.DOWN) for s in good),
            timeout_s=INGEST.stall_timeout_s + 10,
            what="cameras notice the server is gone",
        )
        time.sleep(2.0)
        sim = RtspSimulator(
            {"vtest": source}, cameras=3, port=port, user=USER, password=PASSWORD, log_path=tmp_path / "sim2.log"
        )
        sim.start()
        wait_for(lambda: all(s.status().state is CameraState.STREAMING for s in good), timeout_s=20, what="resumed")
        time.sleep(3.0)
        for s in good:
            assert s.counters.reconnects > reconnects[s.cfg.id]
            new = [p.pts for p in s.ring.snapshot(0.0) if p.pts is not None and p.pts > last_pts[s.cfg.id]]
            # vtest runs at 10 fps; what came before the first keyframe after the reconnect is skipped.
            assert len(new) >= 15, f"{s.cfg.id}: timestamps must keep rising across the reconnect"
    finally:
        for s in streams:
            s.stop(timeout_s=5)
        sim.stop()
    assert PASSWORD not in caplog.text
    assert PASSWORD not in (tmp_path / "sim1.log").read_text()
