"""ONNX Runtime (CPU) runner for YOLOX-style detectors, usable without Ray.

The shipped graphs were exported with batch size 1. Renaming the input's dim 0 to a symbolic
name is not enough to batch them: the head's Reshape nodes carry a literal ``1`` as the leading
element of their shape constants, so a batch of N silently gets mixed up. :func:`make_batch_dynamic`
fixes both in memory (the leading 1 becomes 0, "copy this dim from the input"), and the runner
checks at load time that a batch of two equals two single runs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from contracts.detector import Detection, Letterboxed
from serve_apps.detector.coco import COCO_CLASSES, PERSON_CLASSES
from serve_apps.detector.postprocess import postprocess, unletterbox
from serve_apps.detector.preprocess import letterbox, to_batch

log = logging.getLogger(__name__)

BATCH_DIM_NAME = "batch"
_ORT_LOAD_ERRORS: tuple[type[Exception], ...] = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)


class ModelLoadError(ValueError):
    """A model file exists but cannot be used: wrong hash, not ONNX, unexpected graph."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_batch_dynamic(model: onnx.ModelProto, *, rewrite_reshapes: bool = True) -> int:
    """Make a batch-1 export accept any batch size, in place.

    Sets dim 0 of every graph input and output to the symbolic ``batch``, drops the exported
    intermediate shapes (``value_info``, all batch 1) and, with ``rewrite_reshapes``, rewrites the
    literal leading 1 of every Reshape shape constant (initializer or Constant node) to 0. A shape
    constant that is also read by a non-Reshape node is copied rather than edited.

    Assumes every Reshape whose target shape starts with 1 keeps the batch axis first, which holds
    for YOLOX exports; :class:`OnnxDetector` verifies the result numerically at load time.

    Returns:
        The number of Reshape shape constants rewritten.
    """
    graph = model.graph
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM_NAME
    del graph.value_info[:]
    if not rewrite_reshapes:
        return 0

    initializers = {init.name: init for init in graph.initializer}
    constant_nodes = {
        node.output[0]: node for node in graph.node if node.op_type == "Constant" and len(node.output) == 1
    }
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1

    rewritten = 0
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape_name = node.input[1]
        if shape_name in initializers:
            shape = numpy_helper.to_array(initializers[shape_name])
        elif shape_name in constant_nodes:
            attr = next((a for a in constant_nodes[shape_name].attribute if a.name == "value"), None)
            if attr is None:
                continue
            shape = numpy_helper.to_array(attr.t)
        else:
            continue  # computed at run time from Shape ops: already batch-agnostic
        if shape.ndim != 1 or shape.size == 0 or shape[0] != 1:
            continue
        fixed = shape.copy()
        fixed[0] = 0
        new_name = shape_name
        if readers.get(shape_name, 0) > 1:
            new_name = f"{shape_name}__batch_dynamic_{rewritten}"
            node.input[1] = new_name
        graph.initializer.append(numpy_helper.from_array(fixed, name=new_name))
        if new_name == shape_name:
            if shape_name in initializers:
                graph.initializer.remove(initializers[shape_name])
            else:
                graph.node.remove(constant_nodes[shape_name])
        rewritten += 1
    return rewritten


def _class_names_for(num_classes: int, class_names: Sequence[str] | None, path: Path) -> tuple[str, ...]:
    if class_names is not None:
        names = tuple(class_names)
        if len(names) != num_classes:
            raise ModelLoadError(f"{path}: {len(names)} class names given for a model with {num_classes} classes")
        return names
    if num_classes == len(COCO_CLASSES):
        return COCO_CLASSES
    if num_classes == len(PERSON_CLASSES):
        return PERSON_CLASSES
    raise ModelLoadError(f"{path}: model has {num_classes} classes; pass class_names")


