"""The detector model-runner layer (no Ray): letterbox, YOLOX decoding, NMS, batching, loading."""

from __future__ import annotations

import hashlib
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cluster.footage import read_frame
from contracts.detector import Detection, DetectRequest, DetectResult, Letterboxed
from serve_apps.detector.onnx_runner import (
    ModelLoadError,
    OnnxDetector,
    load_detector,
    make_batch_dynamic,
)
from serve_apps.detector.postprocess import anchor_grid, batched_nms, decode_boxes, postprocess, unletterbox
from serve_apps.detector.preprocess import letterbox, to_batch

MODEL_NAMES = ("yolox_nano", "person_lwpd")


@pytest.fixture(scope="module")
def real_frames(vtest_path: Path, clips_dir: Path) -> list[np.ndarray]:
    """Eight distinct real frames of different sizes and scenes."""
    frames = [read_frame(vtest_path, i) for i in (0, 60, 120, 180)]
    for clip, index in (
        ("street_people_walking.mp4", 5),
        ("town_centre_pedestrians.mp4", 10),
        ("highway_cars.mp4", 20),
        ("crowd_overhead_bw.avi", 30),
    ):
        frames.append(read_frame(clips_dir / clip, index))
    return frames


@pytest.fixture(scope="module")
def detectors(models_dir: Path) -> dict[str, OnnxDetector]:
    return {name: load_detector(models_dir, name) for name in MODEL_NAMES}


@pytest.fixture(scope="module")
def yolox(detectors: dict[str, OnnxDetector]) -> OnnxDetector:
    return detectors["yolox_nano"]


# ------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize(("name", "size", "classes"), [("yolox_nano", 416, 80), ("person_lwpd", 192, 1)])
def test_graph_metadata_is_read_from_the_model(
    models_dir: Path, detectors: dict[str, OnnxDetector], name: str, size: int, classes: int
) -> None:
    det = detectors[name]
    digest = hashlib.sha256((models_dir / name / f"{name}.onnx").read_bytes()).hexdigest()
    assert det.name == name
    assert det.version == digest[:12]
    assert det.model_id == f"{name}@{digest[:12]}"
    assert det.input_size == size
    assert det.num_classes == classes
    assert len(det.class_names) == classes
    assert det.class_names[0] == "person"


def test_matching_expected_sha256_is_accepted(models_dir: Path) -> None:
    path = models_dir / "person_lwpd" / "person_lwpd.onnx"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    det = OnnxDetector(path, expected_sha256=digest.upper())
    assert det.sha256 == digest


def test_wrong_expected_sha256_is_refused_naming_path_and_both_hashes(models_dir: Path) -> None:
    path = models_dir / "person_lwpd" / "person_lwpd.onnx"
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    wrong = "0" * 64
    with pytest.raises(ModelLoadError) as info:
        OnnxDetector(path, expected_sha256=wrong)
    message = str(info.value)
    assert str(path) in message
    assert actual in message
    assert wrong in message


@pytest.mark.parametrize("content", [b"this is not an onnx model\x00\xff\xfe" * 64, b""])
def test_non_onnx_file_is_refused_naming_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=re.escape(str(path))) as info:
        OnnxDetector(path)
    assert "not a valid ONNX model" in str(info.value)


def test_missing_file_raises_file_not_found_naming_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.onnx"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        OnnxDetector(path)
    expected = tmp_path / "nope" / "nope.onnx"
    with pytest.raises(FileNotFoundError, match=re.escape(str(expected))):
        load_detector(tmp_path, "nope")


def test_model_name_must_not_escape_models_dir(models_dir: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("'../yolox_nano'")):
        load_detector(models_dir / "person_lwpd", "../yolox_nano")


def test_class_names_count_must_match_the_model(models_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="2 class names given for a model with 1 classes"):
        load_detector(models_dir, "person_lwpd", class_names=["person", "car"])


