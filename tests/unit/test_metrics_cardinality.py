"""Label cardinality at city scale: 10,069 cameras add 4 series each and nothing else grows with them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actors import metrics as m
from cluster.controller import CONTROL_REGISTRY, RAY_NODES, count_nodes
from contracts.cameras import CameraState, CameraStatus

CITY_CAMERAS = 10_069
SHARDS = 40
DISTRICTS = 25
SHARD_METRICS = [
    m.PACKETS,
    m.STREAM_BYTES,
    m.FRAMES_DECODED,
    m.FRAMES_SAMPLED,
    m.FRAMES_DROPPED,
    m.FRAMES_STATIC,
    m.FRAMES_ANALYSED,
    m.DETECTIONS,
    m.QUEUE_DEPTH,
    m.QUEUE_CAPACITY,
    m.IN_FLIGHT,
    m.E2E_LATENCY,
    m.DETECT_CALL_LATENCY,
    m.FRAMES_PER_CALL,
    m.EVENTS,
    m.CLIPS,
    m.CAMERAS,
    m.DECODE_ERRORS,
    m.RECONNECTS,
    m.SHARD_START_TIME,
]


def status(i: int, *, sampled: int = 0, dropped: int = 0, state: CameraState = CameraState.STREAMING) -> CameraStatus:
    return CameraStatus(
        camera_id=f"cam-{i:05d}",
        district=f"district-{i % DISTRICTS:02d}",
        shard=f"shard-{i % SHARDS:03d}",
        state=state,
        reason="",
        since_ts=0.0,
        last_packet_ts=999.5,
        packets=0,
        keyframes=0,
        frames_decoded=0,
        frames_sampled=sampled,
        frames_static=0,
        decode_errors=0,
        decoder="cpu",
        frames_dropped=dropped,
        detections_received=0,
        reconnects=0,
        events_opened=0,
        width=None,
        height=None,
        codec=None,
    )


@pytest.fixture
def clean() -> Iterator[None]:
    yield
    for metric in [*SHARD_METRICS, *m.PER_CAMERA_GAUGES]:
        metric.clear()


def cctv_series() -> tuple[int, int]:
    """(series with a camera label, other cctv_ series) in the default registry's exposition."""
    per_camera = other = 0
    for fam in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in fam.samples:
            if not sample.name.startswith("cctv_"):
                continue
            if "camera" in sample.labels:
                per_camera += 1
            else:
                other += 1
    return per_camera, other


def run_city(n_cameras: int) -> list[m.CameraSeries]:
    """What ``n_cameras`` on SHARDS shards export: per-camera gauges and every shard-level series."""
    series = [m.CameraSeries() for _ in range(SHARDS)]
    for now, sampled in ((1000.0, 10), (1001.0, 12)):
        for s, exporter in enumerate(series):
            cams = [status(i, sampled=sampled) for i in range(s, n_cameras, SHARDS)]
            exporter.export(cams, {c.camera_id: 1.0 for c in cams}, now)
    for s in range(SHARDS):
        shard = f"shard-{s:03d}"
        for metric in SHARD_METRICS:
            names = metric._labelnames  # private, but the label names are what this test is about
            extra = {
                "reason": ["queue_full_drop_newest", "queue_full_drop_oldest", "detector_error", "detector_timeout"],
                "label": ["person", "car", "bicycle", "bus", "truck", "motorcycle"],
                "type": ["crowd", "crowd_density", "intrusion", "loitering", "water_level", "fire"],
                "phase": ["opened", "updated", "closed"],
                "state": [st.value for st in CameraState],
            }
            combos: list[dict[str, str]] = [{"shard": shard}]
            for name in names[1:]:
                combos = [{**c, name: v} for c in combos for v in extra[name]]
            for labels in combos:
                child = metric.labels(**labels)
                if hasattr(child, "observe"):
                    child.observe(0.1)
                elif hasattr(child, "inc"):
                    child.inc()
    return series


@pytest.mark.usefixtures("clean")
def test_a_city_of_10069_cameras_exposes_bounded_series() -> None:
    run_city(100)
    small_cam, small_other = cctv_series()
    for metric in [*SHARD_METRICS, *m.PER_CAMERA_GAUGES]:
        metric.clear()

    run_city(CITY_CAMERAS)
    per_camera, other = cctv_series()

    assert small_cam == 4 * 100
    assert per_camera == 4 * CITY_CAMERAS  # up, age, fps, fps target: nothing else per camera
    assert other == small_other  # per-shard series do not grow with cameras
    assert other <= 150 * SHARDS  # every shard-level series of 40 shards, histograms included
    assert per_camera + other < 50_000


@pytest.mark.usefixtures("clean")
def test_camera_series_fps_and_removal() -> None:
    exporter = m.CameraSeries()
    a, b = status(1, sampled=10, dropped=2), status(2, sampled=5, state=CameraState.DOWN)
    exporter.export([a, b], {a.camera_id: 2.0, b.camera_id: 1.0}, now=1000.0)
    labels_a = {"camera": a.camera_id, "district": a.district}
    labels_b = {"camera": b.camera_id, "district": b.district}
    assert REGISTRY.get_sample_value("cctv_camera_up", labels_a) == 1.0
    assert REGISTRY.get_sample_value("cctv_camera_up", labels_b) == 0.0
    assert REGISTRY.get_sample_value("cctv_camera_last_packet_age_seconds", labels_a) == pytest.approx(0.5)
    assert REGISTRY.get_sample_value("cctv_camera_analytics_fps_target", labels_a) == 2.0
    assert REGISTRY.get_sample_value("cctv_camera_analytics_fps", labels_a) is None  # no interval yet

    # 2 s later: a analysed 6 more frames (10 more sampled, 4 more dropped) -> 3 fps; b was removed.
    exporter.export([status(1, sampled=20, dropped=6)], {a.camera_id: 2.0}, now=1002.0)
    assert REGISTRY.get_sample_value("cctv_camera_analytics_fps", labels_a) == pytest.approx(3.0)
    for gauge in ("cctv_camera_up", "cctv_camera_analytics_fps_target"):
        assert REGISTRY.get_sample_value(gauge, labels_b) is None, gauge

    exporter.export([], {}, now=1003.0)
    assert REGISTRY.get_sample_value("cctv_camera_up", labels_a) is None


def test_count_nodes_and_the_controller_registry_holds_only_its_own_metrics() -> None:
    assert count_nodes([{"Alive": True}, {"Alive": False}, {"Alive": True}]) == {"alive": 2, "dead": 1}
    RAY_NODES.labels("alive").set(2)
    text = generate_latest(CONTROL_REGISTRY).decode()
    names = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert "cctv_ray_nodes" in names
    # Nothing of the data plane (spool, shard, detector series) nor process_*/python_* collectors.
    assert all(n.startswith("cctv_ray_") or n.startswith("cctv_controller_") for n in names), names
