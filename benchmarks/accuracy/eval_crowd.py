"""Person counts of the detectors against hand-labelled frames (``tests/data/crowd_labels.json``).

For every labelled frame (decoded with ``CAP_PROP_POS_FRAMES`` = ``frame_index``, as it was labelled), each
model (YOLOX-Nano, the one-class person detector; at its exported input size, and as ``<model>@<size>`` at the
larger sizes of :data:`INPUT_SIZE_VARIANTS`) runs through the project's ONNX runner
(:func:`serve_apps.detector.onnx_runner.load_detector`, :meth:`detect_frames`, the runner's default score
threshold) and the persons are counted:

* ``people``: every ``person`` detection;
* ``people_bottom_half``: persons whose foot point (bottom centre of the box) lies in the bottom half of the
  frame, counted by :func:`actors.analytics.zones.count_people_in_zone`. The zone polygon runs from
  ``y = height / 2`` to one pixel past the bottom edge (and past the side edges), because the runner clips boxes
  to the frame and a foot point exactly on the bottom edge would otherwise fall on the polygon's boundary.

Reported per model, per clip and overall: MAE, mean signed error (detector minus label: negative means the
detector under-counts), max absolute error, label and detected totals; and the frames with the largest errors.

The labels were counted by eye (see the file's ``rule``); dense street frames carry about +-3 of label noise.

Run: ``.venv/bin/python -m benchmarks.accuracy.eval_crowd [--models-dir ../shared/models] [--clips-dir
../shared/data/clips] [--vtest .cache/footage/vtest.avi]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actors.analytics.zones import PERSON_LABEL, count_people_in_zone
from cluster.footage import read_frame
from serve_apps.detector.onnx_runner import load_detector

REPO = Path(__file__).resolve().parents[2]

MODELS = ("yolox_nano", "person_lwpd")
# Larger input sizes, measured because the default sizes under-count dense scenes (people 40-120 px tall):
# reported as "<model>@<input size>" next to the defaults.
INPUT_SIZE_VARIANTS: tuple[tuple[str, int], ...] = (("yolox_nano", 640), ("yolox_nano", 800), ("person_lwpd", 640))
VTEST_NAME = "vtest.avi"
TOP_ERRORS = 8
DEFAULT_LABELS = REPO / "tests" / "data" / "crowd_labels.json"
DEFAULT_CLIPS = REPO.parent / "shared" / "data" / "clips"
DEFAULT_MODELS = REPO.parent / "shared" / "models"
DEFAULT_VTEST = REPO / ".cache" / "footage" / VTEST_NAME


def bottom_half_polygon(width: int, height: int) -> list[tuple[float, float]]:
    """The bottom half of a ``width x height`` frame, closed one pixel outside the frame edges."""
    top = height / 2.0
    return [(-1.0, top), (width + 1.0, top), (width + 1.0, height + 1.0), (-1.0, height + 1.0)]


def clip_path(clip: str, clips_dir: Path, vtest: Path) -> Path:
    return vtest if clip == VTEST_NAME else clips_dir / clip


def _error_stats(errors: Sequence[int], labels: Sequence[int], detected: Sequence[int]) -> dict[str, Any]:
    err = np.asarray(errors, dtype=np.float64)
    return {
        "frames": len(errors),
        "mae": round(float(np.abs(err).mean()), 3),
        "mean_signed_error": round(float(err.mean()), 3),
        "max_abs_error": int(np.abs(err).max()),
        "label_total": int(sum(labels)),
        "detected_total": int(sum(detected)),
    }


def _summary(rows: list[dict[str, Any]], label_key: str, det_key: str) -> dict[str, Any]:
    """Error statistics per clip (in label-file order) and over all rows."""
    per_clip: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        per_clip.setdefault(row["clip"], []).append(row)

    def stats(group: list[dict[str, Any]]) -> dict[str, Any]:
        labels = [r[label_key] for r in group]
        detected = [r[det_key] for r in group]
        return _error_stats([d - g for d, g in zip(detected, labels, strict=True)], labels, detected)

    return {"per_clip": {clip: stats(group) for clip, group in per_clip.items()}, "overall": stats(rows)}


def evaluate(labels_path: Path, clips_dir: Path, vtest: Path, models_dir: Path) -> dict[str, Any]:
    """Run both detectors on every labelled frame and compare the person counts with the labels.

    Args:
        labels_path: The label file (``tests/data/crowd_labels.json`` layout).
        clips_dir: Folder holding the clips named in the labels (all but ``vtest.avi``).
        vtest: Path of ``vtest.avi``.
        models_dir: Folder with ``<model>/<model>.onnx``.

    Returns:
        ``{"labels": ..., "models": {name: {"score_threshold", "people", "people_bottom_half",
        "largest_errors", "frames"}}}``; ``people`` and ``people_bottom_half`` hold ``per_clip`` and
        ``overall`` statistics.
    """
    doc = json.loads(Path(labels_path).read_text())
    items = doc["frames"]
    frames: list[np.ndarray] = []
    for item in items:
        frame = read_frame(clip_path(item["clip"], clips_dir, vtest), int(item["frame_index"]))
        h, w = frame.shape[:2]
        if (w, h) != (item["width"], item["height"]):
            raise ValueError(
                f"{item['clip']}#{item['frame_index']}: frame is {w}x{h}, label says {item['width']}x{item['height']}"
            )
        frames.append(frame)

    result: dict[str, Any] = {
        "labels": {"path": str(labels_path), "labeller": doc.get("labeller"), "frames": len(items)},
        "models": {},
    }
    runs: list[tuple[str, str, int | None]] = [(m, m, None) for m in MODELS]
    runs += [(f"{m}@{size}", m, size) for m, size in INPUT_SIZE_VARIANTS]
    for key, model, size in runs:
        detector = load_detector(models_dir, model, input_size=size)
        rows: list[dict[str, Any]] = []
        for item, frame in zip(items, frames, strict=True):
            dets = detector.detect_frames([frame])[0]
            persons = [d for d in dets if d.label == PERSON_LABEL]
            h, w = frame.shape[:2]
            rows.append(
                {
                    "clip": item["clip"],
                    "frame_index": int(item["frame_index"]),
                    "label": int(item["people"]),
                    "detected": len(persons),
                    "label_bottom_half": int(item["people_bottom_half"]),
                    "detected_bottom_half": count_people_in_zone(persons, bottom_half_polygon(w, h)),
                    "uncertain": int(item.get("uncertain", 0)),
                }
            )
        for row in rows:
            row["error"] = row["detected"] - row["label"]
            row["error_bottom_half"] = row["detected_bottom_half"] - row["label_bottom_half"]
        largest = sorted(rows, key=lambda r: (-abs(r["error"]), -abs(r["error_bottom_half"])))[:TOP_ERRORS]
        result["models"][key] = {
            "model_id": detector.model_id,
            "input_size": detector.input_size,
            "score_threshold": detector.score_threshold,
            "people": _summary(rows, "label", "detected"),
            "people_bottom_half": _summary(rows, "label_bottom_half", "detected_bottom_half"),
            "largest_errors": largest,
            "frames": rows,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    p.add_argument("--clips-dir", type=Path, default=DEFAULT_CLIPS)
    p.add_argument("--vtest", type=Path, default=DEFAULT_VTEST)
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--summary", action="store_true", help="leave out the per-frame rows")
    args = p.parse_args(argv)
    result = evaluate(args.labels, args.clips_dir, args.vtest, args.models_dir)
    if args.summary:
        for m in result["models"].values():
            m.pop("frames")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
