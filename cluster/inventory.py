"""A generated, Gwangju-like camera inventory for scale tests and capacity planning.

Gwangju's five districts and a mix of purposes, resolutions, frame rates and decode modes close
to a city CCTV estate (mostly crime-prevention 1080p/720p cameras at 15 fps, a minority of older
360p ones; slow-event cameras — flood, fire — decoded keyframe-only). Deterministic per seed.
"""

from __future__ import annotations

import random

from configs.schema import CameraConfig

DISTRICTS = ("dong-gu", "seo-gu", "nam-gu", "buk-gu", "gwangsan-gu")
GWANGJU_CAMERAS = 10_069

_PURPOSES = (("general", 0.70), ("traffic", 0.15), ("crowd", 0.08), ("flood", 0.04), ("fire", 0.03))
_RESOLUTIONS = (("1080p", 0.45), ("720p", 0.35), ("360p", 0.20))
_FPS = ((15.0, 0.7), (30.0, 0.3))


def _pick(rng: random.Random, table: tuple[tuple[object, float], ...]) -> object:
    values, weights = zip(*table, strict=True)
    return rng.choices(values, weights)[0]


def gwangju_like_inventory(n: int = GWANGJU_CAMERAS, seed: int = 0, prefix: str = "gj") -> list[CameraConfig]:
    """``n`` cameras with ids ``<prefix>-<district>-<number>`` and RTSP URLs that reach nothing."""
    rng = random.Random(seed)
    cams = []
    for i in range(n):
        district = DISTRICTS[rng.randrange(len(DISTRICTS))]
        purpose = _pick(rng, _PURPOSES)
        mode = "keyframe" if purpose in ("flood", "fire") else ("sampled" if rng.random() < 0.5 else "keyframe")
        cams.append(
            CameraConfig(
                id=f"{prefix}-{district}-{i:05d}",
                url=f"rtsp://cams.invalid/{district}/{i}",
                district=district,
                purpose=purpose,  # type: ignore[arg-type]
                decode_mode=mode,  # type: ignore[arg-type]
                nominal_resolution=_pick(rng, _RESOLUTIONS),  # type: ignore[arg-type]
                nominal_fps=_pick(rng, _FPS),  # type: ignore[arg-type]
            )
        )
    return cams
