"""Emergency exports in the recorder, without Ray: window cutting and a whole manual recording.

``cut_window`` is pure; the recorder test feeds real H.264 (encoded here, 10 fps, 1 s GOP) through
a :class:`PacketRing` and :meth:`ClipRecorder.on_packet` as a camera thread would, into an upload
spool that is never started (its items are read back from disk).
"""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from actors.export_recorder import cut_window, ends_window
from actors.packets import EncodedPacket, PacketRing, StreamInfo
from actors.recorder import ClipRecorder
from configs.schema import RecorderConfig
from contracts.errors import ExportWindowError
from contracts.exports import ExportOrder, ExportPhase
from storage.clip_store import ClipStore
from storage.records import ClipSidecar
from storage.spool import SIDECAR_NAME, UploadSpool

FPS = 10
TB = Fraction(1, FPS)
T0 = 1_800_000_000.0


def pkts(n: int, *, gop: int = FPS, t0: float = T0) -> list[EncodedPacket]:
    return [EncodedPacket(b"x", i, i, 1, TB, is_keyframe=i % gop == 0, wall_ts=t0 + i / FPS) for i in range(n)]


def test_cut_starts_at_keyframe_before_start_and_stops_before_keyframe_after_end() -> None:
    buf = pkts(100)  # keyframes at T0 + 0, 1, ..., 9 s
    cut = cut_window(buf, T0 + 3.5, T0 + 6.2)
    assert cut.packets[0].wall_ts == T0 + 3.0 and cut.packets[0].is_keyframe
    assert cut.packets[-1].wall_ts == pytest.approx(T0 + 6.9)  # the GOP that holds end_ts, whole
    assert cut.complete and not cut.start_clipped
    # Keyframe exactly at the bounds: starts there, and a keyframe at end_ts closes the window.
    exact = cut_window(buf, T0 + 3.0, T0 + 6.0)
    assert exact.packets[0].wall_ts == T0 + 3.0 and exact.packets[-1].wall_ts == pytest.approx(T0 + 5.9)


def test_cut_of_window_reaching_into_the_future_is_incomplete() -> None:
    cut = cut_window(pkts(55), T0 + 2.5, T0 + 8.0)
    assert cut.packets[0].wall_ts == T0 + 2.0 and len(cut.packets) == 35 and not cut.complete


def test_start_older_than_the_buffer_is_clipped() -> None:
    buf = pkts(50, t0=T0 + 10)  # buffer holds T0+10 .. T0+14.9
    cut = cut_window(buf, T0, T0 + 12.5)
    assert cut.start_clipped and cut.packets[0].wall_ts == T0 + 10 and cut.complete
    gone = cut_window(buf, T0, T0 + 5)  # the whole window is older than the buffer
    assert gone.packets == () and gone.complete and gone.start_clipped


def test_cut_skips_leading_non_keyframes_and_empty_buffers() -> None:
    buf = pkts(30)[3:]  # starts mid-GOP: first keyframe at T0 + 1
    assert cut_window(buf, T0, T0 + 1.5).packets[0].wall_ts == T0 + 1.0
    empty = cut_window([], T0, T0 + 1)
    assert empty.packets == () and empty.start_clipped and not empty.complete


def test_ends_window_only_on_keyframes() -> None:
    p = pkts(12)
    assert not ends_window(p[5], T0)
    assert ends_window(p[10], T0 + 1.0) and not ends_window(p[10], T0 + 1.01)


# -- a whole manual recording through the recorder (real H.264, spool not started) ------------


