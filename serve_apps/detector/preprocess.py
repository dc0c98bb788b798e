"""Frame preparation for YOLOX-style detectors: letterbox and batch.

Follows the official YOLOX ``preproc``: scale ``r = min(size / h, size / w)``, resize with
``INTER_LINEAR`` to ``(int(w * r), int(h * r))``, paste at the top-left of a ``size x size`` canvas
filled with 114, so the padding is bottom/right and ``pad_x = pad_y = 0``. Pixels stay BGR 0-255:
the YOLOX exports take unnormalised BGR.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from contracts.detector import Letterboxed


def letterbox(frame: np.ndarray, size: int, pad_value: int = 114) -> Letterboxed:
    """Resize ``frame`` into a ``size x size`` square keeping its aspect ratio.

    Args:
        frame: uint8 BGR ``(H, W, 3)``; grey ``(H, W)`` or ``(H, W, 1)`` is expanded to BGR.
        size: Side of the model input in pixels.
        pad_value: Grey level of the padding (YOLOX trains with 114).

    Returns:
        The padded image with the scale needed to map boxes back to the frame.
    """
    if size <= 0:
        raise ValueError(f"letterbox size must be > 0, got {size}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame must have shape (H, W, 3) with H, W > 0, got {frame.shape}")

    height, width = int(frame.shape[0]), int(frame.shape[1])
    scale = min(size / height, size / width)
    new_w = min(size, max(1, int(width * scale)))
    new_h = min(size, max(1, int(height * scale)))
    if (new_w, new_h) == (width, height):
        resized = frame
    else:
        resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)

    canvas = np.full((size, size, 3), pad_value, dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return Letterboxed(
        image=canvas,
        scale=scale,
        pad_x=0.0,
        pad_y=0.0,
        frame_width=width,
        frame_height=height,
    )


def to_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack letterboxed uint8 ``(S, S, 3)`` images into a float32 ``(N, 3, S, S)`` BGR 0-255 tensor."""
    if len(images) == 0:
        raise ValueError("to_batch needs at least one image")
    first = images[0].shape
    for i, img in enumerate(images):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape != first:
            raise ValueError(f"image {i} must be uint8 (H, W, 3) like image 0 {first}, got {img.dtype} {img.shape}")
    batch = np.empty((len(images), 3, first[0], first[1]), dtype=np.float32)
    for i, img in enumerate(images):
        batch[i] = img.transpose(2, 0, 1)
    return batch
