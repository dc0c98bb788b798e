"""PyTorch runner for the same YOLOX-style ONNX detectors, on CPU or CUDA, usable without Ray.

The ONNX file is converted in memory by :mod:`serve_apps.detector.onnx_to_torch` (no onnx2torch,
no torchvision), so both backends load the same pinned file and report the same ``model_id``.
Loading, class names and input checks come from :class:`DetectorBase`, shared with
:class:`~serve_apps.detector.onnx_runner.OnnxDetector`.

On the device: uint8 letterboxed images go over in one transfer and become NCHW float (BGR
0-255, unnormalised, as the exports expect) there; ``channels_last`` comes for free because an
NHWC buffer permuted to NCHW already has channels-last strides. After the forward pass, the YOLOX
decode, the score product and the score threshold run on the device too, so only the surviving
candidates (a few hundred rows, not ``N x A x (5 + C)`` floats) come back to the host, where the
same greedy class-aware NMS as the onnxruntime path (:func:`batched_nms`) runs per image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contracts.detector import Detection
from serve_apps.detector.onnx_runner import DetectorBase, model_path
from serve_apps.detector.onnx_to_torch import OnnxGraphModule
from serve_apps.detector.postprocess import YOLOX_STRIDES, anchor_grid, batched_nms

Images = np.ndarray | Sequence[np.ndarray] | torch.Tensor


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Turn TF32 off for CUDA convolutions and matmuls inside the block (CUDA allows it for convs by
    default, which rounds fp32 inputs to a 10-bit mantissa); restores the previous settings."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@lru_cache(maxsize=16)
def _anchor_grid_on(input_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    grid, stride = anchor_grid(input_size, input_size)
    return torch.from_numpy(grid.copy()).to(device), torch.from_numpy(stride.copy()).to(device)


def postprocess_torch(
    raw: torch.Tensor,
    input_size: int,
    class_names: Sequence[str],
    *,
    score_threshold: float,
    nms_iou_threshold: float,
    max_detections: int = 100,
) -> list[list[Detection]]:
    """:func:`serve_apps.detector.postprocess.postprocess` for a tensor on any device.

    Decode, ``obj * cls`` scores, best class and the score threshold run where ``raw`` lives (in
    float32, whatever ``raw``'s dtype), in the same float32 arithmetic as the numpy version; the
    candidates then come to the host in one copy and go through the same :func:`batched_nms`.
    """
    if raw.dim() != 3 or raw.shape[2] < 6:
        raise ValueError(f"raw YOLOX output must be (N, A, 5 + C) with C >= 1, got {tuple(raw.shape)}")
    num_classes = raw.shape[2] - 5
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
    grid, stride = _anchor_grid_on(input_size, raw.device)
    if raw.shape[1] != grid.shape[0]:
        raise ValueError(
            f"model output has {raw.shape[1]} anchors but a {input_size}x{input_size} input with strides "
            f"{YOLOX_STRIDES} gives {grid.shape[0]}"
        )
    raw = raw.float()
    xy = (raw[..., 0:2] + grid) * stride
    half_wh = torch.exp(raw[..., 2:4]) * stride * 0.5
    class_scores = raw[..., 4:5] * raw[..., 5:]
    scores, class_ids = class_scores.max(dim=2)
    keep = scores >= score_threshold
    image_ids = keep.nonzero()[:, 0:1].float()  # exact for < 2**24 images
    rows = torch.cat((xy - half_wh, xy + half_wh, scores[..., None], class_ids[..., None].float()), dim=2)[keep]
    candidates = torch.cat((rows, image_ids), dim=1).cpu().numpy()  # (K, 7): box, score, class, image

    results: list[list[Detection]] = []
    for i in range(raw.shape[0]):
        mine = candidates[candidates[:, 6] == i]
        boxes, image_scores, image_classes = mine[:, 0:4], mine[:, 4], mine[:, 5].astype(np.intp)
        chosen = batched_nms(boxes, image_scores, image_classes, nms_iou_threshold, max_detections)
        results.append(
            [
                Detection(
                    class_id=int(image_classes[k]),
                    label=class_names[int(image_classes[k])],
                    score=float(image_scores[k]),
                    box=(float(boxes[k, 0]), float(boxes[k, 1]), float(boxes[k, 2]), float(boxes[k, 3])),
                )
                for k in chosen
            ]
        )
    return results


class TorchDetector(DetectorBase):
    """A YOLOX-style ONNX detector run by PyTorch, same interface as :class:`OnnxDetector`.

    Args:
        model_path: The ``.onnx`` file.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        half: Run in float16; defaults to ``True`` on CUDA and ``False`` on CPU.
        channels_last: Keep activations NHWC in memory (faster convolutions on CUDA).
        compile: Wrap the module in ``torch.compile`` (after the load-time batching check).
        compile_mode: ``torch.compile``'s ``mode``, e.g. ``"max-autotune"`` (inductor only).
        compile_backend: ``torch.compile``'s ``backend``: ``"inductor"`` generates kernels (the point on
            a GPU); ``"aot_eager"`` traces the same graph without code generation, seconds instead of
            tens of seconds on a CPU, to check the graph compiles whole.
        score_threshold, nms_iou_threshold, expected_sha256, class_names, input_size,
        max_detections, verify_batching: As for :class:`OnnxDetector`. The converted graph has
            no fixed spatial size, so any multiple of 32 runs.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        device: str | torch.device = "cpu",
        half: bool | None = None,
        channels_last: bool = True,
        compile: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
        score_threshold: float = 0.3,
        nms_iou_threshold: float = 0.45,
        expected_sha256: str | None = None,
        class_names: Sequence[str] | None = None,
        input_size: int | None = None,
        max_detections: int = 100,
        verify_batching: bool = True,
    ) -> None:
        model = self._load_model(
            model_path,
            score_threshold=score_threshold,
            nms_iou_threshold=nms_iou_threshold,
            expected_sha256=expected_sha256,
            class_names=class_names,
            input_size=input_size,
            max_detections=max_detections,
        )
        self._device = torch.device(device)
        self._half = self._device.type == "cuda" if half is None else bool(half)
        self._channels_last = channels_last
        module = OnnxGraphModule(model, batch_dynamic=True).eval().to(self._device)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self._module = module
        self._forward: Any = module
        self._dtype = torch.float32
        if verify_batching:
            # A property of the graph, checked in strict fp32: fp16 or TF32 rounding differs between
            # batch sizes (other kernels) by more than a fixed bound on insensitive anchors.
            with strict_fp32():
                self._verify_batching(tolerance=1e-3)
        if self._half:
            module.half()
            self._dtype = torch.float16
        if compile:
            self._forward = torch.compile(module, mode=compile_mode, backend=compile_backend)
        self._compiled = compile

    # -------------------------------------------------------------------------------- properties

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def module(self) -> OnnxGraphModule:
        """The converted graph (not the compiled wrapper)."""
        return self._module

    # ----------------------------------------------------------------------------------- running

    def to_input(self, images: Images) -> torch.Tensor:
        """Letterboxed uint8 ``(N, S, S, 3)`` (numpy, tensor or a sequence of ``(S, S, 3)``) to the
        model's NCHW input on the device: one host-to-device copy of the uint8 pixels."""
        size = self._input_size
        if isinstance(images, torch.Tensor):
            batch = images if images.dim() == 4 else images.unsqueeze(0)
            if batch.dtype != torch.uint8 or tuple(batch.shape[1:]) != (size, size, 3) or batch.shape[0] == 0:
                raise ValueError(
                    f"images must be uint8 (N, {size}, {size}, 3) (letterboxed for {self.name}), "
                    f"got {batch.dtype} {tuple(images.shape)}"
                )
        else:
            listed = self._as_image_list(images)
            if isinstance(images, np.ndarray) and images.ndim == 4:
                stacked = np.ascontiguousarray(images)
            else:
                stacked = np.stack(listed)
            batch = torch.from_numpy(stacked)
        x = batch.to(self._device, non_blocking=True).permute(0, 3, 1, 2).to(self._dtype)
        return x.contiguous(memory_format=torch.channels_last if self._channels_last else torch.contiguous_format)

    def run_raw_tensor(self, images: Images) -> torch.Tensor:
        """Forward pass only, output left on the device in the model's dtype: ``(N, A, 5 + C)``."""
        with torch.inference_mode():
            return self._forward(self.to_input(images))

    def run_raw(self, images: Images) -> np.ndarray:
        """Forward pass only: raw ``(N, A, 5 + C)`` float32 head output, on the host."""
        with torch.inference_mode():
            return self.run_raw_tensor(images).float().cpu().numpy()

    def infer(self, images: Images) -> list[list[Detection]]:
        """As :meth:`OnnxDetector.infer`; decode and thresholding run on the device."""
        with torch.inference_mode():
            raw = self.run_raw_tensor(images)
            return postprocess_torch(
                raw,
                self._input_size,
                self._class_names,
                score_threshold=self._score_threshold,
                nms_iou_threshold=self._nms_iou_threshold,
                max_detections=self._max_detections,
            )

    def __repr__(self) -> str:
        return (
            f"TorchDetector({self.model_id}, input_size={self._input_size}, classes={self._num_classes}, "
            f"device={self._device}, dtype={self._dtype}, channels_last={self._channels_last}, "
            f"compiled={self._compiled}, score>={self._score_threshold}, iou>{self._nms_iou_threshold})"
        )


def load_torch_detector(models_dir: Path, model_name: str, **kw: Any) -> TorchDetector:
    """Load ``<models_dir>/<model_name>/<model_name>.onnx``; ``kw`` goes to :class:`TorchDetector`."""
    path = model_path(models_dir, model_name)
    if not path.is_file():
        raise FileNotFoundError(f"detector model {model_name!r} not found: {path} does not exist")
    return TorchDetector(path, **kw)
