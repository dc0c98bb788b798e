"""Configuration of the analytics rules (pydantic v2, ``extra="forbid"``).

Each rule is configured per camera or per zone; units are in the names. These models are
validated at load like the rest of the configuration (see :mod:`configs.schema`).
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Point = tuple[float, float]
Severity = Literal["info", "caution", "warning", "severe", "critical"]
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(get_args(Severity))}
"""Severities in rising order (info 0 .. critical 4): the one ranking the rules, the API and the benchmarks use."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GroundCalibration(_Model):
    """Four image points (pixels) and where they lie on the ground (metres): a homography.

    With it a zone has an area in m² and people counts become densities (people/m²).
    """

    image_points: list[Point] = Field(min_length=4, max_length=4)
    ground_points_m: list[Point] = Field(min_length=4, max_length=4)

    @field_validator("image_points", "ground_points_m")
    @classmethod
    def _no_three_in_line(cls, pts: list[Point]) -> list[Point]:
        """A homography needs four points with no three on one line (else it cannot be solved)."""
        for i in range(4):
            a, b, c = (pts[j] for j in range(4) if j != i)
            twice_area = abs((b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]))
            if twice_area < 1e-6:
                raise ValueError(f"points {a}, {b}, {c} lie on one line (or coincide): no homography")
        return pts


class Lifecycle(_Model):
    """Timing shared by every rule's events."""

    min_duration_s: float = Field(default=2.0, ge=0, description="The condition must hold this long to open.")
    cooldown_s: float = Field(default=5.0, ge=0, description="The condition must be absent this long to close.")
    rearm_s: float = Field(
        default=0.0, ge=0, description="After a close, no new event of this rule and zone opens for this long."
    )


class ScheduleWindow(_Model):
    """When a rule is active: local time ``start``..``end`` (may wrap midnight) on ``days`` (0 = Monday)."""

    days: list[int] = Field(default_factory=lambda: list(range(7)))
    start: str = Field(default="00:00", description="HH:MM")
    end: str = Field(default="24:00", description="HH:MM; 24:00 is the end of the day")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        m = re.fullmatch(r"(\d{2}):(\d{2})", v)
        if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59 or (int(m.group(1)) == 24 and m.group(2) != "00"):
            raise ValueError(f"time {v!r} is not HH:MM (00:00..24:00)")
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        bad = [d for d in v if not 0 <= d <= 6]
        if bad or not v:
            raise ValueError(f"days must be 0 (Monday)..6 (Sunday), got {v}")
        return v


class CrowdDensityConfig(_Model):
    """People in a zone. Calibrated zones use people/m² levels; others use people counts."""

    levels_people_per_m2: tuple[float, float, float] = Field(
        default=(3.0, 4.0, 5.0), description="caution, warning, severe (Seoul's crowd-density levels)"
    )
    levels_people: tuple[int, int, int] | None = Field(
        default=None, description="caution, warning, severe as counts, for zones without calibration"
    )
    window_s: float = Field(default=5.0, gt=0, description="Count smoothing window (median).")
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)

    @model_validator(mode="after")
    def _rising(self) -> CrowdDensityConfig:
        for name, levels in (
            ("levels_people_per_m2", self.levels_people_per_m2),
            ("levels_people", self.levels_people),
        ):
            if levels is not None and not (0 < levels[0] < levels[1] < levels[2]):
                raise ValueError(f"{name} must rise strictly and be > 0, got {levels}")
        return self


class IntrusionConfig(_Model):
    """An object of ``classes`` inside the zone opens an event."""

    classes: list[str] = Field(default_factory=lambda: ["person"], min_length=1)
    lifecycle: Lifecycle = Field(default_factory=lambda: Lifecycle(min_duration_s=1.0, cooldown_s=5.0))
    schedule: list[ScheduleWindow] = Field(default_factory=list, description="Empty: always active.")


class LoiteringConfig(_Model):
    """One tracked object of ``classes`` staying in the zone at least ``dwell_s`` opens an event."""

    classes: list[str] = Field(default_factory=lambda: ["person"], min_length=1)
    dwell_s: float = Field(default=60.0, gt=0)
    lifecycle: Lifecycle = Field(default_factory=lambda: Lifecycle(min_duration_s=0.0, cooldown_s=5.0))
    schedule: list[ScheduleWindow] = Field(default_factory=list)


class WaterGaugeConfig(_Model):
    """A staff gauge (or a wall) seen by the camera: the image line from ``bottom`` to ``top``.

    ``bottom`` is where the water level reads ``bottom_cm``, ``top`` where it reads ``top_cm``;
    the estimator looks for the water surface along this line in a band ``band_px`` wide.
    """

    name: str = Field(default="gauge", min_length=1, max_length=64)
    bottom: Point
    top: Point
    bottom_cm: float = 0.0
    top_cm: float = 100.0
    band_px: int = Field(default=12, ge=2, le=200)
    thresholds_cm: list[float] = Field(
        default_factory=lambda: [15.0, 30.0], min_length=1, description="warning, severe, critical levels"
    )
    median_window: int = Field(default=5, ge=1, le=101, description="Temporal median over sampled frames.")
    lifecycle: Lifecycle = Field(default_factory=lambda: Lifecycle(min_duration_s=5.0, cooldown_s=30.0))

    @model_validator(mode="after")
    def _check(self) -> WaterGaugeConfig:
        if self.top_cm <= self.bottom_cm:
            raise ValueError(f"top_cm {self.top_cm} must be above bottom_cm {self.bottom_cm}")
        if self.bottom == self.top:
            raise ValueError("gauge bottom and top are the same point")
        if sorted(self.thresholds_cm) != self.thresholds_cm:
            raise ValueError(f"thresholds_cm must be increasing, got {self.thresholds_cm}")
        return self


