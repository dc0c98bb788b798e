"""Synthetic underpass-flood footage with a known water level in every frame.

No real footage of Gwangju's underpasses flooding exists, so the water-level estimator is
measured on scenes rendered here: a concrete underpass wall with a staff gauge (white
plate, black/red "E" marks every 5 cm, decimetre numbers), the road in front of it, and
muddy flood water whose surface meets the wall at a scripted level. Everything that fools
a gauge reader in practice is a knob of :class:`Scene`: ripples and a wavy waterline, the
gauge's reflection in the water, rain (streaks in front of the lens, droplet rings on the
water, haze), night (a sodium lamp, its glint on the water, low contrast, sensor noise),
the silt stain a falling flood leaves on the gauge, and a camera that is rolled, sheared
and looking at the wall at an angle (perspective).

Geometry: the wall is a plane with coordinates ``u`` (cm along the wall, 0 at the gauge's
centre line) and ``v`` (cm above the road, 0 at the gauge's foot). A homography maps wall
cm to image pixels; its bottom row is ``(p, 0, 1)`` (perspective only *along* the wall, as
for a camera turned sideways), so cm along the vertical gauge stay linear in the image and
the product's linear ``bottom``..``top`` gauge calibration is exact. The road and the water
surface are drawn in the same plane (below ``v = 0`` / below the waterline), which is
enough for a reader that only looks along the gauge.

Every frame is a pure function of (scene, frame index, level): random parts are seeded by
``(scene.seed, frame index)``, so a scene renders to the same pixels every time and tests
can render single frames in memory (:func:`render_frame`) without touching files.

Files: :func:`render_scene` writes ``<name>.<digest>.mp4`` (H.264, 1 s GOP, no B-frames, as
:mod:`cluster.footage` prepares camera streams, but at CRF 28, a CCTV-like bit rate) and
``<name>.<digest>.json`` (the level of every frame and the gauge configuration) under
``.cache/water/`` by default; the digest covers the scene and the renderer's recipe, so a
changed scene renders again.

Run: ``.venv/bin/python -m benchmarks.accuracy.render_water [--out DIR] [--scene NAME ...]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from configs.analytics import WaterGaugeConfig

REPO = Path(__file__).resolve().parents[2]

CACHE_DIR = REPO / ".cache" / "water"
# Bump when the rendering or encoding recipe changes: cached files are then rendered again.
RECIPE_VERSION = 4
# CRF 28: about 1-2 Mbit/s at 640x360 for these noisy scenes, a CCTV-like bit rate.
CRF = 28
PRESET = "veryfast"

GAUGE_HALF_WIDTH_CM = 6.0
GAUGE_TOP_CM = 100.0
CANVAS_PX_PER_CM = 4.0
# Wall-plane extent of the static canvas (cm): wide enough for the frames' field of view.
CANVAS_U_CM = (-300.0, 300.0)
CANVAS_V_CM = (-120.0, 230.0)
CEILING_CM = 205.0

BGR = tuple[float, float, float]
_NOISE_BANK = 6


@dataclass(frozen=True, slots=True)
class GaugePose:
    """Where the camera sees the gauge: the image of the wall plane.

    Attributes:
        foot_xy: Image pixel of the gauge's 0 cm mark on its centre line.
        px_per_cm: Scale at the gauge's centre line.
        roll_deg: Camera roll (the gauge leans by this much in the image, clockwise positive).
        shear: Horizontal shift per pixel of height (a camera pitched at a slanted wall).
        keystone_per_cm: Perspective along the wall (camera looking at the wall at an angle):
            the wall's scale at ``u`` cm is ``1 / (1 + keystone_per_cm * u)`` of the centre's.
    """

    foot_xy: tuple[float, float] = (320.0, 300.0)
    px_per_cm: float = 2.3
    roll_deg: float = 0.0
    shear: float = 0.0
    keystone_per_cm: float = 0.0

    def homography(self) -> np.ndarray:
        """3x3 map from wall (u cm, v cm) to image (x px, y px)."""
        s, p = self.px_per_cm, self.keystone_per_cm
        persp = np.array([[s, 0.0, 0.0], [0.0, -s, 0.0], [p, 0.0, 1.0]])
        shear = np.array([[1.0, self.shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        a = math.radians(self.roll_deg)
        rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        move = np.array([[1.0, 0.0, self.foot_xy[0]], [0.0, 1.0, self.foot_xy[1]], [0.0, 0.0, 1.0]])
        return move @ rot @ shear @ persp

    def to_image(self, u_cm: float, v_cm: float) -> tuple[float, float]:
        x, y, w = self.homography() @ np.array([u_cm, v_cm, 1.0])
        return float(x / w), float(y / w)


@dataclass(frozen=True, slots=True)
class Scene:
    """One synthetic camera: a level script and what makes reading the gauge hard.

    Attributes:
        name: File stem and report key.
        seed: Seeds the static textures and every frame's random parts.
        levels: ``(t_s, level_cm)`` knots; the level is linear in between and constant outside.
        duration_s: Length of the clip.
        pose: Camera geometry.
        ripple: 0..1, waves on the surface (brightness, waviness of the waterline, reflection wobble).
        reflection: 0..1, share of the water's colour that is the mirrored wall and gauge.
        rain: 0..1, streaks, droplet rings and haze.
        night: A lamp instead of daylight: dark, warm, low contrast, its glint on the water.
        noise_sigma: Sensor noise (grey levels, before compression).
        stain: A falling flood leaves a silt stain on the gauge below the highest level so far.
        old_mark_cm: A permanent silt stain on the gauge up to this level (an earlier flood).
        debris: 0..1, foam and floating debris drifting past on the surface (bright, textured).
        water_bgr: Colour of the (muddy) water under diffuse light.
        fps: Frame rate; the GOP is one second (``fps`` frames).
        size: Image width, height (px).
        thresholds_cm: Alarm thresholds written into the gauge configuration.
    """

    name: str
    seed: int
    levels: tuple[tuple[float, float], ...]
    duration_s: float
    pose: GaugePose = field(default_factory=GaugePose)
    ripple: float = 0.3
    reflection: float = 0.12
    rain: float = 0.0
    night: bool = False
    noise_sigma: float = 2.0
    stain: bool = False
    old_mark_cm: float = 0.0
    debris: float = 0.0
    water_bgr: BGR = (62.0, 98.0, 112.0)
    fps: int = 10
    size: tuple[int, int] = (640, 360)
    thresholds_cm: tuple[float, ...] = (15.0, 30.0)

    @property
    def num_frames(self) -> int:
        return round(self.duration_s * self.fps)

    def level_cm(self, t_s: float) -> float:
        """The scripted level at ``t_s`` (the ground truth)."""
        ts, cm = zip(*self.levels, strict=True)
        return float(np.interp(t_s, ts, cm))

    def peak_cm(self, t_s: float) -> float:
        """Highest level up to ``t_s`` (where the silt stain reaches)."""
        knots = [cm for t, cm in self.levels if t <= t_s]
        return max([self.level_cm(t_s), *knots])

    def gauge_config(self, **overrides: object) -> WaterGaugeConfig:
        """The product configuration an installer would write for this camera."""
        kw: dict[str, object] = {
            "name": f"{self.name}-gauge",
            "bottom": _round_xy(self.pose.to_image(0.0, 0.0)),
            "top": _round_xy(self.pose.to_image(0.0, GAUGE_TOP_CM)),
            "bottom_cm": 0.0,
            "top_cm": GAUGE_TOP_CM,
            "thresholds_cm": list(self.thresholds_cm),
        }
        kw.update(overrides)
        return WaterGaugeConfig.model_validate(kw)

    def digest(self) -> str:
        key = json.dumps([dataclasses.asdict(self), RECIPE_VERSION, CRF, PRESET], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]


def _round_xy(p: tuple[float, float]) -> tuple[float, float]:
    return round(p[0], 2), round(p[1], 2)


# The benchmark scenes. Levels rise and fall around the 15 cm barrier threshold.
SCENES: dict[str, Scene] = {
    s.name: s
    for s in (
        # (a) Daylight, rising to 40 cm and falling to 5 cm; the falling flood leaves a silt stain.
        Scene(
            "day_rise_fall",
            seed=11,
            levels=((0, 0), (10, 0), (100, 40), (130, 40), (220, 5), (240, 5)),
            duration_s=240,
            stain=True,
        ),
        # (b) Calm-ish daylight with a strong mirror image of the gauge, ripples; tilted camera.
        Scene(
            "reflection_ripples",
            seed=22,
            levels=((0, 3), (60, 30), (110, 30), (170, 2), (180, 2)),
            duration_s=180,
            pose=GaugePose(foot_xy=(300.0, 310.0), px_per_cm=2.4, roll_deg=9.0, shear=0.08, keystone_per_cm=0.0025),
            ripple=1.0,
            reflection=0.45,
        ),
        # (c) Heavy rain: streaks over the gauge, droplet rings, haze; slightly rolled camera.
        Scene(
            "rain",
            seed=33,
            levels=((0, 5), (70, 25), (120, 25), (180, 8)),
            duration_s=180,
            pose=GaugePose(foot_xy=(340.0, 305.0), px_per_cm=2.3, roll_deg=-5.0, keystone_per_cm=-0.0015),
            ripple=0.6,
            reflection=0.2,
            rain=1.0,
            noise_sigma=3.0,
        ),
        # (d) Night: one lamp, its glint on the water, dark and noisy.
        Scene(
            "night",
            seed=44,
            levels=((0, 0), (80, 30), (120, 30), (180, 8)),
            duration_s=180,
            ripple=0.5,
            reflection=0.2,
            night=True,
            noise_sigma=7.0,
            water_bgr=(70.0, 90.0, 95.0),
        ),
        # (e1) Slow rise past 15 cm (about 2.8 cm/min) on a far gauge (1.2 px per cm).
        Scene(
            "slow_rise",
            seed=55,
            levels=((0, 8), (300, 22)),
            duration_s=300,
            pose=GaugePose(foot_xy=(330.0, 250.0), px_per_cm=1.2),
            ripple=0.3,
            debris=0.3,
        ),
        # (e2) Flash flood: 0 to 45 cm in 40 s (about 68 cm/min), choppy, foam; camera at an angle.
        Scene(
            "flash_flood",
            seed=66,
            levels=((0, 0), (30, 0), (70, 45), (150, 45)),
            duration_s=150,
            pose=GaugePose(foot_xy=(330.0, 315.0), px_per_cm=2.5, roll_deg=4.0, keystone_per_cm=0.004),
            ripple=0.9,
            reflection=0.25,
            debris=1.0,
            water_bgr=(55.0, 85.0, 105.0),
        ),
        # (f) Near miss: up to 13 cm in light rain with reflections, an old flood's stain up to 22 cm;
        # no alarm must open.
        Scene(
            "near_miss",
            seed=77,
            levels=((0, 2), (60, 13), (100, 13), (160, 2)),
            duration_s=160,
            ripple=0.6,
            reflection=0.35,
            rain=0.5,
            old_mark_cm=22.0,
        ),
    )
}


# --------------------------------------------------------------------------- static scene


def _noise_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Smooth zero-mean unit-std noise (Gaussian-blurred white noise)."""
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma_px)
    return n / (float(n.std()) + 1e-6)


