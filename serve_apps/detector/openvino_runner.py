"""The YOLOX detector on OpenVINO's CPU plugin: the same ONNX file as onnxruntime, another engine.

OpenVINO reads the ONNX graph (after the same batch-dynamic rewrite :class:`OnnxDetector` does) and
compiles it for this CPU. The layout and type change the model needs (uint8 NHWC letterboxed images
to float32 NCHW) is compiled into the graph with OpenVINO's pre-processing, so a batch is one
``np.stack`` of the letterboxed images instead of a Python transpose per image.

OpenVINO is imported only when this backend is asked for (``DetectorConfig.backend: openvino``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from serve_apps.detector.onnx_runner import DetectorBase, ModelLoadError


class OpenVinoDetector(DetectorBase):
    """A YOLOX-style ONNX detector compiled by OpenVINO for the CPU.

    Args:
        model_path: The ``.onnx`` file.
        score_threshold: Minimum ``objectness * class score`` of a kept detection.
        nms_iou_threshold: IoU above which a lower-scored box of the same class is suppressed.
        intra_op_threads: OpenVINO inference threads for one forward pass (``INFERENCE_NUM_THREADS``).
        expected_sha256: Refuse the file unless its SHA-256 (hex) matches.
        class_names: Names of the model's classes; defaults to COCO for 80 classes and ``("person",)`` for 1.
        input_size: Square input side to run at; ``None`` keeps the exported size.
        max_detections: Cap per image after NMS.
        verify_batching: Check at load time that a batch of two equals two single runs.
        performance_hint: OpenVINO's ``PERFORMANCE_HINT``; ``LATENCY`` runs one request on the given threads.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        score_threshold: float = 0.3,
        nms_iou_threshold: float = 0.45,
        intra_op_threads: int = 1,
        expected_sha256: str | None = None,
        class_names: Sequence[str] | None = None,
        input_size: int | None = None,
        max_detections: int = 100,
        verify_batching: bool = True,
        performance_hint: str = "LATENCY",
    ) -> None:
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        model = self._load_model(
            model_path,
            score_threshold=score_threshold,
            nms_iou_threshold=nms_iou_threshold,
            expected_sha256=expected_sha256,
            class_names=class_names,
            input_size=input_size,
            max_detections=max_detections,
        )
        self._make_dynamic(model)
        core = ov.Core()
        try:
            ov_model = core.read_model(model.SerializeToString())
            size = self._input_size
            ov_model.reshape({0: ov.PartialShape([-1, 3, size, size])})
            ppp = PrePostProcessor(ov_model)
            ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
            ppp.input().model().set_layout(ov.Layout("NCHW"))
            ppp.input().preprocess().convert_element_type(ov.Type.f32)
            ov_model = ppp.build()
            self._compiled = core.compile_model(
                ov_model,
                "CPU",
                {
                    "INFERENCE_NUM_THREADS": intra_op_threads,
                    "PERFORMANCE_HINT": performance_hint,
                    "INFERENCE_PRECISION_HINT": "f32",  # never bf16/f16 silently: accuracy is pinned to fp32
                    "NUM_STREAMS": 1,
                },
            )
        except RuntimeError as exc:  # OpenVINO reports unreadable graphs and compile failures this way
            raise ModelLoadError(f"OpenVINO cannot load detector model {self._path}: {exc}") from exc
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(0)
        self._lock = threading.Lock()  # one infer request: one forward pass at a time
        self._threads = intra_op_threads
        if verify_batching:
            self._verify_batching()

    def run_raw(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Forward pass only: raw ``(N, A, 5 + C)`` head output for letterboxed uint8 images."""
        batch = np.ascontiguousarray(np.stack(self._as_image_list(images)))
        with self._lock:
            result = self._request.infer({0: batch})
            return np.array(result[self._output], dtype=np.float32, copy=True)  # the request reuses its buffer

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", openvino threads={self._threads})"
