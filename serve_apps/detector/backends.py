"""Pick the detector backend by name, so a deployment's config chooses onnxruntime, OpenVINO or PyTorch.

All backends load the same ONNX file and share :class:`DetectorBase`'s interface (``name``,
``version``, ``model_id``, ``input_size``, ``num_classes``, ``class_names``, ``run_raw``,
``infer``, ``detect``, ``detect_frames``). OpenVINO and PyTorch are imported only when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from configs.schema import DetectorBackend
from serve_apps.detector.onnx_runner import DetectorBase, OnnxDetector, model_path

Backend = DetectorBackend
BACKENDS: tuple[str, ...] = get_args(DetectorBackend)


def make_detector(backend: Backend, models_dir: Path, model_name: str, **kw: Any) -> DetectorBase:
    """Load ``<models_dir>/<model_name>/<model_name>.onnx`` with the named backend.

    ``kw`` goes to the backend's constructor: :class:`OnnxDetector` takes ``intra_op_threads`` and
    ``intra_op_spinning``, :class:`OpenVinoDetector` ``intra_op_threads``, :class:`TorchDetector` ``device``,
    ``half``, ``channels_last``, ``compile``; all take the thresholds, ``expected_sha256``, ``class_names``,
    ``input_size`` and ``max_detections``.
    """
    path = model_path(models_dir, model_name)
    if not path.is_file():
        raise FileNotFoundError(f"detector model {model_name!r} not found: {path} does not exist")
    return detector_from_file(backend, path, **kw)


def detector_from_file(backend: Backend, path: Path, **kw: Any) -> DetectorBase:
    """Load a model file (e.g. one fetched from the model registry) with the named backend."""
    if backend == "onnxruntime":
        return OnnxDetector(path, **kw)
    if backend == "openvino":
        from serve_apps.detector.openvino_runner import OpenVinoDetector

        return OpenVinoDetector(path, **kw)
    if backend == "torch":
        from serve_apps.detector.torch_runner import TorchDetector

        return TorchDetector(path, **kw)
    raise ValueError(f"unknown detector backend {backend!r}; expected one of {BACKENDS}")
