"""Video decoder selection: NVIDIA NVDEC where asked for and available, the CPU otherwise.

The choice is made once per stream (re)open. ``nvdec`` that fails to open falls back to
the CPU decoder and says why, so a node without a GPU still runs the same configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import av

log = logging.getLogger(__name__)

_NVDEC = {"h264": "h264_cuvid", "hevc": "hevc_cuvid"}


@dataclass(frozen=True, slots=True)
class DecoderChoice:
    """The decoder a stream got and, when it is not the one asked for, why."""

    codec_context: av.codec.context.CodecContext
    backend: Literal["cpu", "nvdec"]
    note: str


def open_decoder(
    stream: av.VideoStream, want: Literal["cpu", "nvdec", "auto"], *, keyframe_only: bool
) -> DecoderChoice:
    """A decoder for ``stream``: the stream's own (CPU) context, or an NVDEC context.

    Args:
        stream: The demuxed video stream (its parameters seed the NVDEC context).
        want: ``cpu``, ``nvdec`` or ``auto`` (both of the latter fall back to the CPU).
        keyframe_only: Tell the decoder to skip non-key frames as well (we also never feed them).
    """
    return _backend(stream.codec_context, want, keyframe_only=keyframe_only)


def open_codec_decoder(codec_name: str, want: Literal["cpu", "nvdec", "auto"], *, keyframe_only: bool) -> DecoderChoice:
    """A decoder from the codec's name alone, for access units that come without a demuxed stream.

    Used by the one-loop RTSP receiver: its units carry their parameter sets in band, and it decodes on
    the shared receive thread, so the CPU decoder gets one thread (no pool per camera).
    """
    cpu = av.CodecContext.create(codec_name, "r")
    cpu.thread_count = 1
    return _backend(cpu, want, keyframe_only=keyframe_only)


def _backend(
    cpu: av.codec.context.CodecContext, want: Literal["cpu", "nvdec", "auto"], *, keyframe_only: bool
) -> DecoderChoice:
    if keyframe_only:
        cpu.skip_frame = "NONKEY"
    if want == "cpu":
        return DecoderChoice(cpu, "cpu", "cpu decoder configured")
    name = _NVDEC.get(cpu.name)
    if name is None:
        return DecoderChoice(cpu, "cpu", f"no NVDEC decoder for codec {cpu.name!r}; using the CPU")
    try:
        ctx = av.CodecContext.create(name, "r")
        ctx.extradata = cpu.extradata
        ctx.width, ctx.height = cpu.width, cpu.height
        if keyframe_only:
            ctx.skip_frame = "NONKEY"
        ctx.open()
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        note = f"{name} unavailable ({type(exc).__name__}: {exc}); using the CPU decoder"
        log.info(note)
        return DecoderChoice(cpu, "cpu", note)
    return DecoderChoice(ctx, "nvdec", f"{name} opened")
