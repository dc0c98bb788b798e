"""Pick the detector backend by name, so a deployment's config chooses onnxruntime or PyTorch.

Both backends load the same ONNX file and share :class:`DetectorBase`'s interface (``name``,
``version``, ``model_id``, ``input_size``, ``num_classes``, ``class_names``, ``run_raw``,
``infer``, ``detect``, ``detect_frames``). PyTorch is imported only when the torch backend is
asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from serve_apps.detector.onnx_runner import DetectorBase, OnnxDetector, load_detector

Backend = Literal["onnxruntime", "torch"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def make_detector(backend: Backend, models_dir: Path, model_name: str, **kw: Any) -> DetectorBase:
    """Load ``<models_dir>/<model_name>/<model_name>.onnx`` with the named backend.

    ``kw`` goes to the backend's constructor: :class:`OnnxDetector` takes ``intra_op_threads``,
    :class:`TorchDetector` ``device``, ``half``, ``channels_last``, ``compile``; both take the
    thresholds, ``expected_sha256``, ``class_names``, ``input_size`` and ``max_detections``.
    """
    if backend == "onnxruntime":
        return load_detector(models_dir, model_name, **kw)
    if backend == "torch":
        from serve_apps.detector.torch_runner import load_torch_detector

        return load_torch_detector(models_dir, model_name, **kw)
    raise ValueError(f"unknown detector backend {backend!r}; expected one of {BACKENDS}")


def detector_from_file(backend: Backend, path: Path, **kw: Any) -> DetectorBase:
    """Load a model file (e.g. one fetched from the model registry) with the named backend."""
    if backend == "onnxruntime":
        return OnnxDetector(path, **kw)
    if backend == "torch":
        from serve_apps.detector.torch_runner import TorchDetector

        return TorchDetector(path, **kw)
    raise ValueError(f"unknown detector backend {backend!r}; expected one of {BACKENDS}")
