"""Set-up step: turn demo clips into camera-like H.264 streams, once, into a cache.

Real cameras send H.264/HEVC with a fixed GOP and no re-ordering surprises; the demo
clips come in whatever their authors used (MS-MPEG4 in AVI, H.264 with B-frames and
irregular GOPs, ...). :func:`prepare_stream` re-encodes a clip once with a fixed GOP
(``keyint = min-keyint = round(fps * gop_s)``, scene-cut off, no B-frames) at its
native frame rate and size, as a fast-start MP4 that a camera simulator or a file
"camera" can replay. Frames are re-timed to a constant frame rate (frame ``i`` at
``i / fps``), as a camera would send them.

The output name carries the source name, a digest of the source's size and mtime and
the encoding parameters, so a changed source or parameter converts again and an
unchanged one is returned at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from actors.packets import StreamInfo

log = logging.getLogger(__name__)

CRF = 23
PRESET = "veryfast"
# Bump when the encoding recipe changes so that cached conversions are redone.
RECIPE_VERSION = 1
CLIP_SUFFIXES = frozenset({".mp4", ".avi"})
_ENCODERS: dict[str, str] = {"h264": "libx264", "hevc": "libx265"}


@dataclass(frozen=True, slots=True)
class PreparedStream:
    """Summary of a prepared stream file (see :func:`probe`)."""

    path: Path
    info: StreamInfo
    fps: float
    num_frames: int
    duration_s: float


def _source_fps(stream: av.VideoStream) -> Fraction:
    # guessed_rate first: crowd_overhead_bw.avi declares avg 50 fps for 25 fps content.
    rate = stream.guessed_rate or stream.average_rate or stream.base_rate
    if not rate or rate <= 0:
        raise ValueError(f"cannot tell the frame rate of {stream.container.name!r}")
    return Fraction(rate)


def _output_size(width: int, height: int, max_height: int | None) -> tuple[int, int]:
    """Size after optional down-scaling to ``max_height``, rounded to even numbers (yuv420p)."""
    if max_height is not None and max_height < height:
        if max_height < 2:
            raise ValueError(f"max_height must be >= 2, got {max_height}")
        width = round(width * max_height / height)
        height = max_height
    return max(2, width - width % 2), max(2, height - height % 2)


def cache_name(src: Path, *, gop_s: float, codec: str, max_height: int | None) -> str:
    """File name of ``src``'s conversion: source name + digest of (size, mtime, parameters)."""
    st = src.stat()
    key = "|".join(
        str(v) for v in (src.name, st.st_size, st.st_mtime_ns, gop_s, codec, max_height, CRF, PRESET, RECIPE_VERSION)
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    height_tag = f"h{max_height}" if max_height is not None else "native"
    return f"{src.stem}.{codec}.gop{gop_s:g}s.{height_tag}.{digest}.mp4"


def prepare_stream(
    src: Path,
    cache_dir: Path,
    *,
    gop_s: float = 1.0,
    codec: str = "h264",
    max_height: int | None = None,
) -> Path:
    """Convert ``src`` once to a fixed-GOP camera stream in ``cache_dir``; return its path.

    Args:
        src: A video file PyAV can decode.
        cache_dir: Where conversions are kept (created if missing).
        gop_s: Keyframe interval in seconds; the GOP is ``round(fps * gop_s)`` frames.
        codec: ``"h264"`` (libx264) or ``"hevc"`` (libx265).
        max_height: Scale down (keeping the aspect ratio, even dimensions) if taller.

    Raises:
        ValueError: Bad parameter, or a source without video or a frame rate.
        av.error.FFmpegError: The source could not be decoded or the stream encoded.
        OSError: Reading the source or writing the cache failed.
    """
    encoder = _ENCODERS.get(codec)
    if encoder is None:
        raise ValueError(f"codec must be one of {sorted(_ENCODERS)}, got {codec!r}")
    if not gop_s > 0:
        raise ValueError(f"gop_s must be > 0, got {gop_s!r}")
    out_path = cache_dir / cache_name(src, gop_s=gop_s, codec=codec, max_height=max_height)
    if out_path.is_file():
        return out_path
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A per-process .part name: two processes preparing the same clip do not clobber each other.
    part = out_path.with_name(f"{out_path.name}.{os.getpid()}.part")
    t0 = time.perf_counter()
    try:
        num_frames = _convert(src, part, encoder=encoder, gop_s=gop_s, max_height=max_height)
        part.replace(out_path)
    finally:
        part.unlink(missing_ok=True)  # a failed conversion leaves nothing behind
    elapsed_s = time.perf_counter() - t0
    log.info("prepared %s -> %s: %d frames in %.1f s", src.name, out_path.name, num_frames, elapsed_s)
    return out_path


def _convert(src: Path, dst: Path, *, encoder: str, gop_s: float, max_height: int | None) -> int:
    with av.open(str(src)) as inp:
        if not inp.streams.video:
            raise ValueError(f"{src} has no video stream")
        in_stream = inp.streams.video[0]
        in_stream.thread_type = "AUTO"
        fps = _source_fps(in_stream)
        gop_frames = max(1, round(fps * Fraction(gop_s)))
        ctx = in_stream.codec_context
        width, height = _output_size(ctx.width, ctx.height, max_height)
        # Fixed GOP: every keyint frames exactly, no scene-cut keyframes; no B-frames (dts == pts).
        params = f"keyint={gop_frames}:min-keyint={gop_frames}:scenecut=0:bframes=0"
        if encoder == "libx264":
            params_key = "x264-params"
        else:
            params_key = "x265-params"
            params += ":open-gop=0:log-level=error"
        with av.open(str(dst), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
            out_stream = out.add_stream(
                encoder,
                rate=fps,
                options={"preset": PRESET, "crf": str(CRF), params_key: params},
            )
            out_stream.width = width
            out_stream.height = height
            out_stream.pix_fmt = "yuv420p"
            out_stream.time_base = 1 / fps
            out_stream.codec_context.time_base = 1 / fps
            index = 0
            for frame in inp.decode(in_stream):
                if frame.width != width or frame.height != height or frame.format.name != "yuv420p":
                    frame = frame.reformat(width=width, height=height, format="yuv420p")
                frame.pts = index
                frame.time_base = 1 / fps
                frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose
                index += 1
                out.mux(out_stream.encode(frame))
            out.mux(out_stream.encode(None))
    if index == 0:
        raise ValueError(f"{src} decoded to no frames")
    return index


def probe(path: Path) -> PreparedStream:
    """Stream summary of a video file (frames counted by demuxing, no decoding)."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = c.streams.video[0]
        info = StreamInfo.from_av_stream(stream)
        fps = float(_source_fps(stream))
        num_frames = sum(1 for p in c.demux(stream) if p.size)
    return PreparedStream(
        path=path, info=info, fps=fps, num_frames=num_frames, duration_s=num_frames / fps if fps else 0.0
    )


def demo_sources(
    cache_dir: Path,
    clips_dir: Path | None,
    vtest_path: Path | None,
    *,
    gop_s: float = 1.0,
    max_height: int | None = None,
) -> list[Path]:
    """Prepare vtest.avi (if present) and every .mp4/.avi clip in ``clips_dir``.

    Returns:
        The prepared stream paths, vtest first, then the clips sorted by name.
    """
    sources: list[Path] = []
    if vtest_path is not None and vtest_path.is_file():
        sources.append(vtest_path)
    if clips_dir is not None and clips_dir.is_dir():
        sources.extend(sorted(p for p in clips_dir.iterdir() if p.suffix.lower() in CLIP_SUFFIXES))
    return [prepare_stream(src, cache_dir, gop_s=gop_s, max_height=max_height) for src in sources]


def read_frame(path: Path, index: int) -> np.ndarray:
    """Decode frame ``index`` of a video file (seek with ``CAP_PROP_POS_FRAMES``); for tests and evaluations.

    Raises:
        FileNotFoundError: the file does not open as video.
        ValueError: the frame cannot be read.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open video {path}")
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        raise ValueError(f"{path}: cannot read frame {index}")
    return frame
