"""The local RTSP camera simulator (scripts/rtsp_sim.py via cluster.rtsp_sim) read by PyAV, as the shards read it.

One simulator serves two prepared clips (vtest 768x576 @ 10 fps, fire_closeup 426x240 @ 24 fps, both
with a 1 s GOP) on 20 cameras with digest authentication; 20 PyAV clients read all of them at once
for 10 s, and the tests check what they got: codec and size, native rate, keyframe spacing, and that
the access units are the file's own bytes (no re-encoding). Looping is checked on a short raw .h264.
"""

from __future__ import annotations

import hashlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest

from actors.rtsp_receive import AccessUnit, RtspError, RtspReceiver
from cluster.footage import prepare_stream
from cluster.rtsp_sim import RtspSimulator, system_ready

CAMERAS = 20
READ_S = 10.0
WARMUP_S = 1.0  # PyAV's stream probing buffers ~3 s of packets that come out in a burst at first
OPEN_TIMEOUT_S = 20.0
USER = "viewer"
PASSWORD = "s3cr:t/@pw"  # characters that must be percent-encoded in a URL
RTP_CLOCK_HZ = 90_000
PARAMETER_SETS_AND_AUD = frozenset({7, 8, 9})  # SPS, PPS, access unit delimiter: added around the file's units


@dataclass(frozen=True, slots=True)
class Expected:
    width: int
    height: int
    fps: float


@dataclass
class Reading:
    """What one PyAV client saw on one camera."""

    mount: str
    codec: str = ""
    width: int = 0
    height: int = 0
    open_s: float = 0.0
    arrivals_s: list[float] = field(default_factory=list)  # since the open returned
    pts: list[int | None] = field(default_factory=list)
    keyframe: list[bool] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)  # of the NAL units other than SPS/PPS/AUD
    parameter_sets: set[bytes] = field(default_factory=set)
    error: str | None = None

    def steady_fps(self) -> float:
        """Packets per second after the warm-up burst."""
        times = [t for t in self.arrivals_s if t >= WARMUP_S]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])


