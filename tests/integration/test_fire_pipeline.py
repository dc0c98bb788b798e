"""A fire clip played as a live camera opens a fire event with its clip in S3; a pedestrian clip opens none.

Real parts: local Ray, the decoder shards, SeaweedFS through the minio SDK, real footage
(fire_closeup.mp4 and street_people_walking.mp4 from ../shared/data, prepared as 1 s GOP H.264).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from cluster.footage import prepare_stream
from cluster.runtime import Runtime
from configs.analytics import FireSmokeConfig
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig, RecorderConfig
from serve_apps.metrics_export import free_port
from tests.conftest import CACHE_DIR
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, clips_dir: Path, models_dir: Path) -> Iterator[Runtime]:
    fire = prepare_stream(clips_dir / "fire_closeup.mp4", CACHE_DIR / "streams", gop_s=1.0)
    street = prepare_stream(clips_dir / "street_people_walking.mp4", CACHE_DIR / "streams", gop_s=1.0)
    watch = FireSmokeConfig()
    cams = [
        CameraConfig(id="cam-fire", url=str(fire), purpose="fire", loop=True, decode_mode="keyframe", fire_smoke=watch),
        CameraConfig(
            id="cam-street", url=str(street), purpose="fire", loop=True, decode_mode="keyframe", fire_smoke=watch
        ),
    ]
    cfg = AppConfig(
        state_dir=tmp_path_factory.mktemp("fire"),
        cluster=ClusterConfig(
            namespace="cctv-fire", num_shards=1, shard_num_cpus=0.5, local_num_cpus=4, serve_http_port=free_port()
        ),
        detector=DetectorConfig(models_dir=models_dir, num_cpus_per_replica=0.25),
        recorder=RecorderConfig(pre_roll_s=2, post_roll_s=2, max_clip_s=20),
        cameras=cams,
    )
    with Runtime(cfg, include_dashboard=False, ray_init_kwargs={"object_store_memory": 256 * 1024**2}) as rt:
        yield rt


def test_fire_camera_opens_a_fire_event_with_a_clip_and_the_street_does_not(runtime: Runtime) -> None:
    store = runtime.store
    assert store is not None
    keys = wait_for(
        lambda: [k for k in store.list_keys("clips/") if k.endswith(".json") and "/cam-fire/" in k],
        120,
        "a cam-fire clip sidecar in S3",
        interval_s=2.0,
    )
    side = store.get_sidecar(keys[0])
    assert side.event_type == "fire" and side.unit == "score" and side.severity == "critical"
    assert hashlib.sha256(store.get_bytes(side.object_key)).hexdigest() == side.sha256
    events = ray.get(runtime.controller.events.remote(0.0))  # type: ignore[union-attr]
    by_camera = {(e.transition.camera_id, e.transition.event_type) for e in events}
    assert ("cam-fire", "fire") in by_camera
    assert not any(cam == "cam-street" for cam, _ in by_camera), by_camera
    # Cameras watched only by frame rules never call the detector.
    assert sum(s.frames_analysed for s in runtime.stats()) == 0
