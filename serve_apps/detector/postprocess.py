"""YOLOX output decoding, class-aware NMS and the mapping of boxes back to frame pixels.

The YOLOX head emits, per image, ``A`` anchor points (one per grid cell of the stride-8, 16 and
32 feature maps, in that order, row-major) with ``5 + C`` values each: ``cx, cy, w, h`` in grid
units, the objectness and ``C`` class scores (already sigmoid-activated). Decoding:
``xy = (out_xy + grid) * stride``, ``wh = exp(out_wh) * stride``, ``score = obj * cls``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from contracts.detector import Detection, Letterboxed

YOLOX_STRIDES: tuple[int, ...] = (8, 16, 32)


@lru_cache(maxsize=16)
def anchor_grid(input_h: int, input_w: int, strides: tuple[int, ...] = YOLOX_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Grid offsets ``(A, 2)`` as ``(x, y)`` and strides ``(A, 1)`` for a given input size.

    The arrays are cached and read-only.
    """
    grids: list[np.ndarray] = []
    expanded: list[np.ndarray] = []
    for stride in strides:
        h, w = input_h // stride, input_w // stride
        xv, yv = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        grids.append(np.stack((xv, yv), axis=2).reshape(-1, 2))
        expanded.append(np.full((h * w, 1), stride, dtype=np.float32))
    grid = np.concatenate(grids)
    stride_col = np.concatenate(expanded)
    grid.setflags(write=False)
    stride_col.setflags(write=False)
    return grid, stride_col


def decode_boxes(raw: np.ndarray, input_h: int, input_w: int) -> np.ndarray:
    """Decode raw box outputs ``(..., A, >=4)`` to ``(..., A, 4)`` ``x1, y1, x2, y2`` in input pixels."""
    grid, stride = anchor_grid(input_h, input_w)
    if raw.shape[-2] != grid.shape[0]:
        raise ValueError(
            f"model output has {raw.shape[-2]} anchors but a {input_w}x{input_h} input with strides "
            f"{YOLOX_STRIDES} gives {grid.shape[0]}"
        )
    xy = (raw[..., 0:2] + grid) * stride
    half_wh = np.exp(raw[..., 2:4]) * stride * 0.5
    return np.concatenate((xy - half_wh, xy + half_wh), axis=-1)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_detections: int | None = None,
) -> np.ndarray:
    """Greedy class-aware non-maximum suppression.

    A box suppresses only lower-scored boxes of its own class whose IoU with it exceeds
    ``iou_threshold`` (equal scores keep their input order). OpenCV's ``NMSBoxesBatched`` does the greedy
    pass in C++: the live profile found the NumPy loop this replaced at a fifth of a replica's Python time
    (2.3 ms for 150 candidates against 0.1 ms); ``tests/unit/test_detector.py`` holds it to the plain
    greedy definition on random boxes.

    Returns:
        Indices into ``boxes`` of the kept boxes, highest score first, at most ``max_detections``.
    """
    if boxes.shape[0] == 0:
        return np.empty(0, dtype=np.intp)
    xywh = np.empty((boxes.shape[0], 4), dtype=np.float64)
    xywh[:, :2] = boxes[:, :2]
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    # score_threshold -inf: the caller has filtered by score already; top_k would cut candidates, not output
    kept = cv2.dnn.NMSBoxesBatched(
        xywh, scores.astype(np.float32), class_ids.astype(np.int32), float("-inf"), float(iou_threshold)
    )
    keep = np.asarray(kept, dtype=np.intp).reshape(-1)
    return keep if max_detections is None else keep[:max_detections]


def postprocess(
    raw: np.ndarray,
    input_size: int,
    class_names: Sequence[str],
    *,
    score_threshold: float,
    nms_iou_threshold: float,
    max_detections: int = 100,
) -> list[list[Detection]]:
    """Turn raw YOLOX outputs ``(N, A, 5 + C)`` into detections in letterbox pixels.

    Each anchor point votes for its best class (score ``obj * cls``); anchors below
    ``score_threshold`` are dropped, then :func:`batched_nms` runs per image.
    """
    if raw.ndim != 3 or raw.shape[2] < 6:
        raise ValueError(f"raw YOLOX output must be (N, A, 5 + C) with C >= 1, got {raw.shape}")
    num_classes = raw.shape[2] - 5
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
    boxes_all = decode_boxes(raw, input_size, input_size)
    class_scores = raw[..., 4:5] * raw[..., 5:]
    class_ids_all = np.argmax(class_scores, axis=2)
    scores_all = np.take_along_axis(class_scores, class_ids_all[..., None], axis=2)[..., 0]

    results: list[list[Detection]] = []
    for i in range(raw.shape[0]):
        mask = scores_all[i] >= score_threshold
        boxes = boxes_all[i][mask]
        scores = scores_all[i][mask]
        class_ids = class_ids_all[i][mask]
        keep = batched_nms(boxes, scores, class_ids, nms_iou_threshold, max_detections)
        results.append(
            [
                Detection(
                    class_id=int(class_ids[k]),
                    label=class_names[int(class_ids[k])],
                    score=float(scores[k]),
                    box=_box_tuple(boxes[k]),
                )
                for k in keep
            ]
        )
    return results


def unletterbox(dets: Sequence[Detection], lb: Letterboxed) -> tuple[Detection, ...]:
    """Map detections from letterbox pixels to frame pixels, clipped to the frame.

    A box that lies entirely in the padding (zero area once clipped) is dropped.
    """
    if len(dets) == 0:
        return ()
    boxes = np.asarray([d.box for d in dets], dtype=np.float64)
    boxes[:, 0::2] = np.clip((boxes[:, 0::2] - lb.pad_x) / lb.scale, 0.0, lb.frame_width)
    boxes[:, 1::2] = np.clip((boxes[:, 1::2] - lb.pad_y) / lb.scale, 0.0, lb.frame_height)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return tuple(
        Detection(class_id=d.class_id, label=d.label, score=d.score, box=_box_tuple(boxes[k]))
        for k, d in enumerate(dets)
        if valid[k]
    )


def _box_tuple(box: np.ndarray) -> tuple[float, float, float, float]:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
