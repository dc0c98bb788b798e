"""Emergency exports and snapshots of a live camera, through the controller actor (real parts).

Real local Ray, Serve, SeaweedFS and footage (vtest.avi as H.264 with a 1 s GOP, looped live at
its native 10 fps). The controller's methods are called directly over Ray (the HTTP side is the
control API's test). An export of ``now - 4 s .. now + 4 s`` takes its past part from the camera's
pre-roll ring and records the rest live; once uploaded, the presigned URL serves an MP4 that must
cover the window within one GOP (1 s) at each end.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
import ray
from pydantic import ValidationError

from cluster.footage import prepare_stream
from cluster.runtime import Runtime
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig, default_evidence_bucket
from contracts.cameras import CameraState
from contracts.errors import ExportWindowError, UnknownCameraError
from contracts.exports import ExportRequest, ExportTicket
from serve_apps.metrics_export import free_port
from storage.records import ClipSidecar
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(300)

NS = "cctv-export-test"
CAM = "cam-exp"
GOP_S = 1.0
SLACK_S = 0.25  # receive-time jitter of a paced file on a busy 2-core box


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, vtest_path: Path, models_dir: Path) -> Iterator[Runtime]:
    from tests.conftest import CACHE_DIR

    stream = prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=GOP_S)
    cfg = AppConfig(
        state_dir=tmp_path_factory.mktemp("export"),
        cluster=ClusterConfig(
            namespace=NS, num_shards=1, shard_num_cpus=0.5, local_num_cpus=4, serve_http_port=free_port()
        ),
        detector=DetectorConfig(models_dir=models_dir, max_batch_size=4, num_cpus_per_replica=0.5),
        cameras=[CameraConfig(id=CAM, url=str(stream), loop=True, decode_mode="keyframe", district="seo-gu")],
    )
    with Runtime(cfg, include_dashboard=False, ray_init_kwargs={"object_store_memory": 256 * 1024**2}) as rt:

        def status() -> dict:
            return {s.camera_id: s for s in ray.get(rt.controller.status.remote())}  # type: ignore[union-attr]

        wait_for(
            lambda: (c := status().get(CAM)) is not None and c.state is CameraState.STREAMING,
            60,
            f"{CAM} streaming",
            detail=status,
        )
        time.sleep(6.0)  # the pre-roll ring fills (it keeps pre_roll_s + 10 s)
        yield rt


def _request(start: float, end: float, **kw: str) -> ExportRequest:
    fields = {"camera_id": CAM, "requester": "112", "case_number": "GJ-2026-1127", "reason": "assault reported"}
    return ExportRequest(start_ts=start, end_ts=end, **{**fields, **kw})  # type: ignore[arg-type]


def _wait_done(ctl: ray.actor.ActorHandle, export_id: str, timeout_s: float = 40.0) -> list[ExportTicket]:
    seen: list[ExportTicket] = []

    def finished() -> bool:
        t: ExportTicket = ray.get(ctl.export_status.remote(export_id))
        if not seen or seen[-1].state != t.state:
            seen.append(t)
        return t.state in ("done", "failed")

    wait_for(finished, timeout_s, f"export {export_id} done or failed", interval_s=0.3, detail=lambda: seen)
    return seen


def _mp4(url: str) -> tuple[float, int, tuple[int, int]]:
    """(duration s, decoded frames, (w, h)) of the MP4 a presigned URL serves."""
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4", r.text[:200]
    with av.open(io.BytesIO(r.content)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        assert v.duration is not None and v.time_base is not None
        return float(v.duration * v.time_base), frames, (v.codec_context.width, v.codec_context.height)


def test_export_of_live_camera_covers_window_within_one_gop(setup: Runtime) -> None:
    ctl, store = setup.controller, setup.store
    assert ctl is not None and store is not None
    now = time.time()
    start, end = now - 4.0, now + 4.0
    first: ExportTicket = ray.get(ctl.export_clip.remote(_request(start, end)))
    assert first.state == "recording" and first.url is None and first.requested_by == "112 case GJ-2026-1127"
    states = _wait_done(ctl, first.export_id)
    done = states[-1]
    assert done.state == "done", states
    assert states[0].state == "recording"  # queryable while the future part still arrives
    assert done.clip_key == f"exports/{time.strftime('%Y/%m/%d', time.gmtime(start))}/{CAM}/{first.export_id}.mp4"
    assert done.url is not None and "X-Amz-Expires=3600" in done.url

    duration_s, frames, size = _mp4(done.url)
    side = ClipSidecar.from_json_bytes(store.get_bytes(done.clip_key[: -len(".mp4")] + ".json"))
    rec = side.export
    assert rec is not None and side.evidence and side.event_type == "export"
    assert (rec.requester, rec.case_number, rec.reason) == ("112", "GJ-2026-1127", "assault reported")
    assert rec.requested_start.timestamp() == pytest.approx(start) and rec.requested_end.timestamp() == pytest.approx(
        end
    )
    assert not rec.start_clipped and not rec.end_clipped
    cov_start, cov_end = rec.covered_start.timestamp(), rec.covered_end.timestamp()
    print(
        f"export window {end - start:.2f}s: covered {cov_start - start:+.2f}s at the start, "
        f"{cov_end - end:+.2f}s at the end; MP4 {duration_s:.2f}s, {frames} frames"
    )
    # Starts at the keyframe at/before start, ends before the first keyframe at/after end: ±1 GOP.
    assert start - GOP_S - SLACK_S <= cov_start <= start + SLACK_S
    assert end - SLACK_S <= cov_end <= end + GOP_S + SLACK_S
    assert end - start - SLACK_S <= duration_s <= end - start + 2 * GOP_S + SLACK_S
    assert abs(frames - duration_s * 10) <= 1 and size == (768, 576)
    assert side.duration_s == pytest.approx(duration_s, abs=0.01)
    # Evidence: the spool marked it after upload (locked copy with a legal hold in the evidence bucket).
    evidence_bucket = default_evidence_bucket(store.bucket)
    assert store.client.is_object_legal_hold_enabled(evidence_bucket, done.clip_key)


def test_window_older_than_the_ring_is_clipped_and_says_so(setup: Runtime) -> None:
    ctl, store = setup.controller, setup.store
    assert ctl is not None and store is not None
    now = time.time()
    t: ExportTicket = ray.get(ctl.export_clip.remote(_request(now - 120, now - 1, requester="119")))
    done = _wait_done(ctl, t.export_id)[-1]
    assert done.state == "done" and done.url is not None
    rec = store.get_sidecar(done.clip_key or "").export
    assert rec is not None and rec.start_clipped and not rec.end_clipped
    assert rec.covered_start.timestamp() > now - 120 + 60  # the ring holds seconds, not minutes
    duration_s, _, _ = _mp4(done.url)
    assert 3.0 <= duration_s <= 17.0


def test_bad_export_requests_give_clear_errors(setup: Runtime) -> None:
    ctl = setup.controller
    assert ctl is not None
    now = time.time()
    with pytest.raises(UnknownCameraError):
        ray.get(ctl.export_clip.remote(_request(now - 2, now + 2, camera_id="cam-none")))
    with pytest.raises(ValidationError, match="end_ts must be after start_ts"):
        _request(now, now - 1)
    with pytest.raises(ValueError, match="exceeds the maximum"):
        ray.get(ctl.export_clip.remote(_request(now - 3600, now + 1)))
    with pytest.raises(ExportWindowError, match="ahead"):
        ray.get(ctl.export_clip.remote(_request(now + 3000, now + 3100)))
    with pytest.raises(ExportWindowError, match="before the oldest buffered video"):
        ray.get(ctl.export_clip.remote(_request(now - 300, now - 200)))
    with pytest.raises(KeyError):
        ray.get(ctl.export_status.remote("exp-20260101-0123456789ab"))


def test_snapshot_is_a_jpeg_of_the_camera_frame(setup: Runtime) -> None:
    ctl = setup.controller
    assert ctl is not None
    jpeg = ray.get(ctl.snapshot.remote(CAM))
    assert isinstance(jpeg, bytes) and jpeg[:3] == b"\xff\xd8\xff"
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (576, 768, 3) and img.std() > 10  # a real picture, not a blank
    with pytest.raises(UnknownCameraError):
        ray.get(ctl.snapshot.remote("cam-none"))
