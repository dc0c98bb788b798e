"""A shard's detector worker survives every way a call through the Serve handle can fail.

``DecoderShard._detect_group`` runs on one of ``max_in_flight_per_shard`` worker threads. An exception it does
not catch ends that thread for good, and after as many failures as there are workers the shard stops detecting
while its cameras keep streaming. Serve refuses a call with ``BackPressureError`` when the deployment's queue
is full (a saturated detector, the normal overload case) and with ``DeploymentUnavailableError``: both are
``RayServeException``, not ``RayError``. The handle here is a stand-in that raises what a real one raises; the
shard object is built without Ray (only what ``_detect_group`` reads), so this stays a pure-logic test.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from actors.shard import DecoderShard
from actors.stream import SampledFrame
from configs.schema import ClusterConfig, DetectorConfig


class _RaisingHandle:
    """``handle.detect_frames.remote(reqs).result(timeout_s=...)`` that raises ``exc``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0
        self.detect_frames = self

    def remote(self, _reqs: object) -> _RaisingHandle:
        self.calls += 1
        return self

    def result(self, timeout_s: float) -> object:
        raise self.exc


def _shard(handle: _RaisingHandle) -> DecoderShard:
    det = DetectorConfig()
    shard = DecoderShard.__new__(DecoderShard)
    shard.s = SimpleNamespace(detector=det, purpose_detectors={}, cluster=ClusterConfig())  # type: ignore[assignment]
    shard.shard_id = "shard-test"
    shard._cams = {}
    shard._handles = {det.app_name: handle}
    shard._in_flight_lock = threading.Lock()
    shard._in_flight = 0
    shard._detector_errors = 0
    shard._dropped_by_camera = {}
    shard._stop = threading.Event()
    return shard


def _frames(n: int) -> list[SampledFrame]:
    image = np.zeros((360, 640, 3), np.uint8)
    return [SampledFrame(camera_id=f"cam-{i}", frame_seq=i, capture_ts=1.0 + i, image=image) for i in range(n)]


@pytest.mark.parametrize(
    "exc",
    [
        BackPressureError(num_queued_requests=64, max_queued_requests=64),
        DeploymentUnavailableError(deployment_id="detector"),
        ActorDiedError(),
        RayTaskError("detect_frames", "Traceback ...", ValueError("bad frame")),
        RuntimeError("Handle has already been initialized"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_failed_call_drops_and_counts_its_frames_and_the_worker_goes_on(exc: BaseException) -> None:
    handle = _RaisingHandle(exc)
    shard = _shard(handle)
    frames = _frames(3)
    shard._detect_group(shard.s.detector.app_name, frames)  # must not raise
    shard._detect_group(shard.s.detector.app_name, frames)  # and the next call is made
    assert handle.calls == 2
    assert shard._detector_errors == 2
    assert shard._dropped_by_camera == {f.camera_id: 2 for f in frames}
    assert shard._in_flight == 0
