"""Zone geometry: point-in-polygon, and ground-plane calibration (image pixels ↔ metres)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from configs.analytics import GroundCalibration
from contracts.detector import Detection

PERSON_LABEL = "person"


def points_in_polygon(points: np.ndarray, polygon: Sequence[tuple[float, float]]) -> np.ndarray:
    """Even-odd ray casting, vectorised over points.

    Args:
        points: Array of shape (N, 2) with (x, y) in pixels.
        polygon: Vertices in pixels, in order, at least three.

    Returns:
        Boolean array of shape (N,).
    """
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    poly = np.asarray(polygon, dtype=np.float64)
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    crossings = straddles & (x < x_cross)
    return (crossings.sum(axis=1) % 2) == 1


def foot_point(d: Detection) -> tuple[float, float]:
    """Bottom centre of a box: where a person stands (zones are drawn on the ground)."""
    return (d.box[0] + d.box[2]) / 2.0, d.box[3]


def in_zone(detections: Iterable[Detection], polygon: Sequence[tuple[float, float]], labels: set[str]) -> list[int]:
    """Indices of detections with a label in ``labels`` whose foot point lies in the zone."""
    dets = list(detections)
    idx = [i for i, d in enumerate(dets) if d.label in labels]
    if not idx:
        return []
    feet = np.asarray([foot_point(dets[i]) for i in idx], dtype=np.float64)
    inside = points_in_polygon(feet, polygon)
    return [i for i, ok in zip(idx, inside, strict=True) if ok]


def count_people_in_zone(detections: Iterable[Detection], polygon: Sequence[tuple[float, float]]) -> int:
    """Persons whose foot point lies inside the zone."""
    return len(in_zone(detections, polygon, {PERSON_LABEL}))


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of a simple polygon (same units squared as the points)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def homography(src: Sequence[tuple[float, float]], dst: Sequence[tuple[float, float]]) -> np.ndarray:
    """3x3 projective map taking the four ``src`` points to the four ``dst`` points (DLT).

    Raises:
        ValueError: when three of the points are collinear (no unique map).
    """
    a = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        a.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        a.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, s, vt = np.linalg.svd(np.asarray(a, dtype=np.float64))
    if s[-2] < 1e-9 * s[0]:
        raise ValueError(f"calibration points {list(src)} do not define a homography (collinear?)")
    h = vt[-1].reshape(3, 3)
    return h / h[2, 2]


class GroundPlane:
    """Maps image pixels to ground metres for one camera's calibration."""

    def __init__(self, cal: GroundCalibration) -> None:
        self.h = homography(cal.image_points, cal.ground_points_m)

    def to_ground(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) pixels → (N, 2) metres."""
        p = np.hstack([np.asarray(points, dtype=np.float64), np.ones((len(points), 1))]) @ self.h.T
        return p[:, :2] / p[:, 2:3]

    def area_m2(self, polygon: Sequence[tuple[float, float]]) -> float:
        """Ground area of an image polygon (exact for straight edges: a homography keeps lines straight)."""
        return polygon_area(self.to_ground(np.asarray(polygon, dtype=np.float64)))
