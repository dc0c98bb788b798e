"""Real video, no Ray: prepare camera streams, buffer their packets, remux clips.

Conversions go to a per-module temporary cache: vtest.avi (79.5 s, 768x576, 10 fps)
takes ~4 s on 2 cores, street_people_walking ~3 s.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import pytest

from actors.clip_writer import ClipInfo, write_mp4
from actors.packets import EncodedPacket, PacketRing, StreamInfo
from cluster.footage import cache_name, demo_sources, prepare_stream, probe

WALL_T0 = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class Demuxed:
    info: StreamInfo
    packets: list[EncodedPacket]


@dataclass(frozen=True, slots=True)
class Decoded:
    codec_name: str
    width: int
    height: int
    packets: list[bytes]
    keyframes: list[bool]
    num_frames: int
    first_frame_pts_s: float
    duration_s: float


def demux(path: Path, *, annexb: bool = False) -> Demuxed:
    """All packets of ``path``, time-stamped as if received live from ``WALL_T0``.

    Packets arrive in decoding order, so ``wall_ts`` follows dts.
    """
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        info = StreamInfo.from_av_stream(stream)
        bsf = av.BitStreamFilterContext("h264_mp4toannexb", stream) if annexb else None
        tb = info.time_base
        packets: list[EncodedPacket] = []
        first_dts: int | None = None
        for pkt in c.demux(stream):
            if not pkt.size:
                continue
            for p in bsf.filter(pkt) if bsf else [pkt]:
                first_dts = p.dts if first_dts is None else first_dts
                packets.append(EncodedPacket.from_av_packet(p, WALL_T0 + float((p.dts - first_dts) * tb)))
    if annexb:
        info = replace(info, extradata=None)  # SPS/PPS are in-band before each keyframe
    return Demuxed(info=info, packets=packets)


def decode(path: Path) -> Decoded:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        tb = stream.time_base
        assert tb is not None
        data: list[bytes] = []
        keys: list[bool] = []
        pts_s: list[float] = []
        for pkt in c.demux(stream):
            if not pkt.size:
                continue
            data.append(bytes(pkt))
            keys.append(bool(pkt.is_keyframe))
            pts_s.extend(float(f.pts * tb) for f in pkt.decode())
        pts_s.extend(float(f.pts * tb) for f in stream.codec_context.decode(None))
        assert stream.duration is not None and stream.time_base is not None
        return Decoded(
            codec_name=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            packets=data,
            keyframes=keys,
            num_frames=len(pts_s),
            first_frame_pts_s=min(pts_s),
            duration_s=float(stream.duration * stream.time_base),
        )


def parameter_sets(annexb: bytes) -> list[bytes]:
    """The H.264 SPS and PPS NAL units of an Annex-B access unit, each with a 4-byte start code."""
    starts = [i for i in range(len(annexb) - 3) if annexb[i : i + 3] == b"\x00\x00\x01"]
    units = [annexb[a + 3 : b].rstrip(b"\x00") for a, b in zip(starts, [*starts[1:], len(annexb)], strict=True)]
    return [b"\x00\x00\x00\x01" + u for u in units if u[0] & 0x1F in (7, 8)]


def keyframe_intervals(keyframes: list[bool]) -> set[int]:
    idx = [i for i, k in enumerate(keyframes) if k]
    return {b - a for a, b in itertools.pairwise(idx)}


@pytest.fixture(scope="module")
def stream_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("streams")


@pytest.fixture(scope="module")
def vtest_stream(vtest_path: Path, stream_cache: Path) -> Path:
    t0 = time.perf_counter()
    path = prepare_stream(vtest_path, stream_cache)
    print(f"prepared vtest.avi in {time.perf_counter() - t0:.1f} s")
    return path


@pytest.fixture(scope="module")
def street_stream(clips_dir: Path, stream_cache: Path) -> Path:
    return prepare_stream(clips_dir / "street_people_walking.mp4", stream_cache)


def test_prepared_vtest_is_fixed_gop_h264(vtest_stream: Path) -> None:
    dec = decode(vtest_stream)
    summary = probe(vtest_stream)
    assert dec.codec_name == "h264"
    assert (dec.width, dec.height) == (768, 576)
    assert summary.fps == pytest.approx(10.0)
    assert summary.num_frames == dec.num_frames == 795
    assert dec.keyframes[0]
    assert keyframe_intervals(dec.keyframes) == {10}  # fps * gop_s
    assert dec.duration_s == pytest.approx(79.5, abs=0.1)


def test_prepared_stream_is_cached(vtest_path: Path, vtest_stream: Path, stream_cache: Path) -> None:
    mtime_ns = vtest_stream.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = prepare_stream(vtest_path, stream_cache)
    assert time.perf_counter() - t0 < 0.5
    assert again == vtest_stream
    assert again.stat().st_mtime_ns == mtime_ns
    assert not list(stream_cache.glob("*.part"))


def test_cache_name_follows_source_and_parameters(tmp_path: Path, vtest_path: Path) -> None:
    src = tmp_path / "cam.avi"
    src.write_bytes(b"x" * 10)
    base = cache_name(src, gop_s=1.0, codec="h264", max_height=None)
    assert base.startswith("cam.h264.gop1s.native.")
    assert cache_name(src, gop_s=2.0, codec="h264", max_height=None) != base
    assert cache_name(src, gop_s=1.0, codec="h264", max_height=360) != base
    src.write_bytes(b"x" * 11)
    assert cache_name(src, gop_s=1.0, codec="h264", max_height=None) != base


def test_prepare_scaled_and_other_gop(clips_dir: Path, stream_cache: Path) -> None:
    # 1920x1080 at 25 fps, 96 frames -> 640x360, a keyframe every 12 frames (0.5 s rounds 12.5 to 12)
    out = prepare_stream(clips_dir / "town_centre_pedestrians.mp4", stream_cache, gop_s=0.5, max_height=360)
    dec = decode(out)
    assert (dec.width, dec.height) == (640, 360)
    assert dec.num_frames == 96
    assert keyframe_intervals(dec.keyframes) == {12}


def test_prepare_rejects_bad_parameters(vtest_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'vp9'"):
        prepare_stream(vtest_path, tmp_path, codec="vp9")
    with pytest.raises(ValueError, match="gop_s"):
        prepare_stream(vtest_path, tmp_path, gop_s=0)


def check_clip(clip: ClipInfo, snap: list[EncodedPacket], info: StreamInfo, gop_s: float) -> Decoded:
    dec = decode(clip.path)
    assert clip.path.is_file() and not clip.path.with_suffix(".part").exists()
    assert clip.size_bytes == clip.path.stat().st_size
    assert dec.codec_name == info.codec_name
    assert (dec.width, dec.height) == (info.width, info.height)
    assert dec.num_frames == clip.num_packets == len(snap)
    assert dec.keyframes[0]
    assert dec.first_frame_pts_s == pytest.approx(0.0, abs=1e-3)
    assert info.avg_fps is not None
    span_s = snap[-1].wall_ts - snap[0].wall_ts + 1 / info.avg_fps
    assert clip.duration_s == pytest.approx(span_s, abs=1e-3)
    assert abs(dec.duration_s - span_s) <= gop_s
    assert clip.start_wall_ts == snap[0].wall_ts
    assert clip.end_wall_ts == snap[-1].wall_ts
    assert (clip.dropped_packets, clip.adjusted_packets) == (0, 0)
    return dec


def test_ring_snapshot_remuxes_to_identical_packets(vtest_stream: Path, tmp_path: Path) -> None:
    src = demux(vtest_stream)
    ring = PacketRing(max_seconds=3.0, max_bytes=50_000_000)
    for p in src.packets:
        ring.append(p)
    assert ring.seconds <= 3.0
    assert ring.num_gops == 3  # 1 s GOPs: the 4th would span 3.9 s
    newest = src.packets[-1].wall_ts
    since = newest - 1.5  # 77.9 s into the stream: the snapshot starts at the keyframe of 77.0 s
    snap = ring.snapshot(since_wall_ts=since)
    start = max(i for i, p in enumerate(src.packets) if p.is_keyframe and p.wall_ts <= since)
    assert snap == src.packets[start:]
    assert snap[0].wall_ts - WALL_T0 == pytest.approx(77.0)
    assert len(snap) == 25  # 795 frames: a full GOP and the last, 5-frame one

    clip = write_mp4(tmp_path / "clip.mp4", src.info, snap)
    dec = check_clip(clip, snap, src.info, gop_s=1.0)
    assert dec.packets == [p.data for p in snap]  # remuxed, not re-encoded
    assert keyframe_intervals(dec.keyframes) == {10}

    whole = write_mp4(tmp_path / "ring.mp4", src.info, ring.snapshot(0.0))
    assert whole.num_packets == ring.num_packets == 25  # GOPs at 77, 78 and 79 s


def test_packets_without_durations_keep_their_last_frame(vtest_stream: Path, tmp_path: Path) -> None:
    """The receive loop's packets carry no duration: the clip must still hold every frame, the last included."""
    src = demux(vtest_stream)
    start = max(i for i, p in enumerate(src.packets) if p.is_keyframe)
    snap = [dataclasses.replace(p, duration=None) for p in src.packets[start - 20 :]]
    snap = snap[next(i for i, p in enumerate(snap) if p.is_keyframe) :]
    clip = write_mp4(tmp_path / "noduration.mp4", src.info, snap)
    dec = check_clip(clip, snap, src.info, gop_s=1.0)
    assert dec.packets == [p.data for p in snap]