def _canvas_xy(u_cm: float | np.ndarray, v_cm: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = (np.asarray(u_cm) - CANVAS_U_CM[0]) * CANVAS_PX_PER_CM
    y = (CANVAS_V_CM[1] - np.asarray(v_cm)) * CANVAS_PX_PER_CM
    return x, y


def _draw_gauge(canvas: np.ndarray) -> None:
    """A white staff gauge with 1 cm "E" bars (5 cm per E, sides alternating) and decimetre numbers."""
    r = CANVAS_PX_PER_CM
    hw = GAUGE_HALF_WIDTH_CM

    def rect(u0: float, v0: float, u1: float, v1: float, colour: BGR) -> None:
        x0, y1 = _canvas_xy(u0, v0)
        x1, y0 = _canvas_xy(u1, v1)
        cv2.rectangle(
            canvas, (round(float(x0)), round(float(y0))), (round(float(x1)) - 1, round(float(y1)) - 1), colour, -1
        )

    rect(-hw - 0.5, -1.0, hw + 0.5, GAUGE_TOP_CM + 1.0, (150.0, 150.0, 150.0))  # mounting edge
    rect(-hw, -1.0, hw, GAUGE_TOP_CM + 0.5, (232.0, 236.0, 238.0))
    black, red = (32.0, 32.0, 34.0), (40.0, 45.0, 190.0)
    for dm in range(int(GAUGE_TOP_CM // 10)):
        colour = black if dm % 2 == 0 else red
        for half in range(2):
            v0 = dm * 10 + half * 5
            left = half == 0
            u_spine = -hw + 1.0 if left else hw - 2.0
            rect(u_spine, v0, u_spine + 1.0, v0 + 5, colour)
            u0, u1 = (-hw + 1.0, 0.0) if left else (0.0, hw - 1.0)
            for bar in range(3):
                rect(u0, v0 + 2 * bar, u1, v0 + 2 * bar + 1, colour)
        # Decimetre number beside the lower E (putText draws on 8-bit images only: draw a mask).
        x, y = _canvas_xy(1.0, dm * 10 + 0.5)
        mask = np.zeros(canvas.shape[:2], np.uint8)
        cv2.putText(
            mask,
            str(dm),
            (round(float(x)), round(float(y))),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.14 * r,
            255,
            max(1, round(r / 2)),
            cv2.LINE_AA,
        )
        a = mask.astype(np.float32)[..., None] / 255.0
        canvas[:] = (1.0 - a) * canvas + a * np.array(colour, np.float32)


def _static_canvas(scene: Scene) -> np.ndarray:
    """The dry wall, road, ceiling and gauge in wall coordinates (float32 BGR)."""
    rng = np.random.default_rng([scene.seed, 0])
    w = round((CANVAS_U_CM[1] - CANVAS_U_CM[0]) * CANVAS_PX_PER_CM)
    h = round((CANVAS_V_CM[1] - CANVAS_V_CM[0]) * CANVAS_PX_PER_CM)
    ys = np.arange(h, dtype=np.float32)[:, None]
    v = CANVAS_V_CM[1] - ys / CANVAS_PX_PER_CM
    low = _noise_field(rng, (h, w), 60.0)
    fine = rng.standard_normal((h, w)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), 1.2)
    fine /= float(fine.std()) + 1e-6
    wall = np.array([136.0, 141.0, 146.0], np.float32)
    road = np.array([62.0, 64.0, 67.0], np.float32)
    curb = np.array([118.0, 122.0, 124.0], np.float32)
    ceiling = np.array([45.0, 47.0, 50.0], np.float32)
    base = np.where((v >= 0)[..., None], wall, np.where((v >= -8)[..., None], curb, road))
    base = np.where((v > CEILING_CM)[..., None], ceiling, base)
    canvas = base * (1.0 + 0.07 * low[..., None]) + 5.0 * fine[..., None]
    # Old flood marks: a dirty band on the wall near the road (not on the gauge, which is newer).
    dirt = np.clip((35.0 - v) / 35.0, 0.0, 1.0) * (v >= 0)
    canvas *= 1.0 - 0.12 * dirt[..., None]
    # Panel joints every 120 cm along the wall.
    for u_joint in np.arange(-300.0, 301.0, 120.0)[1:-1]:
        x, _ = _canvas_xy(u_joint, 0.0)
        canvas[(v >= 0)[:, 0] & (v <= CEILING_CM)[:, 0], round(float(x)) : round(float(x)) + 3] *= 0.75
    _draw_gauge(canvas)
    return canvas


@dataclass(slots=True)
class _Geometry:
    """Per-pixel wall coordinates of the image and the maps used every frame."""

    h_img: np.ndarray  # wall cm -> image px
    u: np.ndarray  # (H, W) wall u (cm) of each pixel
    v: np.ndarray  # (H, W) wall v (cm) of each pixel
    scale: np.ndarray  # (H, W) local px per cm (for sizes of droplets)


def _geometry(scene: Scene) -> _Geometry:
    h_img = scene.pose.homography()
    w, h = scene.size
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ np.linalg.inv(h_img).T
    u = (pts[..., 0] / pts[..., 2]).astype(np.float32)
    v = (pts[..., 1] / pts[..., 2]).astype(np.float32)
    scale = (scene.pose.px_per_cm / np.maximum(1.0 + scene.pose.keystone_per_cm * u, 0.2)).astype(np.float32)
    return _Geometry(h_img=h_img, u=u, v=v, scale=scale)


def _wall_to_image(h_img: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = h_img[2, 0] * u + h_img[2, 1] * v + h_img[2, 2]
    x = (h_img[0, 0] * u + h_img[0, 1] * v + h_img[0, 2]) / w
    y = (h_img[1, 0] * u + h_img[1, 1] * v + h_img[1, 2]) / w
    return x.astype(np.float32), y.astype(np.float32)


# --------------------------------------------------------------------------- frames


class SceneRenderer:
    """Renders frames of one scene; the static parts (wall, gauge, geometry) are built once."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.geo = _geometry(scene)
        canvas = _static_canvas(scene)
        # Anti-alias: the canvas has ~CANVAS_PX_PER_CM px per cm, the image ~px_per_cm.
        sigma = 0.45 * CANVAS_PX_PER_CM / scene.pose.px_per_cm
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
        mx, my = _canvas_xy(self.geo.u, self.geo.v)
        self.dry = cv2.remap(
            canvas, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        w, h = scene.size
        if scene.night:
            lamp = np.array([w * 0.22, h * 0.08])
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            r2 = (xx - lamp[0]) ** 2 + (yy - lamp[1]) ** 2
            light = 0.10 + 0.75 * np.exp(-r2 / (2 * (0.42 * w) ** 2))
            self.light = (light[..., None] * np.array([0.55, 0.8, 1.05], np.float32)).astype(np.float32)
            self.lamp_xy = lamp
            self.glare = (120.0 * np.exp(-r2 / (2 * 14.0**2)))[..., None].astype(np.float32)
        else:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            vignette = 1.0 - 0.18 * (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2)
            self.light = vignette[..., None].astype(np.float32)
            self.lamp_xy = None
            self.glare = None
        self._noise_bank: np.ndarray | None = None
        self._foam: np.ndarray | None = None

    def _noise(self, rng: np.random.Generator) -> np.ndarray:
        """Sensor noise (luma plus weaker chroma): a random shift of one of a few pre-drawn fields.

        Drawing ~1M normals per frame would dominate the rendering time; shifted copies of a
        small bank are as good for a reader that never sees two frames' noise side by side.
        """
        if self._noise_bank is None:
            nrng = np.random.default_rng([self.scene.seed, 2])
            w, h = self.scene.size
            luma = nrng.standard_normal((_NOISE_BANK, h, w, 1), dtype=np.float32)
            chroma = 0.4 * nrng.standard_normal((_NOISE_BANK, h, w, 3), dtype=np.float32)
            self._noise_bank = (luma + chroma) * np.float32(self.scene.noise_sigma)
        w, h = self.scene.size
        k, dy, dx = int(rng.integers(0, _NOISE_BANK)), int(rng.integers(0, h)), int(rng.integers(0, w))
        return np.roll(self._noise_bank[k], (dy, dx), axis=(0, 1))

    def frame(self, index: int, level_cm: float | None = None) -> np.ndarray:
        """Frame ``index`` (BGR uint8) with the water at ``level_cm`` (default: the script's level)."""
        sc, geo = self.scene, self.geo
        t = index / sc.fps
        level = sc.level_cm(t) if level_cm is None else float(level_cm)
        rng = np.random.default_rng([sc.seed, 1, index])
        img = self.dry.copy()
        u, v = geo.u, geo.v
        mark = max(sc.peak_cm(t), level) if sc.stain else 0.0
        mark = max(mark, sc.old_mark_cm)
        if mark > level:
            stained = (v >= level) & (v < mark)
            img[stained] *= np.array([0.80, 0.86, 0.90], np.float32)  # brown silt film

        # Waterline: waves travel along the wall; amplitude grows with the ripple knob.
        phase = rng.uniform(0, 2 * np.pi, 4)
        surf = level + sc.ripple * (
            0.45 * np.sin(2 * np.pi * u / 37.0 + 2 * np.pi * 0.6 * t + phase[0])
            + 0.25 * np.sin(2 * np.pi * u / 13.0 - 2 * np.pi * 1.1 * t + phase[1])
        )
        depth = surf - v  # cm below the surface (> 0: water)
        rows = np.flatnonzero((depth > -1.0).any(axis=1))
        if rows.size and level > 0:  # at 0 cm the road is dry
            r0 = int(rows[0])
            self._water(img, r0, depth[r0:], surf[r0:], u[r0:], v[r0:], t, phase, rng)
        if sc.rain > 0:
            self._rain(img, rng, level, surf, depth)
        img *= self.light
        if self.glare is not None:
            img += self.glare
        if sc.night:
            img = img * 0.8 + 14.0  # lifted black level, flat contrast of a night camera
        img += self._noise(rng)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _water(
        self,
        img: np.ndarray,
        r0: int,
        depth: np.ndarray,
        surf: np.ndarray,
        u: np.ndarray,
        v: np.ndarray,
        t: float,
        phase: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        """Paint the water over rows ``r0:`` in place: colour, ripples, reflection, meniscus."""
        sc = self.scene
        d = np.maximum(depth, 0.0)
        # Ripples: travelling waves, compressed with distance (foreshortening of the water plane).
        ripples = (
            np.sin(2 * np.pi * (u / 23.0 + d / 4.0) - 2 * np.pi * 0.9 * t + phase[2])
            + 0.6 * np.sin(2 * np.pi * (-u / 11.0 + d / 2.5) - 2 * np.pi * 1.7 * t + phase[3])
            + 0.4 * np.sin(2 * np.pi * (u / 5.0 + d / 1.3) + 2 * np.pi * 2.3 * t)
        ).astype(np.float32)
        water = np.array(sc.water_bgr, np.float32) * (1.0 + 0.07 * sc.ripple * ripples[..., None])
        # Turbid patches drift slowly.
        water *= (1.0 + 0.04 * np.sin(2 * np.pi * (u / 90.0 + d / 40.0) + 0.2 * t))[..., None]
        # Mirror image of what is above the surface, wobbled by the ripples.
        src_u = u + sc.ripple * 1.8 * ripples
        src_v = 2.0 * surf - v + sc.ripple * 0.8 * ripples
        mx, my = _wall_to_image(self.geo.h_img, src_u, src_v)
        above = img.copy()  # the wall and gauge as they are now (with the stain)
        mirror = cv2.remap(above, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        water = (1.0 - sc.reflection) * water + sc.reflection * 0.85 * mirror
        # The submerged gauge shows through the first centimetre of muddy water.
        seen = (0.25 * np.exp(-d / 0.8))[..., None]
        water = (1.0 - seen) * water + seen * img[r0:] * np.array([0.6, 0.75, 0.8], np.float32)
        # Meniscus: a bright rim right at the surface.
        water += (18.0 * np.exp(-d / 0.35))[..., None]
        if self.lamp_xy is not None:
            # The lamp's glint: a shimmering vertical streak on the water below it.
            w = sc.size[0]
            xs = np.arange(w, dtype=np.float32)[None, :]
            col = np.exp(-((xs - self.lamp_xy[0] - 40.0) ** 2) / (2 * 18.0**2))
            shimmer = np.clip(0.5 + 0.5 * ripples, 0.0, 1.0)
            water += (260.0 * col * shimmer * np.exp(-d / 40.0))[..., None]
        if sc.debris > 0:
            water = self._debris(water, r0, surf, depth, t)
        alpha = np.clip(depth + 0.5, 0.0, 1.0)[..., None]  # ~1 px soft edge
        img[r0:] = alpha * water + (1.0 - alpha) * img[r0:]

    def _debris(self, water: np.ndarray, r0: int, surf: np.ndarray, depth: np.ndarray, t: float) -> np.ndarray:
        """Foam and debris patches drifting along the wall at the flow speed (same patches every frame)."""
        sc = self.scene
        prng = np.random.default_rng([sc.seed, 3])
        n = round(40 * sc.debris)
        span = CANVAS_U_CM[1] - CANVAS_U_CM[0]
        u0 = prng.uniform(CANVAS_U_CM[0], CANVAS_U_CM[1], n)
        speed = prng.uniform(15.0, 35.0, n)  # cm/s
        uc = (u0 + speed * t - CANVAS_U_CM[0]) % span + CANVAS_U_CM[0]
        dc = prng.uniform(0.3, 12.0, n)  # cm in front of the wall, seen as cm below the waterline
        ru = prng.uniform(1.5, 5.0, n)
        shade = prng.uniform(150.0, 215.0, n)
        level = float(np.median(surf[-1]))
        mx, my = _wall_to_image(self.geo.h_img, uc, level - dc)
        layer = np.zeros(water.shape[:2], np.float32)
        cover = np.zeros(water.shape[:2], np.float32)
        for x, y, r, val in zip(mx, my - r0, ru, shade, strict=True):
            axes = (max(1, round(r * self.scene.pose.px_per_cm)), max(1, round(r * 0.4 * self.scene.pose.px_per_cm)))
            cv2.ellipse(layer, (round(float(x)), round(float(y))), axes, 0, 0, 360, float(val), -1, cv2.LINE_AA)
            cv2.ellipse(cover, (round(float(x)), round(float(y))), axes, 0, 0, 360, 0.85, -1, cv2.LINE_AA)
        texture = self._noise_texture(water.shape[:2], t)
        a = (cover * (depth > 0.2))[..., None]
        return (1.0 - a) * water + a * (layer * texture)[..., None]

    def _noise_texture(self, shape: tuple[int, int], t: float) -> np.ndarray:
        """Blotchy multiplicative texture for foam (0.75..1.25)."""
        if self._foam is None:
            frng = np.random.default_rng([self.scene.seed, 4])
            self._foam = 1.0 + 0.25 * np.tanh(_noise_field(frng, self.scene.size[::-1], 1.5))
        shift = round(t * 25.0) % self.scene.size[0]
        return np.roll(self._foam, shift, axis=1)[-shape[0] :]

    def _rain(
        self, img: np.ndarray, rng: np.random.Generator, level: float, surf: np.ndarray, depth: np.ndarray
    ) -> None:
        """Streaks in front of the lens, droplet rings on the water and haze, in place."""
        sc = self.scene
        w, h = sc.size
        layer = np.zeros((h, w), np.float32)
        n_streaks = round(260 * sc.rain)
        x0 = rng.uniform(0, w, n_streaks)
        y0 = rng.uniform(-20, h, n_streaks)
        length = rng.uniform(8, 26, n_streaks)
        ang = np.radians(rng.normal(100.0, 4.0, n_streaks))
        x1, y1 = x0 + length * np.cos(ang), y0 + length * np.sin(ang)
        for a, b, c, e, val in zip(x0, y0, x1, y1, rng.uniform(25, 70, n_streaks), strict=True):
            cv2.line(layer, (round(a), round(b)), (round(c), round(e)), float(val), 1, cv2.LINE_AA)
        # Droplet rings on the water surface (ellipses flattened by the viewing angle).
        water_rows, water_cols = np.nonzero(depth > 1.0)
        if water_rows.size:
            pick = rng.integers(0, water_rows.size, round(60 * sc.rain))
            for yy, xx, rad in zip(water_rows[pick], water_cols[pick], rng.uniform(1.5, 4.5, pick.size), strict=True):
                cv2.ellipse(
                    layer,
                    (int(xx), int(yy)),
                    (round(rad * 1.8), max(1, round(rad * 0.6))),
                    0,
                    0,
                    360,
                    35.0,
                    1,
                    cv2.LINE_AA,
                )
        img += cv2.GaussianBlur(layer, (0, 0), 0.7)[..., None]
        haze = 0.12 * sc.rain
        img *= 1.0 - haze
        img += haze * 150.0


@functools.lru_cache(maxsize=8)
def renderer(scene: Scene) -> SceneRenderer:
    """A (cached) renderer of ``scene``."""
    return SceneRenderer(scene)


def render_frame(scene: Scene, index: int, level_cm: float | None = None) -> np.ndarray:
    """Frame ``index`` of ``scene`` in memory (BGR uint8); ``level_cm`` overrides the script."""
    return renderer(scene).frame(index, level_cm)


# --------------------------------------------------------------------------- files


@dataclass(frozen=True, slots=True)
class RenderedScene:
    """A scene on disk: the H.264 clip and its ground truth."""

    scene: Scene
    video: Path
    truth: Path


def truth_record(scene: Scene) -> dict[str, object]:
    """The ground-truth JSON: every frame's level and the gauge configuration used."""
    return {
        "scene": scene.name,
        "recipe_version": RECIPE_VERSION,
        "seed": scene.seed,
        "fps": scene.fps,
        "gop_frames": scene.fps,
        "num_frames": scene.num_frames,
        "size": list(scene.size),
        "gauge": scene.gauge_config().model_dump(mode="json"),
        "scene_spec": dataclasses.asdict(scene),
        # Frame i is shown at i / fps seconds; its true level is level_cm_by_frame[i].
        "level_cm_by_frame": [round(scene.level_cm(i / scene.fps), 3) for i in range(scene.num_frames)],
    }


def render_scene(scene: Scene, out_dir: Path = CACHE_DIR) -> RenderedScene:
    """Render ``scene`` to ``out_dir`` once (cached by digest); return the files."""
    stem = f"{scene.name}.{scene.digest()}"
    video, truth = out_dir / f"{stem}.mp4", out_dir / f"{stem}.json"
    if video.is_file() and truth.is_file():
        return RenderedScene(scene, video, truth)
    out_dir.mkdir(parents=True, exist_ok=True)
    part = video.with_name(f"{video.name}.{os.getpid()}.part")
    try:
        _encode(scene, part)
        truth.write_text(json.dumps(truth_record(scene)) + "\n")
        part.replace(video)
    finally:
        part.unlink(missing_ok=True)
    return RenderedScene(scene, video, truth)


def _encode(scene: Scene, dst: Path) -> None:
    """H.264 with a fixed 1 s GOP and no B-frames, like :func:`cluster.footage.prepare_stream`."""
    fps = Fraction(scene.fps)
    gop = scene.fps
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"
    rend = renderer(scene)
    w, h = scene.size
    with av.open(str(dst), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": PRESET, "crf": str(CRF), "x264-params": params})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = 1 / fps
        stream.codec_context.time_base = 1 / fps
        for i in range(scene.num_frames):
            frame = av.VideoFrame.from_ndarray(rend.frame(i), format="bgr24").reformat(format="yuv420p")
            frame.pts = i
            frame.time_base = 1 / fps
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def shortened(scene: Scene, duration_s: float | None) -> Scene:
    """``scene`` cut to ``duration_s`` (its level script unchanged), or itself when None or already shorter."""
    if duration_s is None or duration_s >= scene.duration_s:
        return scene
    return dataclasses.replace(scene, duration_s=duration_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=CACHE_DIR)
    ap.add_argument("--scene", action="append", choices=sorted(SCENES), help="Render only these (repeatable).")
    ap.add_argument("--png", action="store_true", help="Also write a PNG of each scene's middle frame.")
    ap.add_argument("--duration-s", type=float, default=None, help="Cut each scene to this length (tiny runs).")
    args = ap.parse_args(argv)
    for name in args.scene or list(SCENES):
        scene = shortened(SCENES[name], args.duration_s)
        rendered = render_scene(scene, args.out)
        print(f"{name}: {rendered.video}")
        if args.png:
            mid = scene.num_frames // 2
            cv2.imwrite(str(args.out / f"{name}.frame{mid}.png"), render_frame(scene, mid))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
