"""The whole slice on real parts: local Ray, Serve detector, SeaweedFS, real footage, Prometheus.

One runtime runs three cameras for the module:
* ``cam-vtest``: vtest.avi (H.264, 1 s GOP) looped live, with a crowd zone the footage crosses;
* ``cam-unreachable``: an RTSP URL nobody answers;
* ``cam-notvideo``: a file that is not video.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from cluster.footage import prepare_stream
from cluster.runtime import Runtime
from configs.schema import (
    AppConfig,
    CameraConfig,
    ClusterConfig,
    DetectorConfig,
    IngestConfig,
    RecorderConfig,
    ZoneConfig,
)
from contracts.cameras import CameraState
from storage.records import ClipSidecar
from tests.support.prometheus import PrometheusServer
from tests.support.wait import wait_for

PRE_ROLL_S = 3.0
POST_ROLL_S = 3.0
GOP_S = 1.0


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, vtest_path: Path, models_dir: Path) -> Iterator[Runtime]:
    from tests.conftest import CACHE_DIR

    stream = prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=GOP_S)
    state = tmp_path_factory.mktemp("state")
    not_video = state / "not-video.mp4"
    not_video.write_bytes(b"this is not a video file\n" * 100)
    cameras = [
        CameraConfig(
            id="cam-vtest",
            url=str(stream),
            district="seo-gu",
            purpose="crowd",
            analytics_fps=1.0,
            decode_mode="keyframe",
            loop=True,
            zones=[
                # vtest shows 4-9 people; >= 5 holds from ~2 s to ~40 s into the clip.
                ZoneConfig(
                    name="plaza",
                    polygon=[(0, 0), (768, 0), (768, 576), (0, 576)],
                    crowd_threshold_people=5,
                    min_duration_s=1.0,
                    cooldown_s=2.0,
                )
            ],
        ),
        CameraConfig(id="cam-unreachable", url="rtsp://user:s3cret@127.0.0.1:9/stream", district="nam-gu"),
        CameraConfig(id="cam-notvideo", url=str(not_video), district="buk-gu", loop=True),
    ]
    cfg = AppConfig(
        state_dir=state,
        cluster=ClusterConfig(num_shards=2, shard_num_cpus=0.5, serve_http_port=18000, local_num_cpus=4),
        detector=DetectorConfig(models_dir=models_dir, max_batch_size=4, num_cpus_per_replica=0.5),
        recorder=RecorderConfig(pre_roll_s=PRE_ROLL_S, post_roll_s=POST_ROLL_S),
        ingest=IngestConfig(
            open_timeout_s=3.0,
            stall_timeout_s=5.0,
            reconnect_initial_s=0.5,
            reconnect_max_s=2.0,
            max_failures_before_down=2,
        ),
        cameras=cameras,
    )
    rt = Runtime(
        cfg,
        include_dashboard=False,
        ray_init_kwargs={"object_store_memory": 256 * 1024**2},
    )
    with rt:
        yield rt


def _status(rt: Runtime) -> dict[str, object]:
    import ray

    return {s.camera_id: s for s in ray.get(rt.controller.status.remote())}  # type: ignore[union-attr]


def test_bad_cameras_are_down_with_a_reason_while_the_good_one_streams(runtime: Runtime) -> None:
    st = wait_for(
        lambda: (
            (s := _status(runtime))
            and s["cam-unreachable"].state is CameraState.DOWN
            and s["cam-notvideo"].state is CameraState.DOWN
            and s["cam-vtest"].detections_received >= 3
            and s
        ),
        60,
        "cam-unreachable and cam-notvideo down, cam-vtest with 3 detections",
    )
    assert st["cam-vtest"].state is CameraState.STREAMING
    assert st["cam-unreachable"].reason and "s3cret" not in st["cam-unreachable"].reason
    assert st["cam-notvideo"].reason
    assert "not" in st["cam-notvideo"].reason.lower() or "invalid" in st["cam-notvideo"].reason.lower()


def test_crowd_event_produces_a_remuxed_clip_in_s3(runtime: Runtime) -> None:
    store = runtime.store
    assert store is not None

    def sidecars() -> list[str]:
        return [k for k in store.list_keys("clips/") if k.endswith(".json") and "/cam-vtest/" in k]

    keys = wait_for(sidecars, 150, "a crowd event clip and its sidecar in S3", interval_s=2.0)
    assert keys, "no clip reached S3 for cam-vtest"
    side: ClipSidecar = store.get_sidecar(keys[0])
    assert (
        side.camera_id == "cam-vtest" and side.event_type == "crowd" and side.peak_value >= 5 and side.unit == "people"
    )
    day = datetime.fromisoformat(str(side.started_at)).strftime("%Y/%m/%d")
    assert side.object_key == f"clips/{day}/cam-vtest/{side.event_id}.mp4"

    data = store.get_bytes(side.object_key)
    assert hashlib.sha256(data).hexdigest() == side.sha256
    assert store.stat_clip(side.object_key).metadata  # sha256 metadata is checked in test_storage

    clip = runtime.cfg.state_dir / "downloaded.mp4"
    clip.write_bytes(data)
    with av.open(str(clip)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == "h264"
        frames = list(c.decode(vs))
        first_key = frames[0].key_frame
        span_s = float((frames[-1].pts - frames[0].pts) * vs.time_base) + 0.1
    assert first_key, "clip must start on a keyframe"
    expected_s = (side.ended_at - side.started_at).total_seconds() + PRE_ROLL_S + POST_ROLL_S
    assert abs(span_s - expected_s) <= GOP_S + 0.15, (span_s, expected_s)
    assert abs(side.duration_s - span_s) <= 0.25

    # Its alarm frame: the boxed JPEG of the frame the event opened on, beside the clip, as the sidecar records.
    frame = side.alarm_frame
    assert frame is not None, "the event's alarm frame is not recorded in its sidecar"
    jpeg = store.get_bytes(frame.object_key)
    assert hashlib.sha256(jpeg).hexdigest() == frame.sha256 and len(jpeg) == frame.size_bytes
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (frame.height, frame.width, 3) == (576, 768, 3)
    assert frame.box is not None and side.started_at <= frame.captured_at <= side.ended_at


def test_no_frame_is_decoded_twice_and_sampling_follows_keyframes(runtime: Runtime) -> None:
    s = _status(runtime)["cam-vtest"]
    assert s.keyframes > 10
    # Keyframe mode: the decoder is handed keyframes only, so decoded <= keyframes demuxed.
    assert s.frames_decoded <= s.keyframes
    assert s.frames_sampled <= s.frames_decoded
    assert s.detections_received + s.frames_dropped <= s.frames_sampled
    stats = runtime.stats()
    assert sum(x.frames_analysed for x in stats) >= 10


def test_live_profile_books_cpu_to_the_shards_and_the_replica(runtime: Runtime, tmp_path: Path) -> None:
    """benchmarks.performance.profile_live on this live run: CPU per kind from /proc and a py-spy profile each."""
    import json
    import subprocess
    import sys

    out = tmp_path / "profile.json"
    args = ["--cameras", "1", "--duration-s", "2", "--rate", "50", "--all", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.performance.profile_live", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["cpu_by_kind"]["decoder_shard"]["processes"] == 2, r["cpu_by_kind"]  # num_shards=2 above
    assert r["cpu_by_kind"]["detector_replica"]["processes"] >= 1, r["cpu_by_kind"]
    assert r["cpu_by_kind"]["decoder_shard"]["cores"] > 0, r["cpu_by_kind"]
    for kind in ("decoder_shard", "detector_replica"):
        profile = r["profiles"][kind]
        assert "error" not in profile and profile["samples"] >= 0 and isinstance(profile["self"], list), profile


def test_prometheus_scrapes_frame_counters(runtime: Runtime, tmp_path: Path) -> None:
    assert runtime.endpoints is not None
    sd = runtime.endpoints.prometheus_file_sd
    assert wait_for(lambda: sd.is_file() and sd.stat().st_size > 10, 15, f"file_sd targets written to {sd}")
    prom = PrometheusServer(tmp_path / "prom", sd)
    prom.start()
    try:
        result = wait_for(lambda: prom.query("sum(cctv_frames_decoded_total) > 0"), 40, "decoded frames in a scrape")
        assert result, f"no decoded frames seen by Prometheus; targets: {prom.targets()}"
        up = wait_for(lambda: len(r := prom.query('up{component="shard"} == 1')) == 2 and r, 20, "both shards up")
        assert up, f"both shard targets should be up: {prom.targets()}"
        assert wait_for(lambda: prom.query("sum(cctv_detector_images_total) > 0"), 20, "detector images in a scrape")
        assert prom.query('cctv_camera_up{camera="cam-vtest"} == 1')
        assert prom.query('cctv_camera_up{camera="cam-unreachable"} == 0')
        # Both shards say they route same node first (the default): the alert on frames leaving the node reads it.
        assert len(prom.query("cctv_shard_detector_same_node_first == 1")) == 2
        # Where the time goes: every stage of an analysed frame is timed, and decoding costs something.
        assert prom.query("sum(cctv_decode_seconds_total) > 0")
        stages = wait_for(
            lambda: len(r := prom.query("sum by (stage) (cctv_frame_stage_seconds_count) > 0")) >= 5 and r,
            20,
            "per-stage histograms of at least 5 stages",
        )
        assert {r["metric"]["stage"] for r in stages} >= {"decode", "queue", "preprocess", "detector_call", "rules"}
        # Stage means add up to (at most) the end-to-end mean: the stages are disjoint parts of a frame's life.
        means = prom.query(
            "sum(sum by (stage) (cctv_frame_stage_seconds_sum{stage!='frame_rules'})"
            " / sum by (stage) (cctv_frame_stage_seconds_count{stage!='frame_rules'}))"
            " / (sum(cctv_e2e_latency_seconds_sum) / sum(cctv_e2e_latency_seconds_count))"
        )
        assert means and 0.5 < float(means[0]["value"][1]) <= 1.05, means
        # No credential in any label of any series.
        series = prom.query('{__name__=~"cctv_.*"}')
        assert series and not any("s3cret" in str(r["metric"]) for r in series)
    finally:
        prom.stop()