FireSmokeSource = Literal["classic", "learned", "fused"]
"""Where a camera's fire and smoke scores come from (see :class:`FireSmokeConfig`)."""


def _check_labels(field: str, labels: list[str]) -> list[str]:
    if not labels:
        raise ValueError(f"{field} is empty: give at least one class name of the fire/smoke model")
    for i, label in enumerate(labels):
        if not label.strip():
            raise ValueError(f"{field}[{i}] {label!r} is blank: class names must be non-empty")
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise ValueError(f"{field} lists {', '.join(repr(d) for d in dupes)} more than once")
    return labels


class LearnedFireSmokeConfig(_Model):
    """How a learned fire/smoke detector's detections become fire and smoke scores.

    The detector is the one serving the camera's purpose (``purpose_detectors.<purpose>``, else
    ``detector``); its class names are the model registry manifest's ``classes``. Labels are matched
    exactly (case included). A learned score is the highest score of the detections of those labels
    whose box centre lies in the camera's ``roi`` (anywhere when there is none), 0 when there is none.
    """

    fire_labels: list[str] = Field(
        default_factory=lambda: ["fire", "flame"], description="Model classes that count as fire (exact names)."
    )
    smoke_labels: list[str] = Field(
        default_factory=lambda: ["smoke"], description="Model classes that count as smoke (exact names)."
    )
    min_score: float = Field(
        default=0.3, ge=0, lt=1, description="Detections scoring below this are ignored (not fire/smoke evidence)."
    )
    max_age_s: float = Field(
        default=3.0,
        gt=0,
        description="source fused only: a learned score is combined with the classic one on the frames at most "
        "this many seconds (capture time) after the frame it was detected on; older, it is ignored.",
    )

    @field_validator("fire_labels")
    @classmethod
    def _fire_labels(cls, v: list[str]) -> list[str]:
        return _check_labels("fire_labels", v)

    @field_validator("smoke_labels")
    @classmethod
    def _smoke_labels(cls, v: list[str]) -> list[str]:
        return _check_labels("smoke_labels", v)

    @model_validator(mode="after")
    def _disjoint(self) -> LearnedFireSmokeConfig:
        both = sorted(set(self.fire_labels) & set(self.smoke_labels))
        if both:
            raise ValueError(
                f"{', '.join(repr(b) for b in both)} is in both fire_labels and smoke_labels: one detection "
                "would count as fire and as smoke"
            )
        return self


class FireSmokeConfig(_Model):
    """Fire and smoke events of a camera, scored by the classic cues, a learned detector, or both.

    ``source``:

    * ``classic`` (default): flame colour + flicker and growing low-saturation regions on each sampled
      frame, on the shard's CPU (:mod:`actors.analytics.fire`); no detector needed.
    * ``learned``: only the detections of a fire/smoke model (``learned``); the classic scorer does not run.
    * ``fused``: per sampled frame, the higher of the classic score and the latest learned score still
      younger than ``learned.max_age_s`` (detections come back after their frame).

    ``learned`` and ``fused`` need a detector that knows fire/smoke classes routed to the camera's
    purpose (``purpose_detectors.<purpose>``); the configuration refuses the stock COCO/person
    detectors. When ``learned`` is omitted for those sources its defaults apply.
    The thresholds and the life cycle apply to whichever score drives the events.
    """

    fire: bool = True
    smoke: bool = True
    roi: list[Point] | None = Field(default=None, description="Polygon to look in (None: whole frame).")
    fire_score_threshold: float = Field(default=0.5, gt=0, lt=1)
    smoke_score_threshold: float = Field(default=0.5, gt=0, lt=1)
    # The scorer already takes a 2.5 s median, so 2 s of persistence on top opens within ~3-7 s.
    lifecycle: Lifecycle = Field(default_factory=lambda: Lifecycle(min_duration_s=2.0, cooldown_s=10.0))
    source: FireSmokeSource = Field(
        default="classic", description="classic cues, a learned detector's detections, or the higher of both."
    )
    learned: LearnedFireSmokeConfig | None = Field(
        default=None, description="Settings of the learned source (defaults when source is learned or fused)."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_learned(cls, data: Any) -> Any:
        """``source: learned`` or ``fused`` without ``learned:`` gets the default learned settings."""
        if isinstance(data, dict) and data.get("source") in ("learned", "fused") and data.get("learned") is None:
            return {**data, "learned": {}}
        return data

    @model_validator(mode="after")
    def _learned_only_when_used(self) -> FireSmokeConfig:
        if self.source == "classic" and self.learned is not None:
            raise ValueError(
                "learned settings are given but source is 'classic', which ignores them: set source to "
                "'learned' or 'fused', or remove learned"
            )
        return self
