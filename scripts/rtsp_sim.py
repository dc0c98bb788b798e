#!/usr/bin/python3
"""Local RTSP camera simulator: N cameras from real footage, pre-encoded, at native frame rate.

Runs under Debian's ``/usr/bin/python3`` (stdlib + ``gi`` only: GStreamer's RTSP server does not
import in a pyenv venv). Each ``--source NAME=PATH`` (a prepared MP4 or a raw Annex-B ``.h264``) is
demuxed once at start with GStreamer (``qtdemux ! h264parse``) into a list of H.264 access units in
memory. Every mount replays those units, byte for byte, through ``appsrc ! rtph264pay``: nothing is
decoded or encoded, so one core serves hundreds of cameras.

* Each access unit is held once, as a ``GLib.Bytes``; a push wraps it in a new ``Gst.Buffer``
  (``new_wrapped_bytes``, no copy), so all cameras showing one source share one copy of its data.
* Timestamps come from a per-camera frame counter: decode time ``k / fps`` for the k-th unit pushed
  since the camera started (plus the file's own pts-dts offset), so they keep rising across loops.
* ``appsrc`` is live; the RTSP server's sinks sync on the clock, which paces each camera at its
  native rate. ``need-data`` hands over one unit at a time, and the small queue (a few frames)
  keeps the latency of a camera low.
* A mount's media is shared: a camera is one stream that any number of clients can watch. Its
  pipeline starts with the first client and stops after the last one leaves, so idle cameras cost
  nothing. A camera's picture follows the wall clock (a client that comes back 30 s later sees
  footage 30 s on, from the keyframe at or before that point), and cameras of the same source are
  one keyframe apart so that they do not all show the same picture.

On the wire each access unit is the file's SEI and slice NAL units unchanged, behind an access unit
delimiter and, on keyframes, the SPS/PPS of the file's avcC (both added by ``h264parse
config-interval=-1`` at load time), as cameras send them, so a client can join at any keyframe. The
payloader itself adds nothing (``config-interval=0``): it would put SPS/PPS before *every* IDR
slice, and the prepared files have two slices per frame, which makes FFmpeg split the keyframe in two
packets.

Exit codes: 0 after SIGTERM/SIGINT, 1 on a runtime error, 2 on a bad argument or source.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstApp", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstApp, GstRtsp, GstRtspServer

    GI_ERROR: Exception | None = None
except (ImportError, ValueError) as exc:  # no python3-gi, or no typelib for one of the namespaces
    GI_ERROR = exc

log = logging.getLogger("rtsp_sim")

PASSWORD_ENV = "RTSP_SIM_PASSWORD"
# Elements the simulator needs, and the Debian package that brings each.
REQUIRED_ELEMENTS = {
    "filesrc": "gstreamer1.0-plugins-base (libgstreamer1.0-0)",
    "qtdemux": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "appsrc": "gstreamer1.0-plugins-base",
    "appsink": "gstreamer1.0-plugins-base",
}
MP4_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})
RAW_SUFFIXES = frozenset({".h264", ".264"})
# Frames queued in a camera's appsrc ahead of the clock: latency vs. scheduling slack.
QUEUE_FRAMES = 3
ROLE = "camera-viewer"
LOAD_STALL_S = 10.0


@dataclass(slots=True)
class Source:
    """One clip's H.264 access units, in decode order, held once in memory."""

    name: str
    path: Path
    caps: Gst.Caps
    fps_num: int
    fps_den: int
    width: int
    height: int
    units: list[GLib.Bytes] = field(default_factory=list)
    keyframe: list[bool] = field(default_factory=list)
    cts_ns: list[int] = field(default_factory=list)  # pts - dts of each unit in the file (0 without B-frames)
    keyframe_indices: list[int] = field(default_factory=list)

    @property
    def num_bytes(self) -> int:
        return sum(u.get_size() for u in self.units)

    def time_ns(self, frame_count: int) -> int:
        """Time of the ``frame_count``-th frame since a camera started (exact, no drift)."""
        return frame_count * Gst.SECOND * self.fps_den // self.fps_num


