"""The embedded default camera set: real footage looped as live cameras.

Used by ``cctv run`` when the configuration lists no cameras. Each prepared clip
(H.264, 1 s GOP, see :mod:`cluster.footage`) becomes one or more cameras in Gwangju's
five districts, each with a full-frame crowd zone.
"""

from __future__ import annotations

from pathlib import Path

import av

from configs.schema import CameraConfig, ZoneConfig

GWANGJU_DISTRICTS = ("dong-gu", "seo-gu", "nam-gu", "buk-gu", "gwangsan-gu")


def frame_size(path: Path) -> tuple[int, int]:
    """Width and height of the first video stream of a file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def demo_cameras(
    sources: list[Path],
    n: int,
    *,
    crowd_threshold_people: int = 5,
    min_duration_s: float = 2.0,
    cooldown_s: float = 4.0,
    analytics_fps: float = 1.0,
    decode_mode: str = "keyframe",
    urls: list[str] | None = None,
) -> list[CameraConfig]:
    """``n`` cameras cycling over ``sources``, each with a whole-frame crowd zone.

    Args:
        urls: Where camera i is read from (e.g. the RTSP simulator's ``/cam<i+1>``, which cycles
            over the same sources in the same order); default: the source files, looped.
    """
    if urls is not None and len(urls) < n:
        raise ValueError(f"{n} cameras need {n} urls, got {len(urls)}")
    if not sources:
        raise ValueError("no footage to make demo cameras from")
    sizes = {p: frame_size(p) for p in sources}
    cams = []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = sizes[src]
        cams.append(
            CameraConfig(
                id=f"cam-{i + 1:04d}",
                url=urls[i] if urls is not None else str(src),
                district=GWANGJU_DISTRICTS[i % len(GWANGJU_DISTRICTS)],
                purpose="crowd",
                analytics_fps=analytics_fps,
                decode_mode=decode_mode,  # type: ignore[arg-type]
                loop=urls is None,
                zones=[
                    ZoneConfig(
                        name="frame",
                        polygon=[(0, 0), (w, 0), (w, h), (0, h)],
                        crowd_threshold_people=crowd_threshold_people,
                        min_duration_s=min_duration_s,
                        cooldown_s=cooldown_s,
                    )
                ],
            )
        )
    return cams
