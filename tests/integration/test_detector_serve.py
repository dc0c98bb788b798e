"""The detector under real Ray Serve, loading models from the registry in real SeaweedFS.

* a model is loaded by name@version from the registry (sha256 checked) and serves batches;
* switching version in place (user_config) drops no request;
* a bad artifact (not ONNX, tampered bytes, wrong input size) is refused and the previous
  version keeps serving;
* a replica killed under load is replaced; callers see errors or retries, never a hang.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import ray
from minio import Minio
from ray import serve

from cluster.models import push_model
from cluster.ray_session import shutdown_ray
from configs.schema import DetectorConfig
from contracts.detector import DetectRequest, DetectResult
from serve_apps.detector.deployment import DETECTOR_DEPLOYMENT, build_detector_app, detector_route
from serve_apps.detector.preprocess import letterbox
from serve_apps.metrics_export import free_port
from storage.access import S3Access
from storage.embedded_s3 import EmbeddedS3
from storage.model_store import ModelStore
from tests.support.wait import wait_for

APP = "detector-yolox_nano"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[S3Access, ModelStore]]:
    state = tmp_path_factory.mktemp("serve-det")
    with EmbeddedS3(state / "s3") as s3:
        access = s3.access("models")
        store = ModelStore(access, cache_dir=state / "cache")
        store.ensure_bucket()
        yolox = models_dir / "yolox_nano" / "yolox_nano.onnx"
        push_model(store, yolox, name="yolox_nano", version="1")
        # v2: the same network re-saved (different bytes, same behaviour) stands for a retrained model.
        v2 = state / "yolox_nano_v2.onnx"
        v2.write_bytes(yolox.read_bytes() + b"")
        import onnx

        m = onnx.load(str(yolox))
        m.doc_string = "retrained"
        onnx.save(m, str(v2))
        push_model(store, v2, name="yolox_nano", version="2")
        # Bad artifacts: not ONNX, and a model of the wrong input size under this name.
        junk = state / "junk.onnx"
        junk.write_bytes(b"\x00not an onnx model" * 100)
        store.push(junk, name="yolox_nano", version="junk", input_size=416, classes=["person"], licence="none")
        store.push(
            models_dir / "person_lwpd" / "person_lwpd.onnx",
            name="yolox_nano",
            version="small",
            input_size=192,
            classes=["person"],
            licence="Apache-2.0",
        )
        push_model(store, yolox, name="yolox_nano", version="tampered")
        client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
        evil = yolox.read_bytes()[:-64] + b"\x00" * 64
        client.put_object("models", "yolox_nano/tampered/yolox_nano.onnx", io.BytesIO(evil), len(evil))
        yield access, store


@pytest.fixture(scope="module")
def served(registry: tuple[S3Access, ModelStore], models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    access, _ = registry
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024**2,
        namespace="cctv-det-test",
    )
    cfg = DetectorConfig(
        model_name="yolox_nano",
        model_version="1",
        models_dir=models_dir,
        max_batch_size=8,
        batch_wait_timeout_s=0.01,
        num_cpus_per_replica=0.5,
        max_queued_requests=200,
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cache = tmp_path_factory.mktemp("replica-cache")
    serve.run(
        build_detector_app(cfg, "cctv-det-test", "127.0.0.1", access, cache), name=APP, route_prefix=detector_route(cfg)
    )
    try:
        yield cfg, access, cache, f"http://127.0.0.1:{port}{detector_route(cfg)}"
    finally:
        serve.shutdown()
        shutdown_ray()


@pytest.fixture(scope="module")
def request_frame(vtest_path: Path) -> DetectRequest:
    cap = cv2.VideoCapture(str(vtest_path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, frame = cap.read()
    assert ok
    return DetectRequest(camera_id="c", frame_seq=1, capture_ts=time.time(), letterboxed=letterbox(frame, 416))


def _handle():
    return serve.get_deployment_handle(DETECTOR_DEPLOYMENT, app_name=APP)


def _model() -> str:
    return _handle().model_status.remote().result(timeout_s=30).model


def _redeploy(served, version: str) -> None:
    cfg, access, cache, _ = served
    app = build_detector_app(cfg, "cctv-det-test", "127.0.0.1", access, cache, model_version=version)
    serve.run(app, name=APP, route_prefix=detector_route(cfg))


def test_model_from_registry_serves_batches(served, request_frame: DetectRequest) -> None:
    h = _handle()
    results: list[DetectResult] = [r.result(timeout_s=60) for r in [h.detect.remote(request_frame) for _ in range(16)]]
    assert all(r.model == "yolox_nano@1" for r in results)
    persons = [sum(d.label == "person" for d in r.detections) for r in results]
    assert len(set(persons)) == 1 and 4 <= persons[0] <= 15
    assert max(r.batch_size for r in results) > 1  # concurrent requests were batched


def test_list_call_equals_single_calls(served, vtest_path: Path) -> None:
    cap = cv2.VideoCapture(str(vtest_path))
    reqs = []
    for k in range(5):
        cap.set(cv2.CAP_PROP_POS_FRAMES, 40 * k)
        ok, frame = cap.read()
        assert ok
        boxed = letterbox(frame, 416)
        reqs.append(DetectRequest(camera_id=f"c{k}", frame_seq=k, capture_ts=float(k), letterboxed=boxed))
    h = _handle()
    listed: list[DetectResult] = h.detect_frames.remote(reqs).result(timeout_s=60)
    singles = [h.detect.remote(r).result(timeout_s=60) for r in reqs]
    assert [r.camera_id for r in listed] == [f"c{k}" for k in range(5)]
    assert {r.batch_size for r in listed} == {5}  # one forward pass for the list
    for a, b in zip(listed, singles, strict=True):
        assert [d.label for d in a.detections] == [d.label for d in b.detections]
        for da, db in zip(a.detections, b.detections, strict=True):
            assert np.allclose(da.box, db.box, atol=0.5) and abs(da.score - db.score) < 1e-3
    assert h.detect_frames.remote([]).result(timeout_s=30) == []


def test_http_multipart_runs_images_together_and_refuses_bad_parts(served, vtest_path: Path) -> None:
    url = served[3]
    cap = cv2.VideoCapture(str(vtest_path))
    jpegs = []
    for _ in range(3):
        ok, frame = cap.read()
        assert ok
        jpegs.append(cv2.imencode(".jpg", frame)[1].tobytes())
    files = [(f"cam-{k}", (f"f{k}.jpg", j, "image/jpeg")) for k, j in enumerate(jpegs)]
    r = httpx.post(url, files=files, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["batch_size"] == 3 and [im["name"] for im in body["images"]] == ["cam-0", "cam-1", "cam-2"]
    single = httpx.post(url, content=jpegs[0], timeout=60).json()
    assert [d["label"] for d in body["images"][0]["detections"]] == [d["label"] for d in single["detections"]]
    bad = httpx.post(url, files=[*files[:1], ("cam-x", ("x.jpg", b"not an image", "image/jpeg"))], timeout=60)
    assert bad.status_code == 400 and "cam-x" in bad.json()["error"]["detail"]
    text = httpx.post(url, data={"note": "hello"}, files=files[:1], timeout=60)
    assert text.status_code == 400 and "note" in text.json()["error"]["detail"]
    torn = httpx.post(
        url, content=b"--xx\r\nContent-Disposition: form-data", headers={"content-type": "multipart/form-data"}
    )
    assert torn.status_code == 400 and "boundary" in torn.json()["error"]["detail"], torn.text


def test_http_detect_endpoint_and_bad_requests(served, vtest_path: Path) -> None:
    url = served[3]
    cap = cv2.VideoCapture(str(vtest_path))
    ok, frame = cap.read()
    assert ok
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
    r = httpx.post(url, content=jpeg, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "yolox_nano@1" and (body["width"], body["height"]) == (768, 576)
    persons = [d for d in body["detections"] if d["label"] == "person"]
    assert persons and all(0 <= d["box"][0] < d["box"][2] <= 768 for d in persons)
    bad = httpx.post(url, content=b"definitely not an image", timeout=30)
    assert bad.status_code == 400 and "not a decodable image" in bad.json()["error"]["detail"]
    assert httpx.post(url, content=b"", timeout=30).status_code == 400
    assert httpx.get(url, timeout=30).status_code == 405


@pytest.mark.parametrize(
    ("version", "reason"),
    [("junk", "not a valid ONNX"), ("tampered", "sha256"), ("small", "192px"), ("404", "not found")],
)
def test_bad_model_is_refused_and_previous_keeps_serving(
    served, request_frame: DetectRequest, version: str, reason: str
) -> None:
    before = _model()
    _redeploy(served, version)
    st = _handle().model_status.remote().result(timeout_s=60)
    assert st.model == before
    assert st.last_error is not None and f"@{version} refused" in st.last_error
    assert reason.lower() in st.last_error.lower(), st.last_error
    assert _handle().detect.remote(request_frame).result(timeout_s=30).model == before


def test_version_switch_in_place_drops_no_request(served, request_frame: DetectRequest) -> None:
    _redeploy(served, "1")
    v1 = _model()
    h = _handle()
    stop_at = time.monotonic() + 8

    def caller() -> list[str]:
        seen = []
        while time.monotonic() < stop_at:
            seen.append(h.detect.remote(request_frame).result(timeout_s=30).model)
        return seen

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(caller) for _ in range(4)]
        time.sleep(1.5)
        _redeploy(served, "2")
        models = [m for f in futures for m in f.result()]  # any failed request would raise here
    v2 = _model()
    assert (v1, v2) == ("yolox_nano@1", "yolox_nano@2")
    assert models[0] == v1 and models[-1] == v2 and set(models) == {v1, v2}


def test_killed_replica_is_replaced_and_callers_do_not_hang(served, request_frame: DetectRequest) -> None:
    h = _handle()
    h.detect.remote(request_frame).result(timeout_s=30)
    replicas = [
        a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"] and APP in a["name"]
    ]
    assert replicas, ray.util.list_named_actors(all_namespaces=True)
    victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
    responses = [h.detect.remote(request_frame) for _ in range(20)]
    ray.kill(victim, no_restart=True)
    t0 = time.monotonic()
    ok = failed = 0
    for r in responses:
        try:
            r.result(timeout_s=60)
            ok += 1
        except (ray.exceptions.RayError, RuntimeError):
            failed += 1
    assert time.monotonic() - t0 < 60, "callers hung on a dead replica"
    assert ok + failed == 20
    wait_for(
        lambda: h.detect.remote(request_frame).result(timeout_s=10).detections,
        90,
        "a replacement replica answering with detections",
        interval_s=1.0,
        not_yet=(ray.exceptions.RayError, RuntimeError, TimeoutError),
    )