def test_street_clip_prepared(street_stream: Path, tmp_path: Path) -> None:
    src = demux(street_stream)
    assert (src.info.width, src.info.height) == (1280, 720)
    assert src.info.avg_fps == pytest.approx(29.97, abs=0.01)
    ring = PacketRing(max_seconds=3.0, max_bytes=50_000_000)
    for p in src.packets:
        ring.append(p)
    snap = ring.snapshot(src.packets[-1].wall_ts - 2.0)
    clip = write_mp4(tmp_path / "street.mp4", src.info, snap)
    dec = check_clip(clip, snap, src.info, gop_s=1.0)
    assert dec.packets == [p.data for p in snap]


def test_street_clip_original_with_b_frames(clips_dir: Path, tmp_path: Path) -> None:
    """The source itself: B-frames (dts < pts, negative first dts), 15-frame GOPs."""
    src = demux(clips_dir / "street_people_walking.mp4")
    assert any(p.dts is not None and p.pts is not None and p.dts < p.pts for p in src.packets)
    snap = src.packets[45:150]  # a keyframe at 45, GOP 15
    assert snap[0].is_keyframe
    clip = write_mp4(tmp_path / "street_src.mp4", src.info, snap)
    dec = check_clip(clip, snap, src.info, gop_s=0.5)
    assert dec.packets == [p.data for p in snap]