class DetectorBase:
    """What every YOLOX detector runner shares, whatever runs the graph.

    Loading (existence, SHA-256 pin, ONNX validity, input/output shapes, class names), the model's
    identity, input validation and YOLOX post-processing. A subclass builds its engine from the
    parsed model :meth:`_load_model` returns and implements :meth:`run_raw`.
    """

    def _load_model(
        self,
        model_path: Path,
        *,
        score_threshold: float,
        nms_iou_threshold: float,
        expected_sha256: str | None,
        class_names: Sequence[str] | None,
        input_size: int | None,
        max_detections: int,
    ) -> onnx.ModelProto:
        """Check the arguments and the file, set the common attributes, return the parsed model."""
        path = Path(model_path)
        if not 0 < score_threshold < 1:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if not 0 < nms_iou_threshold < 1:
            raise ValueError(f"nms_iou_threshold must be in (0, 1), got {nms_iou_threshold}")
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        if not path.exists():
            raise FileNotFoundError(f"detector model {path} does not exist")
        if not path.is_file():
            raise ModelLoadError(f"detector model {path} is not a regular file")

        data = path.read_bytes()
        digest = sha256_hex(data)
        if expected_sha256 is not None and digest != expected_sha256.strip().lower():
            raise ModelLoadError(
                f"detector model {path} has sha256 {digest}, expected {expected_sha256.strip().lower()}"
            )
        model = self._parse(data, path)
        exported_size, num_classes = self._check_io(model, path)

        self._path = path
        self._sha256 = digest
        self._exported_input_size = exported_size
        self._input_size = exported_size if input_size is None else input_size
        if self._input_size % 32 != 0 or self._input_size <= 0:
            raise ModelLoadError(f"{path}: input size must be a positive multiple of 32, got {self._input_size}")
        self._num_classes = num_classes
        self._class_names = _class_names_for(num_classes, class_names, path)
        self._score_threshold = score_threshold
        self._nms_iou_threshold = nms_iou_threshold
        self._max_detections = max_detections
        return model

    @staticmethod
    def _parse(data: bytes, path: Path) -> onnx.ModelProto:
        try:
            model = onnx.load_model_from_string(data)
            onnx.checker.check_model(model)
        except (DecodeError, onnx.checker.ValidationError) as exc:
            raise ModelLoadError(f"detector model {path} is not a valid ONNX model: {exc}") from exc
        return model

    @staticmethod
    def _check_io(model: onnx.ModelProto, path: Path) -> tuple[int, int]:
        """Return ``(input_size, num_classes)`` read from the graph's declared shapes."""
        graph = model.graph
        initializer_names = {init.name for init in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initializer_names]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ModelLoadError(
                f"{path}: expected one input and one output, got inputs {[i.name for i in inputs]} "
                f"and outputs {[o.name for o in graph.output]}"
            )
        in_dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
        out_dims = [
            d.dim_value if d.HasField("dim_value") else None for d in graph.output[0].type.tensor_type.shape.dim
        ]
        if len(in_dims) != 4 or in_dims[1] != 3 or in_dims[2] is None or in_dims[2] != in_dims[3]:
            raise ModelLoadError(f"{path}: input {inputs[0].name!r} must be N x 3 x S x S, got {in_dims}")
        if len(out_dims) != 3 or out_dims[2] is None or out_dims[2] < 6:
            raise ModelLoadError(f"{path}: output must be N x anchors x (5 + classes), got {out_dims}")
        return int(in_dims[2]), int(out_dims[2]) - 5

    def _make_dynamic(self, model: onnx.ModelProto) -> None:
        """Make the batch dimension dynamic, and the spatial ones too when running at another size."""
        rewritten = make_batch_dynamic(model)
        if self._input_size != self._exported_input_size:
            dims = model.graph.input[0].type.tensor_type.shape.dim
            dims[2].dim_param, dims[3].dim_param = "height", "width"
            out_dims = model.graph.output[0].type.tensor_type.shape.dim
            out_dims[1].ClearField("dim_value")
            out_dims[1].dim_param = "anchors"
        log.debug("%s: rewrote %d Reshape shape constants for dynamic batch", self._path, rewritten)

    def _verify_batching(self, tolerance: float = 1e-3) -> None:
        rng = np.random.default_rng(0)
        size = self._input_size
        images = rng.integers(0, 256, size=(2, size, size, 3), dtype=np.uint8)
        batched = self.run_raw(images)
        singles = np.concatenate([self.run_raw(images[i : i + 1]) for i in range(2)])
        diff = float(np.max(np.abs(batched - singles)))
        if diff > tolerance:
            raise ModelLoadError(
                f"{self._path}: batch of 2 differs from single runs (max |diff| {diff:.3g}); "
                "the graph has a batch-1 assumption this runner does not know how to remove"
            )

    # -------------------------------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        return self._path

    @property
    def name(self) -> str:
        """The model file's stem, e.g. ``yolox_nano``."""
        return self._path.stem

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def version(self) -> str:
        """First 12 hex digits of the file's SHA-256."""
        return self._sha256[:12]

    @property
    def model_id(self) -> str:
        """``<name>@<version>``, what :class:`DetectResult.model` carries."""
        return f"{self.name}@{self.version}"

    @property
    def input_size(self) -> int:
        """Square side the model runs at (the exported size unless another was asked for)."""
        return self._input_size

    @property
    def exported_input_size(self) -> int:
        """Square side the model file declares."""
        return self._exported_input_size

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    @property
    def score_threshold(self) -> float:
        return self._score_threshold

    @property
    def nms_iou_threshold(self) -> float:
        return self._nms_iou_threshold

    # ----------------------------------------------------------------------------------- running

    def _as_image_list(self, images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        if isinstance(images, np.ndarray):
            images_list = [images] if images.ndim == 3 else list(images)
        else:
            images_list = list(images)
        if not images_list:
            raise ValueError("no images to run the detector on")
        expected = (self._input_size, self._input_size, 3)
        for i, img in enumerate(images_list):
            if img.shape != expected or img.dtype != np.uint8:
                raise ValueError(
                    f"image {i} must be uint8 {expected} (letterboxed for {self.name}), got {img.dtype} {img.shape}"
                )
        return images_list

    def run_raw(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Forward pass only: raw ``(N, A, 5 + C)`` head output for letterboxed uint8 images."""
        raise NotImplementedError

    def infer(self, images: np.ndarray | Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect on letterboxed uint8 ``(S, S, 3)`` images (``S = input_size``), any batch size.

        ``images`` is a sequence of images, an ``(N, S, S, 3)`` array or one ``(S, S, 3)`` image.
        Boxes are in letterbox pixels.
        """
        raw = self.run_raw(images)
        return postprocess(
            raw,
            self._input_size,
            self._class_names,
            score_threshold=self._score_threshold,
            nms_iou_threshold=self._nms_iou_threshold,
            max_detections=self._max_detections,
        )

    def detect(self, requests: Sequence[Letterboxed]) -> list[tuple[Detection, ...]]:
        """Detect on letterboxed frames in one batch; boxes in each frame's own pixels."""
        per_image = self.infer([lb.image for lb in requests])
        return [unletterbox(dets, lb) for dets, lb in zip(per_image, requests, strict=True)]

    def detect_frames(self, frames: Sequence[np.ndarray]) -> list[tuple[Detection, ...]]:
        """Letterbox raw BGR frames (any sizes) and detect on them in one batch."""
        return self.detect([letterbox(frame, self._input_size) for frame in frames])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model_id}, input_size={self._input_size}, classes={self._num_classes}, "
            f"score>={self._score_threshold}, iou>{self._nms_iou_threshold})"
        )