def annexb_nals(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B buffer (start codes of 3 or 4 bytes)."""
    nals: list[bytes] = []
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for k, start in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        nal = data[start:end]
        if k + 1 < len(starts):
            nal = nal.rstrip(b"\x00")  # the leading zero of the next 4-byte start code (NALs end non-zero)
        if nal:
            nals.append(nal)
    return nals


def avcc_nals(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of a length-prefixed (MP4) buffer."""
    nals: list[bytes] = []
    i = 0
    while i + length_size <= len(data):
        n = int.from_bytes(data[i : i + length_size], "big")
        nals.append(data[i + length_size : i + length_size + n])
        i += length_size + n
    if i != len(data):
        raise ValueError(f"bad AVCC buffer: {len(data) - i} trailing bytes")
    return nals


def content_digest(nals: list[bytes]) -> tuple[bytes, set[bytes]]:
    """(digest of the picture NALs, the SPS/PPS NALs) of one access unit."""
    h = hashlib.sha256()
    params: set[bytes] = set()
    for nal in nals:
        kind = nal[0] & 0x1F
        if kind in (7, 8):
            params.add(nal)
        if kind not in PARAMETER_SETS_AND_AUD:
            h.update(len(nal).to_bytes(4, "big"))
            h.update(nal)
    return h.digest(), params


@dataclass(frozen=True, slots=True)
class FileUnits:
    digests: list[bytes]
    parameter_sets: set[bytes]


def file_units(path: Path) -> FileUnits:
    """Digests of the file's access units in decode order, and the SPS/PPS of its avcC."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        digests = [content_digest(avcc_nals(bytes(p)))[0] for p in c.demux(stream) if p.size]
    return FileUnits(digests=digests, parameter_sets=avcc_parameter_sets(extradata))


def avcc_parameter_sets(extradata: bytes) -> set[bytes]:
    """SPS and PPS NAL units of an avcC record (ISO/IEC 14496-15)."""
    params: set[bytes] = set()
    i = 5
    num_sps = extradata[i] & 0x1F
    i += 1
    for _ in range(num_sps):
        n = int.from_bytes(extradata[i : i + 2], "big")
        params.add(extradata[i + 2 : i + 2 + n])
        i += 2 + n
    num_pps = extradata[i]
    i += 1
    for _ in range(num_pps):
        n = int.from_bytes(extradata[i : i + 2], "big")
        params.add(extradata[i + 2 : i + 2 + n])
        i += 2 + n
    return params


def read_camera(url: str, mount: str, *, read_s: float, transport: str = "tcp") -> Reading:
    """Open ``url`` with PyAV and record every packet for ``read_s`` seconds (never raises)."""
    reading = Reading(mount=mount)
    t0 = time.monotonic()
    try:
        with av.open(url, options={"rtsp_transport": transport}, timeout=OPEN_TIMEOUT_S) as c:
            stream = c.streams.video[0]
            t_open = time.monotonic()
            reading.open_s = t_open - t0
            reading.codec = stream.codec_context.name
            reading.width = stream.codec_context.width
            reading.height = stream.codec_context.height
            for packet in c.demux(stream):
                now = time.monotonic() - t_open
                if now >= read_s:
                    break
                if not packet.size:
                    continue
                digest, params = content_digest(annexb_nals(bytes(packet)))
                reading.arrivals_s.append(now)
                reading.pts.append(packet.pts)
                reading.keyframe.append(packet.is_keyframe)
                reading.digests.append(digest)
                reading.parameter_sets |= params
    except av.error.FFmpegError as exc:
        reading.error = f"{type(exc).__name__}: {exc.strerror}"  # not str(exc): it carries the URL
    return reading


def read_cameras(jobs: list[tuple[str, str]], *, read_s: float, transport: str = "tcp") -> dict[str, Reading]:
    """Read every (url, mount) at once, one thread each."""
    results: dict[str, Reading] = {}

    def work(url: str, mount: str) -> None:
        results[mount] = read_camera(url, mount, read_s=read_s, transport=transport)

    threads = [threading.Thread(target=work, args=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=OPEN_TIMEOUT_S + read_s + 30)
    return results


@pytest.fixture(scope="module")
def gst_ready() -> None:
    ok, message = system_ready()
    if not ok:
        pytest.fail(f"the RTSP simulator cannot run here: {message}")


@pytest.fixture(scope="module")
def streams(clips_dir: Path, vtest_path: Path) -> dict[str, Path]:
    from tests.conftest import CACHE_DIR

    cache = CACHE_DIR / "streams"
    # Order matters: cam1, cam3, ... show vtest; cam2, cam4, ... show fire.
    return {
        "vtest": prepare_stream(vtest_path, cache, gop_s=1.0),
        "fire": prepare_stream(clips_dir / "fire_closeup.mp4", cache, gop_s=1.0),
    }


@pytest.fixture(scope="module")
def expected(streams: dict[str, Path]) -> dict[str, Expected]:
    out: dict[str, Expected] = {}
    for name, path in streams.items():
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            out[name] = Expected(width=s.codec_context.width, height=s.codec_context.height, fps=float(s.guessed_rate))
    return out


@pytest.fixture(scope="module")
def sim(gst_ready: None, streams: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspSimulator]:
    log_path = tmp_path_factory.mktemp("rtsp-sim") / "rtsp_sim.log"
    with RtspSimulator(streams, cameras=CAMERAS, user=USER, password=PASSWORD, log_path=log_path) as simulator:
        yield simulator
    assert PASSWORD not in log_path.read_text(), "the simulator logged the password"


def source_of(mount: str, streams: dict[str, Path]) -> str:
    names = list(streams)
    return names[(int(mount.removeprefix("cam")) - 1) % len(names)]


@pytest.fixture(scope="module")
def readings(sim: RtspSimulator) -> dict[str, Reading]:
    """All 20 cameras read at once for READ_S over TCP."""
    jobs = [(sim.url(f"cam{i}"), f"cam{i}") for i in range(1, CAMERAS + 1)]
    results = read_cameras(jobs, read_s=READ_S)
    assert sorted(results) == sorted(m for _, m in jobs), "a reader thread did not finish"
    errors = {m: r.error for m, r in results.items() if r.error}
    assert not errors, f"cameras failed to open or read: {errors}; simulator log:\n{sim.log_tail()}"
    return results


def test_mounts_and_urls(sim: RtspSimulator) -> None:
    assert sim.running
    assert sim.mounts == ["/vtest", "/fire", *[f"/cam{i}" for i in range(1, CAMERAS + 1)]]
    assert sim.url("cam1", with_credentials=False) == f"rtsp://127.0.0.1:{sim.port}/cam1"
    assert sim.url("/cam1") == f"rtsp://viewer:s3cr%3At%2F%40pw@127.0.0.1:{sim.port}/cam1"
    assert len(sim.camera_urls()) == CAMERAS
    assert PASSWORD not in repr(sim)


def test_every_camera_is_h264_at_its_source_size(
    readings: dict[str, Reading], streams: dict[str, Path], expected: dict[str, Expected]
) -> None:
    for mount, r in readings.items():
        exp = expected[source_of(mount, streams)]
        assert (r.codec, r.width, r.height) == ("h264", exp.width, exp.height), mount


def test_every_camera_runs_at_native_rate(
    readings: dict[str, Reading], streams: dict[str, Path], expected: dict[str, Expected]
) -> None:
    for mount, r in readings.items():
        fps = expected[source_of(mount, streams)].fps
        assert r.steady_fps() == pytest.approx(fps, rel=0.10), f"{mount}: {r.steady_fps():.2f} fps, want {fps}"
        # RTP timestamps tick one frame per access unit, no gaps.
        pts = [p for p in r.pts if p is not None]
        steps = {b - a for a, b in itertools.pairwise(pts)}
        assert steps <= {round(RTP_CLOCK_HZ / fps) + d for d in (-1, 0, 1)}, f"{mount}: pts steps {sorted(steps)}"


def test_keyframes_every_second(readings: dict[str, Reading]) -> None:
    for mount, r in readings.items():
        key_pts = [p for p, k in zip(r.pts, r.keyframe, strict=True) if k and p is not None]
        assert len(key_pts) >= READ_S - 2, f"{mount}: {len(key_pts)} keyframes in {READ_S} s"
        gaps_s = {round((b - a) / RTP_CLOCK_HZ, 2) for a, b in itertools.pairwise(key_pts)}
        assert gaps_s == {1.0}, f"{mount}: keyframe gaps {sorted(gaps_s)} s"


def test_access_units_are_the_files_bytes(
    readings: dict[str, Reading], streams: dict[str, Path], sim: RtspSimulator
) -> None:
    """No re-encoding: after the first keyframe, every packet is the file's next access unit, byte for byte.

    The file is AVCC (length-prefixed) with SPS/PPS in its avcC; the RTSP packets are Annex-B with an AUD
    and, on keyframes, SPS/PPS in band. Those differ by design; the SEI and slice NAL units must not.
    """
    units = {name: file_units(path) for name, path in streams.items()}
    for mount, r in readings.items():
        ref = units[source_of(mount, streams)]
        index = {d: i for i, d in enumerate(ref.digests)}
        first_key = r.keyframe.index(True)
        got = r.digests[first_key:]
        assert got[0] in index, f"{mount}: first keyframe is not one of the file's keyframes"
        start = index[got[0]]
        want = [ref.digests[(start + k) % len(ref.digests)] for k in range(len(got))]
        mismatches = sum(g != w for g, w in zip(got, want, strict=True))
        assert mismatches == 0, f"{mount}: {mismatches} of {len(got)} packets differ from the file"
        assert r.parameter_sets == ref.parameter_sets, f"{mount}: SPS/PPS differ from the file's avcC"
    # Cameras on one source start at keyframe 0, 1, 2, ...: they do not all show the same picture.
    firsts = {r.digests[r.keyframe.index(True)] for m, r in readings.items() if source_of(m, streams) == "vtest"}
    assert len(firsts) > 1


def test_udp_transport(sim: RtspSimulator, expected: dict[str, Expected]) -> None:
    r = read_camera(sim.url("vtest"), "vtest", read_s=5.0, transport="udp")
    assert r.error is None, f"{r.error}; simulator log:\n{sim.log_tail()}"
    exp = expected["vtest"]
    assert (r.codec, r.width, r.height) == ("h264", exp.width, exp.height)
    assert r.steady_fps() == pytest.approx(exp.fps, rel=0.10)
    assert sum(r.keyframe) >= 3


def test_camera_follows_the_wall_clock(sim: RtspSimulator, streams: dict[str, Path]) -> None:
    """A client that comes back later sees the footage that much further on, not the start again."""
    ref = file_units(streams["fire"])
    index = {d: i for i, d in enumerate(ref.digests)}
    positions: list[tuple[float, int]] = []
    for pause_s in (0.0, 4.0):
        time.sleep(pause_s)
        r = read_camera(sim.url("fire"), "fire", read_s=1.0)
        assert r.error is None, r.error
        first_key = r.keyframe.index(True)
        positions.append((r.arrivals_s[first_key] + time.monotonic() - r.arrivals_s[-1], index[r.digests[first_key]]))
    (t1, p1), (t2, p2) = positions
    fps = 24.0
    advanced_s = ((p2 - p1) % len(ref.digests)) / fps
    assert advanced_s == pytest.approx(t2 - t1, abs=1.5), f"footage moved {advanced_s:.1f} s in {t2 - t1:.1f} s"


def test_credentials_are_required(sim: RtspSimulator) -> None:
    no_creds = sim.url("cam1", with_credentials=False)
    wrong = no_creds.replace("rtsp://", f"rtsp://{USER}:wrong@")
    for url in (no_creds, wrong):
        with pytest.raises(av.error.HTTPUnauthorizedError):
            av.open(url, options={"rtsp_transport": "tcp"}, timeout=OPEN_TIMEOUT_S).close()
    with av.open(sim.url("cam1"), options={"rtsp_transport": "tcp"}, timeout=OPEN_TIMEOUT_S) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_short_raw_clip_loops_with_rising_timestamps(gst_ready: None, streams: dict[str, Path], tmp_path: Path) -> None:
    """A 2 s raw Annex-B clip (48 frames, 2 GOPs) played for ~6 s: three laps, timestamps never jump back."""
    frames = 48
    raw = tmp_path / "fire2s.h264"
    with av.open(str(streams["fire"])) as src, av.open(str(raw), "w", format="h264") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        n = 0
        for packet in src.demux(src.streams.video[0]):
            if not packet.size:
                continue
            if n == frames:
                break
            packet.stream = out
            dst.mux(packet)
            n += 1
    with RtspSimulator({"short": raw}) as simulator:
        r = read_camera(simulator.url("short"), "short", read_s=6.0)
        assert r.error is None, f"{r.error}; simulator log:\n{simulator.log_tail()}"
        fps = simulator.source_info["short"]["fps"]
    assert fps == pytest.approx(24.0)
    got = r.digests[r.keyframe.index(True) :]  # the client may join mid-frame
    assert len(got) > 2 * frames, f"only {len(got)} packets: did not loop twice"
    assert len(set(got)) == frames
    lap = got[:frames]
    assert all(d == lap[k % frames] for k, d in enumerate(got)), "the laps are not the same units in order"
    pts = [p for p in r.pts if p is not None]
    steps = {b - a for a, b in itertools.pairwise(pts)}
    assert steps <= {3749, 3750, 3751}, f"pts steps across laps: {sorted(steps)}"
    assert r.steady_fps() == pytest.approx(24.0, rel=0.10)


def test_bad_sources_fail_clearly(gst_ready: None, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        RtspSimulator({"x": tmp_path / "missing.mp4"})
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(RuntimeError, match="exited with code 2") as err:
        RtspSimulator({"junk": junk}).start()
    assert "junk.mp4" in str(err.value)


# --- actors.rtsp_receive: the one-loop receiver (issue 16's candidate) on the same simulator ----------------


@dataclass
class Received:
    """What the receive loop handed on for one camera."""

    arrivals_s: list[float] = field(default_factory=list)
    units: list[AccessUnit] = field(default_factory=list)


def receive(
    sim: RtspSimulator, jobs: list[tuple[str, str]], *, read_s: float
) -> tuple[dict[str, Received], RtspReceiver, list[tuple[str, str]]]:
    """Connect every (mount, transport) to one receiver, collect for ``read_s``, stop it."""
    got: dict[str, Received] = {mount: Received() for mount, _ in jobs}
    lost: list[tuple[str, str]] = []
    t0 = time.monotonic()

    def on_unit(unit: AccessUnit) -> None:
        got[unit.camera_id].arrivals_s.append(time.monotonic() - t0)
        got[unit.camera_id].units.append(unit)

    rx = RtspReceiver()
    rx.start()
    try:
        for mount, transport in jobs:
            rx.connect(
                mount,
                sim.url(mount),
                transport,
                timeout_s=OPEN_TIMEOUT_S,
                on_unit=on_unit,
                on_lost=lambda why, cam=mount: lost.append((cam, why)),
            )
        t0 = time.monotonic()
        time.sleep(read_s)
    finally:
        rx.stop()
    return got, rx, lost


def test_one_receive_loop_gets_every_cameras_access_units_over_tcp_and_udp(
    sim: RtspSimulator, streams: dict[str, Path], expected: dict[str, Expected]
) -> None:
    """Access units are the file's own, whole and in order, at native rate, keyframes every second, decodable."""
    jobs = [(f"cam{i}", "tcp") for i in range(1, 5)] + [("cam5", "udp"), ("cam6", "udp")]
    got, rx, lost = receive(sim, jobs, read_s=5.0)
    assert not lost, lost
    units = {name: file_units(path) for name, path in streams.items()}
    for mount, transport in jobs:
        r, name = got[mount], source_of(mount, streams)
        exp, ref = expected[name], units[name]
        steady = [t for t in r.arrivals_s if t >= WARMUP_S]
        assert len(steady) >= 2, f"{mount}/{transport}: {len(r.units)} units"
        assert (len(steady) - 1) / (steady[-1] - steady[0]) == pytest.approx(exp.fps, rel=0.10), mount
        keys = [u for u in r.units if u.is_keyframe]
        assert len(keys) >= 3, mount
        gaps_s = {round((b.pts_90khz - a.pts_90khz) / RTP_CLOCK_HZ, 1) for a, b in itertools.pairwise(keys)}
        assert gaps_s == {1.0}, f"{mount}: keyframes {gaps_s} s apart"
        first = r.units.index(keys[0])
        digests = [content_digest(annexb_nals(u.data))[0] for u in r.units[first:]]
        start = ref.digests.index(digests[0])
        want = [ref.digests[(start + k) % len(ref.digests)] for k in range(len(digests))]
        assert digests == want, f"{mount}/{transport}: units differ from the file's"
        assert content_digest(annexb_nals(keys[0].data))[1] == ref.parameter_sets, mount
        codec = av.CodecContext.create("h264", "r")
        frames = [f for u in keys[:2] for f in codec.decode(av.Packet(u.data))]
        assert frames and (frames[0].width, frames[0].height) == (exp.width, exp.height), mount
        c = rx.counters(mount)
        assert c is not None and (c.lost_packets, c.dropped_units) == (0, 0), (mount, c)
        assert c.access_units == len(r.units) and c.keyframes == len(keys), (mount, c)


def test_the_receiver_names_a_refusal_without_the_password_and_keeps_the_others(sim: RtspSimulator) -> None:
    no_creds = sim.url("cam1", with_credentials=False)
    wrong = no_creds.replace("rtsp://", f"rtsp://{USER}:wrong-{PASSWORD[:3]}@")
    count = {"cam2": 0}

    def on_unit(unit: AccessUnit) -> None:
        count[unit.camera_id] += 1

    rx = RtspReceiver()
    rx.start()
    try:
        rx.connect("cam2", sim.url("cam2"), "tcp", timeout_s=OPEN_TIMEOUT_S, on_unit=on_unit)
        for url, status in ((wrong, "401"), (no_creds, "401"), (sim.url("no-such-mount"), "404")):
            with pytest.raises(RtspError, match=status) as info:
                rx.connect("cam-x", url, "tcp", timeout_s=OPEN_TIMEOUT_S, on_unit=on_unit)
            assert PASSWORD not in str(info.value) and "wrong-" not in str(info.value)
            assert "cam-x" in str(info.value)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            rx.connect("cam-y", f"rtsp://127.0.0.1:{closed_port}/cam1", "tcp", timeout_s=2.0, on_unit=on_unit)
        before = count["cam2"]
        time.sleep(1.5)
        assert count["cam2"] - before >= 20, "the camera that was streaming stalled while others failed"
    finally:
        rx.stop()


def test_the_receiver_reports_a_camera_whose_server_goes_away(gst_ready: None, streams: dict[str, Path]) -> None:
    lost: list[tuple[str, str]] = []
    units: list[AccessUnit] = []
    rx = RtspReceiver(stall_timeout_s=3.0)
    rx.start()
    try:
        with RtspSimulator({"fire": streams["fire"]}, cameras=1) as own:
            rx.connect(
                "gone",
                own.url("cam1"),
                "tcp",
                timeout_s=OPEN_TIMEOUT_S,
                on_unit=units.append,
                on_lost=lambda why: lost.append(("gone", why)),
            )
            time.sleep(1.0)
        deadline = time.monotonic() + 8.0
        while not lost and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        rx.stop()
    assert units, "nothing arrived before the server went away"
    assert [cam for cam, _ in lost] == ["gone"], lost
    assert "closed the connection" in lost[0][1] or "no data" in lost[0][1], lost
    assert rx.counters("gone") is None
