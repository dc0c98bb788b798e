"""The OpenVINO backend: the same ONNX file as onnxruntime, the same answers on real frames (CPU, no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from configs.schema import DetectorConfig
from serve_apps.detector.deployment import load_model
from serve_apps.detector.onnx_runner import ModelLoadError, OnnxDetector, load_detector
from serve_apps.detector.openvino_runner import OpenVinoDetector
from tests.support import agreement
from tests.support.agreement import RAW_ALL_ANCHORS_BOUND, assert_detections_agree, assert_raw_agrees, letterboxed

MODEL_NAMES = ("yolox_nano", "person_lwpd")


@pytest.fixture(scope="module")
def real_frames(vtest_path: Path, clips_dir: Path) -> list[np.ndarray]:
    return agreement.real_frames(vtest_path, clips_dir)


@pytest.fixture(scope="module")
def ort_detectors(models_dir: Path) -> dict[str, OnnxDetector]:
    return {name: load_detector(models_dir, name) for name in MODEL_NAMES}


@pytest.fixture(scope="module")
def ov_detectors(models_dir: Path) -> dict[str, OpenVinoDetector]:
    return {name: OpenVinoDetector(models_dir / name / f"{name}.onnx") for name in MODEL_NAMES}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_raw_output_matches_onnxruntime_on_real_frames(
    ort_detectors: dict[str, OnnxDetector],
    ov_detectors: dict[str, OpenVinoDetector],
    real_frames: list[np.ndarray],
    name: str,
) -> None:
    images = letterboxed(real_frames, ort_detectors[name].input_size)
    assert_raw_agrees(ov_detectors[name].run_raw(images), ort_detectors[name].run_raw(images))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_detections_match_onnxruntime_on_real_frames(
    ort_detectors: dict[str, OnnxDetector],
    ov_detectors: dict[str, OpenVinoDetector],
    real_frames: list[np.ndarray],
    name: str,
) -> None:
    assert_detections_agree(
        ov_detectors[name].detect_frames(real_frames), ort_detectors[name].detect_frames(real_frames)
    )


def test_identity_and_batches_of_any_size(
    ort_detectors: dict[str, OnnxDetector], ov_detectors: dict[str, OpenVinoDetector], real_frames: list[np.ndarray]
) -> None:
    o, v = ort_detectors["yolox_nano"], ov_detectors["yolox_nano"]
    assert (v.model_id, v.input_size, v.class_names) == (o.model_id, o.input_size, o.class_names)
    assert repr(v).startswith(f"OpenVinoDetector({o.model_id}")
    images = letterboxed(real_frames, v.input_size)
    whole = v.run_raw(images)
    one_by_one = np.concatenate([v.run_raw(images[i : i + 1]) for i in range(len(images))])
    assert float(np.abs(whole - one_by_one).max()) < 1e-3
    first = v.run_raw(images[:1])
    v.run_raw(images[1:3])
    assert float(np.abs(first - whole[:1]).max()) < 1e-3  # still image 0 after another run: not a reused buffer


def test_other_input_size_runs(models_dir: Path, real_frames: list[np.ndarray]) -> None:
    ov_det = OpenVinoDetector(models_dir / "yolox_nano" / "yolox_nano.onnx", input_size=320)
    ort_det = load_detector(models_dir, "yolox_nano", input_size=320)
    images = letterboxed(real_frames[:2], 320)
    raw = ov_det.run_raw(images)
    assert raw.shape == (2, (320 // 8) ** 2 + (320 // 16) ** 2 + (320 // 32) ** 2, 85)
    assert float(np.max(np.abs(raw - ort_det.run_raw(images)))) < RAW_ALL_ANCHORS_BOUND


def test_wrong_input_is_refused_with_the_shape(ov_detectors: dict[str, OpenVinoDetector]) -> None:
    with pytest.raises(ValueError, match=r"must be uint8 \(192, 192, 3\)"):
        ov_detectors["person_lwpd"].run_raw(np.zeros((1, 416, 416, 3), np.uint8))
    with pytest.raises(ValueError, match="no images"):
        ov_detectors["person_lwpd"].run_raw([])


def test_a_file_that_is_not_onnx_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match=r"broken\.onnx"):
        OpenVinoDetector(bad)


def test_config_chooses_openvino_for_a_deployment(models_dir: Path, tmp_path: Path) -> None:
    cfg = DetectorConfig(model_name="person_lwpd", input_size=192, models_dir=models_dir, backend="openvino")
    loaded = load_model(cfg, None, None, tmp_path)
    assert isinstance(loaded.runner, OpenVinoDetector)


def test_openvino_on_cuda_or_half_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="backend 'openvino' runs on the CPU in fp32: device 'cuda'"):
        DetectorConfig(backend="openvino", device="cuda")
    with pytest.raises(ValueError, match="half: true need backend 'torch'"):
        DetectorConfig(backend="onnxruntime", half=True)