def _parse_fps(value: str) -> tuple[int, int]:
    """``"25"``, ``"29.97"`` or ``"30000/1001"`` -> (num, den)."""
    try:
        if "/" in value:
            num_s, den_s = value.split("/", 1)
            num, den = int(num_s), int(den_s)
        else:
            num, den = round(float(value) * 1000), 1000
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad frame rate {value!r}") from None
    if num <= 0 or den <= 0:
        raise argparse.ArgumentTypeError(f"frame rate must be > 0, got {value!r}")
    return num, den


def load_source(name: str, path: Path, *, raw_fps: tuple[int, int]) -> Source:
    """Demux ``path`` once into memory (no decoding).

    Raises:
        ValueError: Unknown file type, not H.264, no frames, or GStreamer failed to read it.
    """
    suffix = path.suffix.lower()
    if suffix in MP4_SUFFIXES:
        demux = "qtdemux ! "
    elif suffix in RAW_SUFFIXES:
        demux = ""
    else:
        raise ValueError(f"source {name}={path}: unsupported file type {suffix!r} (want .mp4 or .h264)")
    if not path.is_file():
        raise ValueError(f"source {name}={path}: no such file")
    pipeline = Gst.parse_launch(
        f"filesrc name=src ! {demux}h264parse config-interval=-1 ! "
        "video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    pipeline.get_by_name("src").set_property("location", str(path))
    sink = pipeline.get_by_name("sink")
    src: Source | None = None
    first_unit = True
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    last_progress = time.monotonic()
    try:
        while True:
            sample = sink.try_pull_sample(100 * Gst.MSECOND)
            if sample is None:
                # An error stops the pipeline without EOS on the appsink: look at the bus too.
                msg = bus.pop_filtered(Gst.MessageType.ERROR)
                if msg is not None:
                    err, _debug = msg.parse_error()
                    raise ValueError(f"source {name}={path}: GStreamer could not read it: {err.message}")
                if sink.is_eos():
                    break
                if time.monotonic() - last_progress > LOAD_STALL_S:
                    raise ValueError(f"source {name}={path}: reading stalled for {LOAD_STALL_S} s")
                continue
            last_progress = time.monotonic()
            buf = sample.get_buffer()
            if src is None:
                src = _new_source(name, path, sample.get_caps(), raw_fps)
            ok, info = buf.map(Gst.MapFlags.READ)
            if not ok:
                raise ValueError(f"source {name}={path}: cannot map a buffer")
            try:
                src.units.append(GLib.Bytes.new(info.data))
            finally:
                buf.unmap(info)
            key = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
            if first_unit and not key:
                raise ValueError(f"source {name}={path}: does not start with a keyframe")
            first_unit = False
            if key:
                src.keyframe_indices.append(len(src.keyframe))
            src.keyframe.append(key)
            valid = buf.pts != Gst.CLOCK_TIME_NONE and buf.dts != Gst.CLOCK_TIME_NONE
            src.cts_ns.append(max(0, buf.pts - buf.dts) if valid else 0)
    finally:
        pipeline.set_state(Gst.State.NULL)
    if src is None or not src.units:
        raise ValueError(f"source {name}={path}: no H.264 access units")
    return src


def _new_source(name: str, path: Path, caps: Gst.Caps, raw_fps: tuple[int, int]) -> Source:
    s = caps.get_structure(0)
    if s.get_name() != "video/x-h264":
        raise ValueError(f"source {name}={path}: not H.264 ({s.get_name()})")
    ok_w, width = s.get_int("width")
    ok_h, height = s.get_int("height")
    ok_f, fps_num, fps_den = s.get_fraction("framerate")
    if not (ok_f and fps_num > 0 and fps_den > 0):
        fps_num, fps_den = raw_fps
        caps = caps.copy()
        caps.set_value("framerate", Gst.Fraction(fps_num, fps_den))
    return Source(
        name=name,
        path=path,
        caps=caps,
        fps_num=fps_num,
        fps_den=fps_den,
        width=width if ok_w else 0,
        height=height if ok_h else 0,
    )


class _Feeder:
    """Pushes one camera's access units into its appsrc, one per ``need-data``."""

    __slots__ = ("count", "pos", "source")

    def __init__(self, source: Source, start_index: int) -> None:
        self.source = source
        self.pos = start_index
        self.count = 0

    def on_need_data(self, appsrc: GstApp.AppSrc, _length: int) -> None:
        src = self.source
        i = self.pos
        buf = Gst.Buffer.new_wrapped_bytes(src.units[i])
        dts = src.time_ns(self.count)
        buf.dts = dts
        buf.pts = dts + src.cts_ns[i]
        buf.duration = src.time_ns(self.count + 1) - dts
        if not src.keyframe[i]:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        self.count += 1
        self.pos = i + 1 if i + 1 < len(src.units) else 0
        appsrc.push_buffer(buf)


def make_factory(source: Source, *, epoch_s: float, start_keyframe: int = 0) -> GstRtspServer.RTSPMediaFactory:
    """Media factory of one mount: ``appsrc ! rtph264pay`` fed from the shared ``source``.

    The camera "runs" from ``epoch_s`` (monotonic) on, starting at keyframe ``start_keyframe``;
    a pipeline started later (first client after none) begins at the keyframe at or before
    where the camera would be by then, as a real camera's picture depends on the time only.
    """
    kf = source.keyframe_indices
    start_index = kf[start_keyframe % len(kf)]
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( appsrc name=src is-live=true format=time stream-type=stream "
        f"max-buffers={QUEUE_FRAMES} ! rtph264pay name=pay0 pt=96 config-interval=0 )"
    )
    factory.set_shared(True)

    def on_media_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        appsrc.set_property("caps", source.caps)
        elapsed_frames = int((time.monotonic() - epoch_s) * source.fps_num / source.fps_den)
        now_index = (start_index + elapsed_frames) % len(source.units)
        feeder = _Feeder(source, kf[bisect.bisect_right(kf, now_index) - 1])
        appsrc.connect("need-data", feeder.on_need_data)  # the handler keeps the feeder alive

    factory.connect("media-configure", on_media_configure)
    return factory


def _parse_source_arg(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--source wants NAME=PATH, got {value!r}")
    if "/" in name or not name.isprintable() or " " in name:
        raise argparse.ArgumentTypeError(f"--source name must be a plain mount name, got {name!r}")
    return name, Path(path)


def _check() -> int:
    """Report whether gi, the RTSP server and the elements are there (for the venv side)."""
    if GI_ERROR is not None:
        print(f"gi / GstRtspServer 1.0 not importable: {GI_ERROR}")
        return 1
    Gst.init(None)
    missing = [f"{e} ({pkg})" for e, pkg in REQUIRED_ELEMENTS.items() if Gst.ElementFactory.find(e) is None]
    if missing:
        print("missing GStreamer elements: " + ", ".join(missing))
        return 1
    print(f"ok: {Gst.version_string()}, GstRtspServer 1.0")
    return 0


def _write_ready(path: Path, payload: dict[str, object]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)  # readers never see a half-written file


def build_server(
    sources: list[Source],
    *,
    cameras: int,
    bind: str,
    port: int,
    user: str | None,
    password: str | None,
    auth_method: str = "digest",
) -> tuple[GstRtspServer.RTSPServer, list[str]]:
    server = GstRtspServer.RTSPServer()
    server.set_address(bind)
    server.set_service(str(port))
    server.set_backlog(1024)  # hundreds of clients connect at once
    permissions = None
    if user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
        # One method per server: GI exposes GstRTSPAuthMethod as an enum, so BASIC | DIGEST cannot be passed.
        if auth_method == "basic":
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password or ""), token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        elif auth_method == "digest":
            auth.add_digest(user, password or "", token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        else:
            raise ValueError(f"auth method must be 'basic' or 'digest', got {auth_method!r}")
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    mount_points = server.get_mount_points()
    mounts: list[str] = []
    epoch_s = time.monotonic()

    def add(mount: str, factory: GstRtspServer.RTSPMediaFactory) -> None:
        if permissions is not None:
            factory.set_permissions(permissions)
        mount_points.add_factory(mount, factory)
        mounts.append(mount)

    for src in sources:
        add(f"/{src.name}", make_factory(src, epoch_s=epoch_s))
    for cam in range(1, cameras + 1):
        # cam1..camN cycle over the sources; each lap starts one keyframe later.
        src = sources[(cam - 1) % len(sources)]
        add(f"/cam{cam}", make_factory(src, epoch_s=epoch_s, start_keyframe=(cam - 1) // len(sources)))
    return server, mounts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8554, help="RTSP port; 0 picks a free one (see --ready-file)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--source", action="append", type=_parse_source_arg, default=[], metavar="NAME=PATH")
    parser.add_argument("--cameras", type=int, default=0, help="also mount /cam1../camN, cycling over the sources")
    parser.add_argument("--user", help="require RTSP basic/digest authentication as this user")
    parser.add_argument("--password", help=f"password for --user (default: ${PASSWORD_ENV}, keeps it out of ps)")
    parser.add_argument("--auth-method", choices=("digest", "basic"), default="digest", help="how --user authenticates")
    parser.add_argument("--raw-fps", type=_parse_fps, default=(25, 1), help="frame rate of raw .h264 without VUI")
    parser.add_argument("--ready-file", type=Path, help="write {port, mounts, sources} as JSON once listening")
    parser.add_argument("--check", action="store_true", help="check gi, GstRtspServer and elements, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="rtsp_sim: %(message)s")

    if args.check:
        return _check()
    if GI_ERROR is not None:
        log.error("gi / GstRtspServer 1.0 not importable (%s): install scripts/debian-packages.txt", GI_ERROR)
        return 2
    if not args.source:
        parser.error("at least one --source NAME=PATH is needed")
    names = [name for name, _ in args.source]
    if len(set(names)) != len(names):
        parser.error(f"--source names must be unique, got {names}")
    if args.cameras < 0:
        parser.error(f"--cameras must be >= 0, got {args.cameras}")
    clashes = sorted(set(names) & {f"cam{i}" for i in range(1, args.cameras + 1)})
    if clashes:
        parser.error(f"--source names {clashes} clash with the /cam1../cam{args.cameras} mounts")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    password = args.password if args.password is not None else os.environ.get(PASSWORD_ENV)
    if args.user is not None and not password:
        parser.error(f"--user {args.user!r} needs --password or ${PASSWORD_ENV}")

    Gst.init(None)
    sources: list[Source] = []
    for name, path in args.source:
        t0 = time.monotonic()
        try:
            src = load_source(name, path, raw_fps=args.raw_fps)
        except ValueError as exc:
            log.error("%s", exc)
            return 2
        sources.append(src)
        log.info(
            "source %s: %s, %dx%d @ %g fps, %d units (%d keyframes), %.1f MB, loaded in %.2f s",
            name,
            path.name,
            src.width,
            src.height,
            src.fps_num / src.fps_den,
            len(src.units),
            len(src.keyframe_indices),
            src.num_bytes / 1e6,
            time.monotonic() - t0,
        )

    server, mounts = build_server(
        sources,
        cameras=args.cameras,
        bind=args.bind,
        port=args.port,
        user=args.user,
        password=password,
        auth_method=args.auth_method,
    )
    loop = GLib.MainLoop()
    try:
        server.attach(None)
    except GLib.Error as exc:
        log.error("cannot listen on %s:%s: %s", args.bind, args.port, exc.message)
        return 1
    port = server.get_bound_port()
    if port <= 0:
        log.error("cannot listen on %s:%s (port in use, or not an address of this host)", args.bind, args.port)
        return 1

    pool = server.get_session_pool()
    # Expire sessions of clients that vanished without TEARDOWN (UDP clients, killed processes).
    GLib.timeout_add_seconds(2, lambda: pool.cleanup() >= 0)
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, lambda: loop.quit() or False)

    auth_note = f", {args.auth_method} auth as user {args.user!r}" if args.user is not None else ""
    log.info(
        "listening on rtsp://%s:%d: %d mounts (%d cameras)%s", args.bind, port, len(mounts), args.cameras, auth_note
    )
    if args.ready_file is not None:
        _write_ready(
            args.ready_file,
            {
                "pid": os.getpid(),
                "port": port,
                "mounts": mounts,
                "sources": {
                    s.name: {
                        "width": s.width,
                        "height": s.height,
                        "fps": s.fps_num / s.fps_den,
                        "units": len(s.units),
                        "keyframes": len(s.keyframe_indices),
                    }
                    for s in sources
                },
            },
        )
    loop.run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