@pytest.mark.parametrize("with_extradata", [False, True])
def test_annexb_packets(street_stream: Path, tmp_path: Path, with_extradata: bool) -> None:
    src = demux(street_stream, annexb=True)
    assert src.packets[0].data.startswith(b"\x00\x00\x00\x01")
    info = src.info
    if with_extradata:
        # As from an RTSP SDP: the SPS and PPS, Annex-B framed.
        info = replace(info, extradata=b"".join(parameter_sets(src.packets[0].data)))
    snap = src.packets[30:120]
    clip = write_mp4(tmp_path / f"annexb_{with_extradata}.mp4", info, snap)
    check_clip(clip, snap, info, gop_s=1.0)


def test_leading_non_keyframes_are_skipped(street_stream: Path, tmp_path: Path) -> None:
    src = demux(street_stream)
    snap = src.packets[25:90]  # keyframes at 0, 30, 60, ...
    clip = write_mp4(tmp_path / "lead.mp4", src.info, snap)
    assert clip.skipped_leading == 5
    assert clip.num_packets == 60
    dec = decode(clip.path)
    assert dec.keyframes[0] and dec.num_frames == 60
    assert dec.packets == [p.data for p in snap[5:]]


def test_non_monotonic_dts_is_repaired(street_stream: Path, tmp_path: Path) -> None:
    src = demux(street_stream)
    snap = list(src.packets[:40])
    # A repeated timestamp (no B-frames here, pts == dts): dropped, the rest still decodes.
    snap[12] = replace(snap[12], pts=snap[11].pts, dts=snap[11].dts)
    clip = write_mp4(tmp_path / "dup.mp4", src.info, snap)
    assert clip.dropped_packets == 1
    assert clip.num_packets == 39
    assert decode(clip.path).num_frames == 39


def test_rejects_unusable_input(street_stream: Path, tmp_path: Path) -> None:
    src = demux(street_stream)
    with pytest.raises(ValueError, match="no keyframe"):
        write_mp4(tmp_path / "a.mp4", src.info, src.packets[1:20])
    with pytest.raises(ValueError, match="not Annex-B"):
        write_mp4(tmp_path / "b.mp4", replace(src.info, extradata=None), src.packets[:20])
    with pytest.raises(ValueError, match="'vp9'"):
        write_mp4(tmp_path / "c.mp4", replace(src.info, codec_name="vp9"), src.packets[:20])
    assert not list(tmp_path.iterdir())


def test_demo_sources_vtest_first(tmp_path: Path, vtest_path: Path, vtest_stream: Path, stream_cache: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "notes.txt").write_text("not a clip")
    paths = demo_sources(stream_cache, clips, vtest_path)
    assert paths == [vtest_stream]
    assert demo_sources(stream_cache, None, None) == []


def test_time_base_of_packets_is_kept(vtest_stream: Path) -> None:
    src = demux(vtest_stream)
    assert {p.time_base for p in src.packets} == {src.info.time_base}
    assert src.info.time_base == Fraction(1, 10240)


def test_hevc_stream_remuxes(clips_dir: Path, stream_cache: Path, tmp_path: Path) -> None:
    src_path = clips_dir / "town_centre_pedestrians.mp4"
    out = prepare_stream(src_path, stream_cache, codec="hevc", max_height=360)
    src = demux(out)
    assert src.info.codec_name == "hevc"
    assert src.info.extradata is not None and src.info.extradata[0] == 1  # hvcC
    snap = src.packets[25:80]  # keyframes every 25 frames at 25 fps
    clip = write_mp4(tmp_path / "hevc.mp4", src.info, snap)
    dec = check_clip(clip, snap, src.info, gop_s=1.0)
    assert dec.packets == [p.data for p in snap]