class OnnxDetector(DetectorBase):
    """A YOLOX-style ONNX detector on the ONNX Runtime CPU provider.

    Args:
        model_path: The ``.onnx`` file.
        score_threshold: Minimum ``objectness * class score`` of a kept detection.
        nms_iou_threshold: IoU above which a lower-scored box of the same class is suppressed.
        intra_op_threads: ONNX Runtime threads for one forward pass.
        intra_op_spinning: Let those threads busy-wait between operators (ONNX Runtime's default); off
            here because on shared cores the spinning costs more CPU than it saves latency.
        expected_sha256: Refuse the file unless its SHA-256 (hex) matches.
        class_names: Names of the model's classes; defaults to COCO for 80 classes and
            ``("person",)`` for 1.
        input_size: Square input side to run at; ``None`` keeps the exported size. Another
            multiple of 32 makes the spatial dims symbolic (YOLOX is fully convolutional).
        max_detections: Cap per image after NMS.
        verify_batching: Check at load time that a batch of two equals two single runs.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        score_threshold: float = 0.3,
        nms_iou_threshold: float = 0.45,
        intra_op_threads: int = 1,
        intra_op_spinning: bool = False,
        expected_sha256: str | None = None,
        class_names: Sequence[str] | None = None,
        input_size: int | None = None,
        max_detections: int = 100,
        verify_batching: bool = True,
    ) -> None:
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        model = self._load_model(
            model_path,
            score_threshold=score_threshold,
            nms_iou_threshold=nms_iou_threshold,
            expected_sha256=expected_sha256,
            class_names=class_names,
            input_size=input_size,
            max_detections=max_detections,
        )
        path = self._path

        self._make_dynamic(model)

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if intra_op_spinning else "0")
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except _ORT_LOAD_ERRORS as exc:
            raise ModelLoadError(f"onnxruntime cannot load detector model {path}: {exc}") from exc
        self._input_name = self._session.get_inputs()[0].name
        self._output_name = self._session.get_outputs()[0].name
        if verify_batching:
            self._verify_batching()

    def run_raw(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Forward pass only: raw ``(N, A, 5 + C)`` head output for letterboxed uint8 images."""
        batch = to_batch(self._as_image_list(images))
        (out,) = self._session.run([self._output_name], {self._input_name: batch})
        return np.asarray(out)


def model_path(models_dir: Path, model_name: str) -> Path:
    """``<models_dir>/<model_name>/<model_name>.onnx``; rejects names that are not a plain name."""
    if not model_name or model_name in {".", ".."} or "/" in model_name or "\\" in model_name:
        raise ValueError(f"model name must be a plain directory name, got {model_name!r}")
    return Path(models_dir) / model_name / f"{model_name}.onnx"


def load_detector(models_dir: Path, model_name: str, **kw: Any) -> OnnxDetector:
    """Load ``<models_dir>/<model_name>/<model_name>.onnx``; ``kw`` goes to :class:`OnnxDetector`."""
    path = model_path(models_dir, model_name)
    if not path.is_file():
        raise FileNotFoundError(f"detector model {model_name!r} not found: {path} does not exist")
    return OnnxDetector(path, **kw)