# ------------------------------------------------------------------------------------------ batching


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("batch", [4, 8])
def test_batch_of_n_equals_n_single_runs(
    detectors: dict[str, OnnxDetector], real_frames: list[np.ndarray], name: str, batch: int
) -> None:
    det = detectors[name]
    images = [letterbox(f, det.input_size).image for f in real_frames[:batch]]

    batched_raw = det.run_raw(images)
    single_raw = np.concatenate([det.run_raw([img]) for img in images])
    assert batched_raw.shape == single_raw.shape
    assert batched_raw.shape[0] == batch
    assert float(np.max(np.abs(batched_raw - single_raw))) < 1e-4

    batched = det.infer(images)
    singles = [det.infer([img])[0] for img in images]
    assert len(batched) == batch
    assert sum(len(d) for d in batched) > 0, "real frames should give some detections"
    for got, want in zip(batched, singles, strict=True):
        assert [(d.class_id, d.label) for d in got] == [(d.class_id, d.label) for d in want]
        for g, w in zip(got, want, strict=True):
            assert g.score == pytest.approx(w.score, abs=1e-4)
            assert g.box == pytest.approx(w.box, abs=1e-2)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_symbolic_batch_dim_alone_gives_wrong_batched_output(
    models_dir: Path, real_frames: list[np.ndarray], name: str
) -> None:
    """Why the Reshape rewrite exists: renaming dim 0 alone mixes the images of a batch."""
    path = models_dir / name / f"{name}.onnx"

    def session(rewrite: bool) -> tuple[ort.InferenceSession, int]:
        model = onnx.load(str(path))
        rewritten = make_batch_dynamic(model, rewrite_reshapes=rewrite)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the unfixed graph warns about its output shape
        return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"]), rewritten

    size = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[2].dim_value
    batch = to_batch([letterbox(f, size).image for f in real_frames[:4]])

    def batched_vs_single(sess: ort.InferenceSession) -> tuple[np.ndarray, np.ndarray]:
        batched = sess.run(None, {"images": batch})[0]
        single = np.concatenate([sess.run(None, {"images": batch[i : i + 1]})[0] for i in range(4)])
        return batched, single

    unfixed, rewritten = session(rewrite=False)
    assert rewritten == 0
    batched, single = batched_vs_single(unfixed)
    assert batched.size == single.size
    assert batched.shape != single.shape or float(np.max(np.abs(batched - single))) > 1e-2
    assert float(np.max(np.abs(batched.reshape(single.shape) - single))) > 1e-2

    fixed, rewritten = session(rewrite=True)
    assert rewritten > 0
    batched, single = batched_vs_single(fixed)
    assert batched.shape == single.shape
    assert float(np.max(np.abs(batched - single))) < 1e-4


