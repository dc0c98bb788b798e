"""Accuracy of the water-level reader and the barrier alarm on rendered flood footage.

For each scene of :mod:`benchmarks.accuracy.render_water` (rendered once into ``.cache/water/``), the
clip is decoded the way the product's keyframe ingest mode decodes a camera: non-key packets
are never handed to the decoder (and the decoder skips non-key frames), so the reader sees
one frame a second. Each keyframe goes through :class:`WaterLevelRule` (and so
:class:`WaterLevelEstimator`) with the scene's gauge configuration.

Reported per scene and overall:

* ``mae_cm`` / ``max_err_cm`` / ``p95_err_cm``: the reported (median-filtered) level against
  the true level of that frame; ``raw_mae_cm`` is the single-frame reading's. Every keyframe
  counts, confident or not (a frame with no level yet counts as reading ``bottom_cm``).
* Events at the first threshold (15 cm): true events come from the true level at the same
  keyframes through the same :class:`EventLifecycle` timing; a predicted event matches a true
  one when their open intervals overlap (one to one). Precision and recall over events.
* ``open_delay_s``: from the true upward crossing (at the clip's full frame rate) to the
  predicted event's open; ``true_open_delay_s`` is the same for the true event (min_duration
  plus keyframe sampling), so the difference is what the reader adds.
* ``ms_per_frame``: CPU time of the rule (strip, estimate, lifecycle) per keyframe, median.

Run: ``.venv/bin/python -m benchmarks.accuracy.eval_water [--out DIR] [--scene NAME ...]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from actors.analytics.events import EventLifecycle
from actors.analytics.water import WaterLevelRule, WaterReading
from benchmarks.accuracy.render_water import CACHE_DIR, SCENES, Scene, render_scene, shortened
from configs.analytics import SEVERITY_RANK, WaterGaugeConfig
from contracts.events import EventPhase, EventTransition

REPO = Path(__file__).resolve().parents[2]

MAE_TARGET_CM = 2.0


@dataclass(frozen=True, slots=True)
class Interval:
    """An event's life: opened at ``open_ts``, closed at ``close_ts``; peak severity."""

    open_ts: float
    close_ts: float
    started_at: float
    severity: str