def encode_h264(n: int, size: tuple[int, int] = (64, 48)) -> tuple[StreamInfo, list[bytes], list[bool]]:
    """``n`` frames at 10 fps, a keyframe every 10 frames, as Annex-B packets."""
    import io

    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"g": str(FPS), "keyint_min": str(FPS), "sc_threshold": "0", "bf": "0"}
        for i in range(n):
            img = np.full((size[1], size[0], 3), (i * 7) % 255, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    buf.seek(0)
    datas, keys = [], []
    with av.open(buf, format="h264") as c:
        for p in c.demux(c.streams.video[0]):
            if p.size:
                datas.append(bytes(p))
                keys.append(bool(p.is_keyframe))
    info = StreamInfo("h264", size[0], size[1], None, TB, float(FPS))
    return info, datas, keys


@pytest.fixture()
def recorder_env(tmp_path: Path):
    info, datas, keys = encode_h264(120)
    live = [
        EncodedPacket(d, i, i, 1, TB, is_keyframe=k, wall_ts=T0 + i / FPS)
        for i, (d, k) in enumerate(zip(datas, keys, strict=True))
    ]
    ring = PacketRing(max_seconds=3.0, max_bytes=10**8)
    store = ClipStore("127.0.0.1:9", "k", "s", "bucket")  # never called: the spool is not started
    spool = UploadSpool(tmp_path / "spool", store, max_bytes=10**8)
    rec = ClipRecorder(
        RecorderConfig(),
        staging_dir=tmp_path / "staging",
        spool=spool,
        ring_of=lambda _cid: ring,
        info_of=lambda _cid: info,
        detector_name=lambda _cid: "yolox_nano@1",
        clock=lambda: T0 + 5,  # the writer thread's expiry check sees this time
    )
    yield rec, ring, spool, live
    rec.stop(5.0)


def feed(rec: ClipRecorder, ring: PacketRing, packets: list[EncodedPacket]) -> None:
    for p in packets:
        ring.append(p)
        rec.on_packet("cam-1", p)


def order(start: float, end: float, export_id: str = "exp-20270115-0123456789ab") -> ExportOrder:
    return ExportOrder(export_id, "cam-1", start, end, "112", "GJ-2027-0042", "assault reported", T0 + 5)


def wait_phase(rec: ClipRecorder, export_id: str, phase: ExportPhase, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        p = rec.exports.progress(export_id)
        if p is not None and p.phase is phase:
            return p
        time.sleep(0.05)
    raise AssertionError(rec.exports.progress(export_id))


def test_manual_recording_past_from_ring_future_live(recorder_env) -> None:
    rec, ring, spool, live = recorder_env
    feed(rec, ring, live[:50])  # "now" is T0 + 4.9; the ring holds T0 + 2 .. 4.9
    o = order(T0 + 2.5, T0 + 7.5)
    p = rec.exports.start(o, now=T0 + 5)
    assert p.phase is ExportPhase.RECORDING and p.covered_start == T0 + 2.0 and not p.start_clipped
    assert rec.exports.start(o, now=T0 + 5) == p  # idempotent
    rec.on_packet("cam-1", live[49])  # the camera thread's hook for a packet the ring already gave
    assert rec.exports.progress(o.export_id).covered_end == pytest.approx(T0 + 5.0)  # type: ignore[union-attr]
    feed(rec, ring, live[50:70])
    mid = rec.exports.progress(o.export_id)
    assert mid is not None and mid.phase is ExportPhase.RECORDING
    assert mid.covered_end == pytest.approx(T0 + 7.0)  # still arriving
    feed(rec, ring, live[70:90])  # the keyframe at T0 + 8 closes it
    up = wait_phase(rec, o.export_id, ExportPhase.UPLOADING)
    assert up.covered_start == T0 + 2.0 and up.covered_end == pytest.approx(T0 + 8.0)
    assert up.duration_s == pytest.approx(6.0) and not up.end_clipped
    assert up.object_key == f"exports/2027/01/15/cam-1/{o.export_id}.mp4"
    assert spool.pending_event_ids() == [o.export_id]
    item = next(d for d in (spool.spool_dir).iterdir() if d.name.endswith(o.export_id))
    side = ClipSidecar.from_json_bytes((item / SIDECAR_NAME).read_bytes())
    assert side.evidence and side.event_type == "export" and side.export is not None
    assert side.export.requester == "112" and side.export.case_number == "GJ-2027-0042"
    assert side.export.covered_start.timestamp() == T0 + 2.0 and not side.export.start_clipped
    assert json.loads((item / SIDECAR_NAME).read_text())["export"]["reason"] == "assault reported"
    with av.open(str(item / "clip.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 60
    rec.exports.uploaded(o.export_id)
    assert rec.exports.progress(o.export_id).phase is ExportPhase.DONE  # type: ignore[union-attr]


def test_window_older_than_ring_is_clipped_or_refused(recorder_env) -> None:
    rec, ring, _spool, live = recorder_env
    feed(rec, ring, live[:100])  # ring holds T0 + 7 .. 9.9
    clipped = rec.exports.start(order(T0 + 1.0, T0 + 8.5, "exp-20270115-aaaaaaaaaaaa"), now=T0 + 10)
    assert clipped.start_clipped and clipped.covered_start == T0 + 7.0
    done = wait_phase(rec, "exp-20270115-aaaaaaaaaaaa", ExportPhase.UPLOADING)  # complete from the ring alone
    assert done.start_clipped and done.duration_s == pytest.approx(2.0)
    with pytest.raises(ExportWindowError, match="before the oldest buffered"):
        rec.exports.start(order(T0 + 1.0, T0 + 3.0, "exp-20270115-bbbbbbbbbbbb"), now=T0 + 10)


def test_stalled_camera_finishes_export_after_grace_with_end_clipped(recorder_env) -> None:
    rec, ring, _spool, live = recorder_env
    feed(rec, ring, live[:30])
    o = order(T0 + 1.0, T0 + 6.0, "exp-20270115-cccccccccccc")
    rec.exports.start(o, now=T0 + 3)
    assert rec.exports.expire(now=T0 + 6.0 + rec.exports.export_grace_s - 1) == 0
    assert rec.exports.expire(now=T0 + 6.0 + rec.exports.export_grace_s) == 1
    p = wait_phase(rec, o.export_id, ExportPhase.UPLOADING)
    assert p.end_clipped and p.covered_end == pytest.approx(T0 + 3.0)