def test_rewrite_handles_constant_nodes_and_shared_shape_constants() -> None:
    """The Reshape shape may live in a Constant node, or an initializer read by another op."""
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([1, 2, -1], dtype=np.int64), name="shared_shape")
    const = helper.make_node(
        "Constant", [], ["const_shape"], value=numpy_helper.from_array(np.array([1, -1], dtype=np.int64))
    )
    graph = helper.make_graph(
        [
            const,
            helper.make_node("Reshape", ["x", "shared_shape"], ["r1"]),
            helper.make_node("Reshape", ["r1", "const_shape"], ["y"]),
            helper.make_node("Identity", ["shared_shape"], ["shape_out"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6]),
            helper.make_tensor_value_info("shape_out", TensorProto.INT64, [3]),
        ],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # onnx 1.23 writes IR 14, newer than onnxruntime 1.31 reads
    assert make_batch_dynamic(model) == 2
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.arange(3 * 6, dtype=np.float32).reshape(3, 2, 3)
    y, shape_out = sess.run(None, {"x": x})
    np.testing.assert_array_equal(y, x.reshape(3, 6))
    np.testing.assert_array_equal(shape_out, [1, 2, -1])  # the other reader still sees the original


# ------------------------------------------------------------------------------------ real footage


def test_vtest_frame_finds_plausible_people(yolox: OnnxDetector, vtest_path: Path) -> None:
    frame = read_frame(vtest_path, 100)
    height, width = frame.shape[:2]
    (dets,) = yolox.detect_frames([frame])
    persons = [d for d in dets if d.label == "person"]
    assert 4 <= len(persons) <= 15, persons
    for d in dets:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, d
        assert yolox.score_threshold <= d.score <= 1.0
        assert d.label == yolox.class_names[d.class_id]
    # a standing pedestrian is taller than wide
    assert np.median([d.height / d.width for d in persons]) > 1.5


def test_dense_street_frame_finds_many_people(yolox: OnnxDetector, clips_dir: Path) -> None:
    frame = read_frame(clips_dir / "street_people_walking.mp4", 5)
    (dets,) = yolox.detect_frames([frame])
    assert sum(d.label == "person" for d in dets) >= 8


def test_person_detector_finds_people_on_the_street(detectors: dict[str, OnnxDetector], clips_dir: Path) -> None:
    frame = read_frame(clips_dir / "street_people_walking.mp4", 5)
    (dets,) = detectors["person_lwpd"].detect_frames([frame])
    assert len(dets) >= 3
    assert {d.label for d in dets} == {"person"}


def test_detect_on_letterboxed_equals_detect_frames(yolox: OnnxDetector, real_frames: list[np.ndarray]) -> None:
    frames = real_frames[:3]
    via_frames = yolox.detect_frames(frames)
    via_letterbox = yolox.detect([letterbox(f, yolox.input_size) for f in frames])
    assert via_frames == via_letterbox


def test_wrongly_sized_images_are_refused(yolox: OnnxDetector, real_frames: list[np.ndarray]) -> None:
    with pytest.raises(ValueError, match=r"\(416, 416, 3\).*\(576, 768, 3\)"):
        yolox.infer([real_frames[0]])
    small = letterbox(real_frames[0], 320)
    with pytest.raises(ValueError, match=r"\(320, 320, 3\)"):
        yolox.detect([small])


def test_other_input_size_runs_batched(models_dir: Path, real_frames: list[np.ndarray]) -> None:
    """YOLOX is fully convolutional: the runner can run it at 320 instead of the exported 416."""
    det = load_detector(models_dir, "yolox_nano", input_size=320)
    assert det.input_size == 320
    images = [letterbox(f, 320).image for f in real_frames[:4]]
    raw = det.run_raw(images)
    assert raw.shape == (4, anchor_grid(320, 320)[0].shape[0], 85)
    single = np.concatenate([det.run_raw([img]) for img in images])
    assert float(np.max(np.abs(raw - single))) < 1e-4
    (dets,) = det.detect_frames([real_frames[4]])
    assert sum(d.label == "person" for d in dets) >= 4


# --------------------------------------------------------------------------------- letterbox mapping


def test_letterbox_keeps_aspect_and_pads_bottom_right() -> None:
    frame = np.full((576, 768, 3), 200, dtype=np.uint8)
    lb = letterbox(frame, 416)
    scale = min(416 / 576, 416 / 768)
    assert lb.scale == pytest.approx(scale)
    assert (lb.pad_x, lb.pad_y) == (0.0, 0.0)
    assert (lb.frame_width, lb.frame_height) == (768, 576)
    content_h = int(576 * scale)
    assert lb.image.shape == (416, 416, 3)
    assert np.all(lb.image[:content_h] == 200)
    assert np.all(lb.image[content_h:] == 114)


def test_letterbox_unletterbox_round_trip_of_a_drawn_box() -> None:
    frame_box = (100, 60, 301, 421)  # x1, y1, x2, y2 (exclusive) in frame pixels
    frame = np.zeros((576, 768, 3), dtype=np.uint8)
    frame[frame_box[1] : frame_box[3], frame_box[0] : frame_box[2]] = 255
    lb = letterbox(frame, 416, pad_value=0)

    ys, xs = np.nonzero(lb.image[..., 0] > 127)
    found = Detection(
        class_id=0,
        label="person",
        score=1.0,
        box=(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
    )
    (mapped,) = unletterbox([found], lb)
    tolerance_px = 1.5 / lb.scale  # one letterbox pixel of resampling each side
    assert mapped.box == pytest.approx(frame_box, abs=tolerance_px)
    assert (mapped.class_id, mapped.label, mapped.score) == (0, "person", 1.0)


def test_unletterbox_inverts_the_scale_and_clips_to_the_frame() -> None:
    lb = Letterboxed(
        image=np.zeros((64, 64, 3), dtype=np.uint8), scale=0.5, pad_x=4.0, pad_y=2.0,
        frame_width=100, frame_height=60,
    )  # fmt: skip
    inside = Detection(0, "person", 0.9, (14.0, 12.0, 34.0, 22.0))
    overflowing = Detection(1, "car", 0.8, (-10.0, 20.0, 60.0, 40.0))
    in_padding = Detection(2, "bus", 0.7, (56.0, 40.0, 63.0, 60.0))  # x >= (56 - 4) / 0.5 = 104 > 100
    mapped = unletterbox([inside, overflowing, in_padding], lb)
    assert [d.label for d in mapped] == ["person", "car"]
    assert mapped[0].box == pytest.approx(((14 - 4) / 0.5, (12 - 2) / 0.5, (34 - 4) / 0.5, (22 - 2) / 0.5))
    assert mapped[1].box == pytest.approx((0.0, (20 - 2) / 0.5, 100.0, 60.0))


def test_letterbox_expands_grey_frames_and_rejects_bad_input() -> None:
    grey = np.full((90, 160), 50, dtype=np.uint8)
    lb = letterbox(grey, 64)
    assert lb.image.shape == (64, 64, 3)
    assert np.all(lb.image[:36] == 50)
    with pytest.raises(ValueError, match="float32"):
        letterbox(grey.astype(np.float32), 64)
    with pytest.raises(ValueError, match=r"\(5, 5, 4\)"):
        letterbox(np.zeros((5, 5, 4), dtype=np.uint8), 64)


def test_to_batch_is_nchw_float_bgr_unnormalised() -> None:
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 255
    batch = to_batch([img, img[::-1].copy()])
    assert batch.dtype == np.float32
    assert batch.shape == (2, 3, 32, 32)
    assert batch.flags.c_contiguous
    assert [float(batch[0, c, 0, 0]) for c in range(3)] == [10.0, 20.0, 255.0]
    with pytest.raises(ValueError, match=r"image 1 .*\(16, 16, 3\)"):
        to_batch([img, np.zeros((16, 16, 3), dtype=np.uint8)])


# ------------------------------------------------------------------------------ decoding and NMS


def test_decode_puts_a_cell_prediction_at_its_grid_position() -> None:
    size = 416
    grid, _ = anchor_grid(size, size)
    cells8 = (size // 8) ** 2
    cells16 = (size // 16) ** 2
    raw = np.zeros((1, grid.shape[0], 6), dtype=np.float32)
    row, col = 7, 11
    k8 = row * (size // 8) + col  # stride-8 cell (col, row)
    raw[0, k8, :4] = (0.5, 0.25, math.log(4.0), math.log(2.0))
    k32 = cells8 + cells16 + 2 * (size // 32) + 3  # stride-32 cell (3, 2)
    raw[0, k32, :4] = (0.0, 0.0, 0.0, 0.0)
    boxes = decode_boxes(raw, size, size)
    cx, cy, w, h = (col + 0.5) * 8, (row + 0.25) * 8, 4 * 8, 2 * 8
    assert boxes[0, k8] == pytest.approx((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    assert boxes[0, k32] == pytest.approx((3 * 32 - 16, 2 * 32 - 16, 3 * 32 + 16, 2 * 32 + 16))
    with pytest.raises(ValueError, match="100 anchors"):
        decode_boxes(raw[:, :100], size, size)


def test_postprocess_scores_are_objectness_times_class() -> None:
    size = 64
    anchors = anchor_grid(size, size)[0].shape[0]
    raw = np.zeros((2, anchors, 5 + 3), dtype=np.float32)
    raw[0, 5, 4], raw[0, 5, 5:] = 0.9, (0.1, 0.2, 0.8)  # class 2 at 0.72
    raw[0, 9, 4], raw[0, 9, 5:] = 0.5, (0.5, 0.0, 0.0)  # 0.25: below threshold
    raw[1, 0, 4], raw[1, 0, 5:] = 0.6, (0.0, 0.9, 0.0)  # class 1 at 0.54
    dets = postprocess(raw, size, ("a", "b", "c"), score_threshold=0.3, nms_iou_threshold=0.45)
    assert [(d.label, round(d.score, 4)) for d in dets[0]] == [("c", 0.72)]
    assert [(d.label, round(d.score, 4)) for d in dets[1]] == [("b", 0.54)]


def test_nms_suppresses_same_class_overlap_and_keeps_other_classes() -> None:
    boxes = np.array(
        [
            [0, 0, 100, 100],  # class 0, best
            [5, 5, 105, 105],  # class 0, IoU ~0.82 with box 0: suppressed
            [2, 2, 102, 102],  # class 2, same place: kept (other class)
            [200, 200, 300, 300],  # class 0, elsewhere: kept
            [0, 0, 100, 40],  # class 0, IoU 0.4 with box 0: kept at 0.45
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32)
    class_ids = np.array([0, 0, 2, 0, 0])
    assert batched_nms(boxes, scores, class_ids, 0.45).tolist() == [0, 2, 3, 4]
    assert batched_nms(boxes, scores, class_ids, 0.35).tolist() == [0, 2, 3]
    assert batched_nms(boxes, scores, class_ids, 0.45, max_detections=2).tolist() == [0, 2]
    assert batched_nms(boxes[:0], scores[:0], class_ids[:0], 0.45).tolist() == []
    # order of the input does not matter, only the scores do
    perm = np.array([4, 2, 0, 3, 1])
    kept = batched_nms(boxes[perm], scores[perm], class_ids[perm], 0.45)
    assert sorted(perm[kept].tolist()) == [0, 2, 3, 4]


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, thr: float, limit: int) -> list[int]:
    """The definition, written plainly: best first, drop same-class boxes with IoU above ``thr``."""

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    keep: list[int] = []
    for i in sorted(range(len(scores)), key=lambda k: -scores[k]):  # sorted() is stable: ties keep input order
        if len(keep) == limit:
            break
        if all(class_ids[k] != class_ids[i] or iou(boxes[k], boxes[i]) <= thr for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(4))
def test_nms_is_the_greedy_definition_on_crowded_random_boxes(seed: int) -> None:
    """Hundreds of overlapping candidates of three classes, as a crowd gives; also the max_detections cut."""
    rng = np.random.default_rng(seed)
    n = 60 + 60 * seed
    xy = rng.uniform(0, 400, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (n, 2))], axis=1)
    scores = rng.uniform(0.3, 1.0, n).astype(np.float32)
    class_ids = rng.integers(0, 3, n)
    for thr, limit in ((0.45, 100), (0.3, 10), (0.65, 1000)):
        kept = batched_nms(boxes, scores, class_ids, thr, max_detections=limit).tolist()
        assert kept == _greedy_nms(boxes, scores, class_ids, thr, limit), (thr, limit)


# ------------------------------------------------------------------------------------------ messages


def test_messages_are_frozen_and_survive_pickling(yolox: OnnxDetector, real_frames: list[np.ndarray]) -> None:
    lb = letterbox(real_frames[0], yolox.input_size)
    request = DetectRequest(camera_id="cam-1", frame_seq=7, capture_ts=1_700_000_000.5, letterboxed=lb)
    (dets,) = yolox.detect([lb])
    result = DetectResult(
        camera_id=request.camera_id,
        frame_seq=request.frame_seq,
        capture_ts=request.capture_ts,
        detections=dets,
        model=yolox.model_id,
        batch_size=1,
        inference_ms=12.5,
        queue_ms=0.5,
    )
    back: Callable[[object], object] = lambda obj: pickle.loads(pickle.dumps(obj))  # noqa: E731
    assert back(result) == result
    req2 = back(request)
    assert isinstance(req2, DetectRequest)
    np.testing.assert_array_equal(req2.letterboxed.image, lb.image)
    assert req2.letterboxed.scale == lb.scale
    with pytest.raises(AttributeError):
        result.batch_size = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"\(10, 12, 3\)"):
        Letterboxed(np.zeros((10, 12, 3), np.uint8), 1.0, 0.0, 0.0, 12, 10)


def test_load_model_runs_at_the_configured_size_and_checks_the_exported_one(models_dir: Path, vtest_path: Path) -> None:
    import tempfile

    import cv2

    from configs.schema import DetectorConfig
    from serve_apps.detector.deployment import load_model
    from serve_apps.detector.onnx_runner import ModelLoadError

    cache = Path(tempfile.gettempdir())
    big = load_model(DetectorConfig(models_dir=models_dir, run_input_size=640), None, None, cache).runner
    assert (big.input_size, big.exported_input_size) == (640, 416)
    cap = cv2.VideoCapture(str(vtest_path))
    ok, frame = cap.read()
    assert ok
    people = [d for d in big.detect([letterbox(frame, 640)])[0] if d.label == "person"]
    assert people and all(0 <= d.box[0] < d.box[2] <= frame.shape[1] for d in people)
    with pytest.raises(ModelLoadError, match="takes 416px input, config says 320"):
        load_model(DetectorConfig(models_dir=models_dir, input_size=320), None, None, cache)