def keyframes(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """(ts s, BGR image) of every keyframe, decoding nothing else (the product's keyframe mode)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        codec = stream.codec_context
        codec.skip_frame = "NONKEY"
        tb = stream.time_base
        for packet in c.demux(stream):
            if packet.size == 0 or not packet.is_keyframe:
                continue  # never hand a non-key packet to the decoder
            for frame in codec.decode(packet):
                yield float(frame.pts * tb), frame.to_ndarray(format="bgr24")
        for frame in codec.decode(None):
            yield float(frame.pts * tb), frame.to_ndarray(format="bgr24")


def intervals(transitions: list[EventTransition]) -> list[Interval]:
    """Open intervals of the events in ``transitions`` (an event still open must have been closed)."""
    opened: dict[str, EventTransition] = {}
    peak: dict[str, str] = {}
    out: list[Interval] = []
    for tr in transitions:
        if tr.phase is EventPhase.OPENED:
            opened[tr.event_id] = tr
        if SEVERITY_RANK[tr.severity] > SEVERITY_RANK.get(peak.get(tr.event_id, "info"), 0):
            peak[tr.event_id] = tr.severity
        if tr.phase is EventPhase.CLOSED and tr.event_id in opened:
            o = opened.pop(tr.event_id)
            out.append(Interval(o.ts, tr.ts, o.started_at, peak.get(tr.event_id, tr.severity)))
    return out


def match(pred: list[Interval], true: list[Interval]) -> list[tuple[Interval, Interval]]:
    """One-to-one matches of overlapping intervals, earliest true event first."""
    pairs: list[tuple[Interval, Interval]] = []
    free = list(pred)
    for t in sorted(true, key=lambda iv: iv.open_ts):
        hits = [p for p in free if p.open_ts <= t.close_ts and t.open_ts <= p.close_ts]
        if hits:
            best = min(hits, key=lambda p: abs(p.open_ts - t.open_ts))
            free.remove(best)
            pairs.append((best, t))
    return pairs


def upward_crossings(levels_cm: list[float], fps: float, threshold_cm: float) -> list[float]:
    """Times (s, interpolated between frames) where the true level rises through the threshold."""
    lv = np.asarray(levels_cm, np.float64)
    idx = np.flatnonzero((lv[:-1] < threshold_cm) & (lv[1:] >= threshold_cm))
    frac = (threshold_cm - lv[idx]) / (lv[idx + 1] - lv[idx])
    out = ((idx + frac) / fps).tolist()
    if lv.size and lv[0] >= threshold_cm:
        out.insert(0, 0.0)
    return out


def _crossing_before(crossings: list[float], ts: float) -> float | None:
    before = [c for c in crossings if c <= ts + 1e-9]
    return before[-1] if before else None


def evaluate_scene(scene: Scene, out_dir: Path) -> dict[str, Any]:
    """Render (cached), decode keyframes, run the rule; the scene's metrics."""
    rendered = render_scene(scene, out_dir)
    truth = json.loads(rendered.truth.read_text())
    levels: list[float] = truth["level_cm_by_frame"]
    cfg = WaterGaugeConfig.model_validate(truth["gauge"])
    fps = float(truth["fps"])

    rule = WaterLevelRule(scene.name, cfg)
    true_events = EventLifecycle(scene.name, "water_level", cfg.name, cfg.lifecycle, unit="cm")
    pred_tr: list[EventTransition] = []
    true_tr: list[EventTransition] = []
    readings: list[tuple[float, WaterReading]] = []
    cpu_ms: list[float] = []
    last_ts = 0.0
    for ts, img in keyframes(rendered.video):
        last_ts = ts
        true_cm = levels[min(len(levels) - 1, round(ts * fps))]
        t0 = time.process_time()
        pred_tr += rule.update_frame(ts, img)
        cpu_ms.append((time.process_time() - t0) * 1e3)
        assert rule.last_reading is not None
        readings.append((true_cm, rule.last_reading))
        sev = rule.severity(true_cm)
        true_tr += true_events.update(
            ts, sev is not None, value=true_cm, severity=sev or "warning", threshold=cfg.thresholds_cm[0]
        )
    end_ts = last_ts + 1.0
    pred_tr += rule.close(end_ts)
    true_tr += true_events.close(end_ts)

    truth_cm = np.array([t for t, _ in readings])
    level = np.array([r.level_cm if r.level_cm is not None else cfg.bottom_cm for _, r in readings])
    raw = np.array([r.raw_cm for _, r in readings])
    conf = np.array([r.confidence for _, r in readings])
    err = np.abs(level - truth_cm)
    pred, true = intervals(pred_tr), intervals(true_tr)
    pairs = match(pred, true)
    crossings = upward_crossings(levels, fps, cfg.thresholds_cm[0])
    delays, true_delays, severities = [], [], []
    for p, t in pairs:
        c = _crossing_before(crossings, t.started_at)
        if c is not None:
            delays.append(round(p.open_ts - c, 1))
            true_delays.append(round(t.open_ts - c, 1))
        severities.append(f"{p.severity}/{t.severity}")
    return {
        "frames": len(readings),
        "mae_cm": round(float(err.mean()), 2),
        "max_err_cm": round(float(err.max()), 2),
        "p95_err_cm": round(float(np.percentile(err, 95)), 2),
        "raw_mae_cm": round(float(np.abs(raw - truth_cm).mean()), 2),
        "raw_max_err_cm": round(float(np.abs(raw - truth_cm).max()), 2),
        "bias_cm": round(float((level - truth_cm).mean()), 2),
        "confidence_median": round(float(np.median(conf)), 3),
        "confidence_min": round(float(conf.min()), 3),
        "rejected_frames": int(sum(not r.accepted for _, r in readings)),
        "events_true": len(true),
        "events_pred": len(pred),
        "events_matched": len(pairs),
        "precision": round(len(pairs) / len(pred), 3) if pred else (1.0 if not true else 0.0),
        "recall": round(len(pairs) / len(true), 3) if true else 1.0,
        "open_delay_s": delays,
        "true_open_delay_s": true_delays,
        "severity_pred_true": severities,
        "ms_per_frame": round(float(np.median(cpu_ms)), 3),
        "ms_per_frame_p95": round(float(np.percentile(cpu_ms, 95)), 3),
        "_err": err.tolist(),
    }


def evaluate(
    out_dir: Path | None = None, scenes: list[str] | None = None, duration_s: float | None = None
) -> dict[str, Any]:
    """Render (cached) and evaluate every scene (or ``scenes``); per-scene and overall metrics.

    Args:
        out_dir: Where the rendered clips and truths are cached (default ``.cache/water``).
        scenes: Scene names (default: all of :data:`benchmarks.accuracy.render_water.SCENES`).
        duration_s: Cut every scene to this length (tiny runs); default each scene's own.
    """
    out_dir = CACHE_DIR if out_dir is None else out_dir
    per: dict[str, dict[str, Any]] = {}
    for name in scenes or list(SCENES):
        per[name] = evaluate_scene(shortened(SCENES[name], duration_s), out_dir)
    errs = np.concatenate([np.asarray(m.pop("_err")) for m in per.values()])
    n_pred = sum(m["events_pred"] for m in per.values())
    n_true = sum(m["events_true"] for m in per.values())
    n_match = sum(m["events_matched"] for m in per.values())
    delays = [d - t for m in per.values() for d, t in zip(m["open_delay_s"], m["true_open_delay_s"], strict=True)]
    overall = {
        "frames": int(errs.size),
        "mae_cm": round(float(errs.mean()), 2),
        "max_err_cm": round(float(errs.max()), 2),
        "mae_target_cm": MAE_TARGET_CM,
        "mae_ok": bool(errs.mean() <= MAE_TARGET_CM) and all(m["mae_cm"] <= MAE_TARGET_CM for m in per.values()),
        "precision": round(n_match / n_pred, 3) if n_pred else 1.0,
        "recall": round(n_match / n_true, 3) if n_true else 1.0,
        "extra_open_delay_s_mean": round(float(np.mean(delays)), 1) if delays else math.nan,
        "ms_per_frame_median": round(float(np.median([m["ms_per_frame"] for m in per.values()])), 3),
    }
    return {"mode": "keyframe-only (1 s GOP, 1 frame/s)", "scenes": per, "overall": overall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="Render cache (default .cache/water).")
    ap.add_argument("--scene", action="append", choices=sorted(SCENES))
    ap.add_argument("--duration-s", type=float, default=None, help="cut each scene to this length (tiny runs)")
    args = ap.parse_args(argv)
    print(json.dumps(evaluate(args.out, args.scene, args.duration_s), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
