"""Storage layer against a real SeaweedFS (``weed mini``): clip store, presigned URLs, upload spool.

No fakes: every test talks to a ``weed mini`` child process. The clips are small random binary
files: this tests storage, not video.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from configs.schema import StorageConfig
from storage.access import S3Access, S3AccessError
from storage.clip_store import ClipStore, StorageError, StorageUnavailableError, sha256_file
from storage.embedded_s3 import EmbeddedS3, EmbeddedS3Error, WeedPorts
from storage.records import ClipSidecar, clip_object_key
from storage.spool import FAILED_DIR, FRAME_NAME, UploadSpool
from tests.support.clips import with_alarm_frame
from tests.support.wait import wait_for

logger = logging.getLogger(__name__)

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def make_clip(
    directory: Path,
    event_id: str,
    *,
    camera_id: str = "cam-01",
    size_bytes: int = 64 * 1024,
    at: datetime = T0,
) -> tuple[Path, ClipSidecar]:
    """A random 'clip' file and its sidecar."""
    data = os.urandom(size_bytes)
    path = directory / f"{event_id}.mp4"
    path.write_bytes(data)
    sidecar = ClipSidecar(
        event_id=event_id,
        camera_id=camera_id,
        event_type="crowd",
        started_at=at,
        ended_at=at + timedelta(seconds=3),
        clip_start=at - timedelta(seconds=5),
        clip_end=at + timedelta(seconds=8),
        peak_value=6,
        zone="gate",
        detector="yolox_nano",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=size_bytes,
        duration_s=13.0,
        object_key=clip_object_key(camera_id, event_id, at.date()),
    )
    return path, sidecar


def _item_dirs(spool_dir: Path) -> list[str]:
    return sorted(p.name for p in spool_dir.iterdir() if p.is_dir() and p.name[:1].isdigit())


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    server = EmbeddedS3(tmp_path_factory.mktemp("s3"), start_timeout_s=60)
    server.start()
    logger.info("weed mini answered S3 after %.2f s", server.start_duration_s)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def store(s3_server: EmbeddedS3) -> ClipStore:
    clip_store = ClipStore.for_access(s3_server.access("cctv-test"))
    clip_store.ensure_bucket()
    return clip_store


# ---------------------------------------------------------------------------------------------- server


def test_embedded_s3_reports_endpoint_and_start_time(s3_server: EmbeddedS3) -> None:
    assert s3_server.running
    assert s3_server.endpoint == f"127.0.0.1:{s3_server.ports.s3}"
    assert s3_server.start_duration_s is not None and 0 < s3_server.start_duration_s < 60
    assert s3_server.ports.admin_grpc == s3_server.ports.admin + 10000
    cmd = " ".join(s3_server.command())
    assert s3_server.secret_key not in cmd
    assert f"-s3.port={s3_server.ports.s3}" in cmd
    assert (s3_server.state_dir / "s3-identities.json").stat().st_mode & 0o077 == 0


def test_embedded_s3_port_conflict_fails_with_log_tail(tmp_path: Path) -> None:
    ports = WeedPorts.pick_free()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports.s3))
        blocker.listen()
        server = EmbeddedS3(tmp_path, ports=ports, start_timeout_s=30)
        with pytest.raises(EmbeddedS3Error, match=rf"(?s)exited.*log tail.*{ports.s3}"):
            server.start()
    assert not server.running
    server.stop()  # idempotent after a failed start


def test_weed_ports_must_be_distinct_and_keep_the_admin_offset() -> None:
    with pytest.raises(ValueError, match="distinct"):
        WeedPorts(20001, 20001, 20003, 20004, 20005, 20006, 20007, 20008, 20009, 30009)
    with pytest.raises(ValueError, match="admin_grpc=20010"):
        WeedPorts(20001, 20002, 20003, 20004, 20005, 20006, 20007, 20008, 20009, 20010)


def test_missing_weed_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedS3Error, match="nope/weed"):
        EmbeddedS3(tmp_path, weed_binary=tmp_path / "nope" / "weed")


# ---------------------------------------------------------------------------------------------- clip store


def test_bucket_creation_is_idempotent(s3_server: EmbeddedS3) -> None:
    other = ClipStore.for_access(s3_server.access("cctv-other"))
    assert not other.healthy()  # the probe is a bucket_exists: no bucket yet
    other.ensure_bucket()
    other.ensure_bucket()
    assert other.healthy()


def test_put_clip_stores_sha256_metadata_and_bytes(store: ClipStore, tmp_path: Path) -> None:
    path, sidecar = make_clip(tmp_path, "evt-put-1", size_bytes=300 * 1024)
    ok_before = _metric("cctv_clip_uploads_total", {"result": "ok"})
    store.put_clip(path, sidecar)
    assert _metric("cctv_clip_uploads_total", {"result": "ok"}) == ok_before + 1

    stat = store.stat_clip(sidecar.object_key)
    assert stat.sha256 == sidecar.sha256
    assert stat.metadata == {"sha256": sidecar.sha256}
    assert stat.size_bytes == sidecar.size_bytes
    assert stat.content_type == "video/mp4"
    assert hashlib.sha256(store.get_bytes(sidecar.object_key)).hexdigest() == sidecar.sha256
    assert store.stat_clip(sidecar.sidecar_key).content_type == "application/json"
    assert store.get_sidecar(sidecar.object_key) == sidecar
    assert store.get_sidecar(sidecar.sidecar_key) == sidecar


def test_put_clip_twice_overwrites_instead_of_duplicating(store: ClipStore, tmp_path: Path) -> None:
    path, sidecar = make_clip(tmp_path, "evt-twice", camera_id="cam-twice")
    store.put_clip(path, sidecar)
    store.put_clip(path, sidecar)
    prefix = sidecar.object_key.rsplit("/", 1)[0] + "/"
    assert store.list_keys(prefix) == [sidecar.sidecar_key, sidecar.object_key]
    assert store.list_clips(prefix) == [sidecar.object_key]


def test_put_clip_refuses_a_clip_that_does_not_match_its_sidecar(store: ClipStore, tmp_path: Path) -> None:
    path, sidecar = make_clip(tmp_path, "evt-corrupt", camera_id="cam-corrupt")
    path.write_bytes(os.urandom(sidecar.size_bytes))
    with pytest.raises(ValueError, match="sha256"):
        store.put_clip(path, sidecar)
    assert store.list_keys("clips/2026/05/01/cam-corrupt/") == []


def test_put_clip_stores_the_alarm_frame_before_the_sidecar_that_records_it(store: ClipStore, tmp_path: Path) -> None:
    path, bare = make_clip(tmp_path, "evt-frame", camera_id="cam-frame")
    frame_path, sidecar = with_alarm_frame(tmp_path, bare)
    store.put_clip(path, sidecar, frame_path=frame_path)
    record = sidecar.alarm_frame
    assert record is not None and record.object_key.endswith("/evt-frame.jpg")
    stat = store.stat_clip(record.object_key)
    assert stat.content_type == "image/jpeg" and stat.sha256 == record.sha256 and stat.size_bytes == record.size_bytes
    assert store.get_bytes(record.object_key) == frame_path.read_bytes()
    assert store.get_sidecar(sidecar.object_key).alarm_frame == record


def test_put_clip_refuses_an_alarm_frame_that_differs_from_its_record(store: ClipStore, tmp_path: Path) -> None:
    path, bare = make_clip(tmp_path, "evt-badframe", camera_id="cam-badframe")
    frame_path, sidecar = with_alarm_frame(tmp_path, bare)
    frame_path.write_bytes(frame_path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"alarm frame .* differs from its record for event 'evt-badframe'"):
        store.put_clip(path, sidecar, frame_path=frame_path)
    with pytest.raises(ValueError, match="must come together"):
        store.put_clip(path, sidecar)
    assert store.list_keys("clips/2026/05/01/cam-badframe/") == []


def test_presigned_get_serves_the_bytes(store: ClipStore, tmp_path: Path) -> None:
    path, sidecar = make_clip(tmp_path, "evt-presign")
    store.put_clip(path, sidecar)
    url = store.presigned_get(sidecar.object_key, 300)
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == path.read_bytes()
    assert httpx.get(url.split("?")[0], timeout=10).status_code == 403  # unsigned: refused


def test_wrong_secret_key_is_a_clear_s3_error(s3_server: EmbeddedS3, store: ClipStore, tmp_path: Path) -> None:
    bad = ClipStore(s3_server.endpoint, s3_server.access_key, "not-the-secret-" + "x" * 25, store.bucket)
    with pytest.raises(StorageError) as info:
        bad.ensure_bucket()
    assert info.value.code in {"SignatureDoesNotMatch", "AccessDenied"}
    assert "cctv-test" in str(info.value) and s3_server.endpoint in str(info.value)
    assert "not-the-secret" not in str(info.value)
    path, sidecar = make_clip(tmp_path, "evt-badkey")
    with pytest.raises(StorageError) as put_info:
        bad.put_clip(path, sidecar)
    assert put_info.value.code in {"SignatureDoesNotMatch", "AccessDenied"}
    assert not bad.healthy()


def test_from_config_reads_keys_from_the_named_env_vars(s3_server: EmbeddedS3) -> None:
    cfg = StorageConfig(bucket="cctv-test", access_key_env="T_AK", secret_key_env="T_SK")
    env = {"T_AK": s3_server.access_key, "T_SK": s3_server.secret_key}
    access = S3Access.from_config(cfg, env, endpoint=s3_server.endpoint)
    clip_store = ClipStore.for_access(access)
    assert clip_store.healthy()
    assert s3_server.secret_key not in repr(clip_store) + repr(access)
    with pytest.raises(S3AccessError, match="T_SK") as info:
        S3Access.from_config(cfg, {"T_AK": s3_server.access_key}, endpoint=s3_server.endpoint)
    assert s3_server.access_key not in str(info.value)
    with pytest.raises(S3AccessError, match="endpoint"):
        S3Access.from_config(cfg, env)


# ---------------------------------------------------------------------------------------------- spool


def test_kill_after_the_gateway_stopped_loses_no_object(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """stop() SIGKILLs weed once its S3 gateway has stopped (the filer can idle 10 s more): with no grace
    at all, every object acknowledged before the stop is there, byte for byte, after a restart."""
    state = tmp_path / "s3"
    first = EmbeddedS3(state, start_timeout_s=60).start()
    second: EmbeddedS3 | None = None
    try:
        clip_store = ClipStore.for_access(first.access("cctv-kill"))
        clip_store.ensure_bucket()
        sources = tmp_path / "src"
        sources.mkdir()
        clips = [make_clip(sources, f"evt-kill-{i}", size_bytes=300_000 + i) for i in range(8)]
        for path, sidecar in clips:
            clip_store.put_clip(path, sidecar)
        # Its shutdown reports the gateway only once start-up is complete (the banner); until then it exits in 2 s.
        wait_for(lambda: "Press Ctrl+C" in first.stdout_path.read_text(), 30, "weed mini's ready banner")
        with caplog.at_level(logging.INFO, logger="storage.embedded_s3"):
            first.stop(after_gateway_s=0.0)
        assert "killed 0 s after its S3 gateway stopped" in caplog.text, caplog.text  # the kill path ran
        second = EmbeddedS3(
            state, access_key=first.access_key, secret_key=first.secret_key, ports=first.ports, start_timeout_s=60
        ).start()
        keys = clip_store.list_keys("clips/")
        assert keys == sorted([s.object_key for _, s in clips] + [s.sidecar_key for _, s in clips])
        for path, sidecar in clips:
            assert hashlib.sha256(clip_store.get_bytes(sidecar.object_key)).hexdigest() == sha256_file(path)
            assert clip_store.get_sidecar(sidecar.sidecar_key) == sidecar
    finally:
        if second is not None:
            second.stop()
        first.stop()


def test_spool_keeps_clips_through_an_outage_and_delivers_each_once_in_order(tmp_path: Path) -> None:
    state = tmp_path / "s3"
    first = EmbeddedS3(state, start_timeout_s=60).start()
    uploaded: list[str] = []
    spool: UploadSpool | None = None
    second: EmbeddedS3 | None = None
    try:
        clip_store = ClipStore.for_access(first.access("cctv-outage"))
        clip_store.ensure_bucket()
        first.stop()
        assert not clip_store.healthy()
        assert not Path(f"/tmp/seaweedfs-admin-grpc-{first.ports.admin_grpc}.sock").exists()
        assert not Path(f"/tmp/seaweedfs-s3-grpc-{first.ports.s3_grpc}.sock").exists()
        with pytest.raises(StorageUnavailableError, match=first.endpoint):
            clip_store.list_keys()

        errors_before = _metric("cctv_clip_uploads_total", {"result": "error"})
        spool = UploadSpool(
            tmp_path / "spool",
            clip_store,
            max_bytes=64 * 1024**2,
            retry_initial_s=0.2,
            retry_max_s=1.0,
            on_uploaded=lambda s: uploaded.append(s.event_id),
        )
        spool.start()
        sources = tmp_path / "src"
        sources.mkdir()
        clips = [
            make_clip(
                sources,
                f"evt-out-{i}",
                camera_id="cam-out",
                size_bytes=200_000 + i,
                at=T0 + timedelta(minutes=i),
            )
            for i in range(5)
        ]
        for path, sidecar in clips:
            spool.enqueue(path, sidecar)
        time.sleep(3.0)  # several failed attempts
        assert spool.pending() == 5
        assert _item_dirs(spool.spool_dir) == [f"{i:012d}-evt-out-{i}" for i in range(5)]
        assert spool.pending_bytes() >= sum(s.size_bytes for _, s in clips)
        assert spool.oldest_age_s() >= 2.5
        assert _metric("cctv_spool_items") == 5
        assert _metric("cctv_clip_uploads_total", {"result": "error"}) >= errors_before + 2
        assert uploaded == []

        restart = time.monotonic()
        second = EmbeddedS3(
            state,
            access_key=first.access_key,
            secret_key=first.secret_key,
            ports=first.ports,
            start_timeout_s=60,
        ).start()
        assert spool.wait_drained(60), f"still pending: {spool.pending_event_ids()}"
        logger.info(
            "restart took %.2f s, drained %.2f s after restart",
            second.start_duration_s,
            time.monotonic() - restart,
        )

        assert uploaded == [f"evt-out-{i}" for i in range(5)]
        keys = clip_store.list_keys("clips/")
        assert keys == sorted([s.object_key for _, s in clips] + [s.sidecar_key for _, s in clips])
        for path, sidecar in clips:
            assert clip_store.stat_clip(sidecar.object_key).sha256 == sidecar.sha256
            assert hashlib.sha256(clip_store.get_bytes(sidecar.object_key)).hexdigest() == sha256_file(path)
            assert clip_store.get_sidecar(sidecar.sidecar_key) == sidecar
        assert _item_dirs(spool.spool_dir) == []
        assert spool.pending_bytes() == 0
        assert spool.oldest_age_s() == 0.0
    finally:
        if spool is not None:
            assert spool.stop(10)
        if second is not None:
            second.stop()
        first.stop()


def test_spool_over_budget_drops_oldest_and_counts_it(store: ClipStore, tmp_path: Path) -> None:
    sources = tmp_path / "src"
    sources.mkdir()
    clips = [make_clip(sources, f"evt-drop-{i}", camera_id="cam-drop", size_bytes=10_000) for i in range(5)]
    item_bytes = 10_000 + len(clips[0][1].to_json_bytes())
    spool = UploadSpool(tmp_path / "spool", store, max_bytes=3 * item_bytes + item_bytes // 2)
    dropped_before = _metric("cctv_spool_dropped_total")
    for path, sidecar in clips:
        spool.enqueue(path, sidecar)
    assert _metric("cctv_spool_dropped_total") == dropped_before + 2
    assert spool.pending_event_ids() == ["evt-drop-2", "evt-drop-3", "evt-drop-4"]
    assert spool.pending_bytes() <= spool.max_bytes
    assert _item_dirs(spool.spool_dir) == [f"{i:012d}-evt-drop-{i}" for i in (2, 3, 4)]

    spool.start()
    try:
        assert spool.wait_drained(30)
    finally:
        spool.stop()
    assert store.list_clips("clips/2026/05/01/cam-drop/") == [
        clip_object_key("cam-drop", f"evt-drop-{i}", T0.date()) for i in (2, 3, 4)
    ]


def test_spool_drops_a_single_clip_bigger_than_the_budget(store: ClipStore, tmp_path: Path) -> None:
    path, sidecar = make_clip(tmp_path, "evt-huge", size_bytes=2 * 1024**2)
    spool = UploadSpool(tmp_path / "spool", store, max_bytes=1024**2)
    dropped_before = _metric("cctv_spool_dropped_total")
    spool.enqueue(path, sidecar)
    assert spool.pending() == 0
    assert _metric("cctv_spool_dropped_total") == dropped_before + 1
    assert path.is_file()  # left in place for the caller


def test_spool_resumes_items_left_by_a_previous_run(store: ClipStore, tmp_path: Path) -> None:
    sources = tmp_path / "src"
    sources.mkdir()
    spool_dir = tmp_path / "spool"
    first = UploadSpool(spool_dir, store, max_bytes=64 * 1024**2)  # never started: "crashed"
    clips = [make_clip(sources, f"evt-res-{i}", camera_id="cam-res") for i in range(4)]
    for path, sidecar in clips[:3]:
        first.enqueue(path, sidecar, move=True)
        assert not path.exists()
    half_written = spool_dir / ".000000000099-evt-half.part"
    half_written.mkdir()
    (half_written / "clip.mp4").write_bytes(b"partial")

    uploaded: list[str] = []
    second = UploadSpool(spool_dir, store, max_bytes=64 * 1024**2, on_uploaded=lambda s: uploaded.append(s.event_id))
    assert second.pending_event_ids() == ["evt-res-0", "evt-res-1", "evt-res-2"]
    assert not half_written.exists()
    second.enqueue(*clips[3])
    assert _item_dirs(spool_dir)[-1] == "000000000003-evt-res-3"
    second.start()
    try:
        assert second.wait_drained(30)
    finally:
        second.stop()
    assert uploaded == [f"evt-res-{i}" for i in range(4)]
    assert len(store.list_clips("clips/2026/05/01/cam-res/")) == 4


def test_spool_keeps_the_alarm_frame_with_its_clip_across_a_restart(store: ClipStore, tmp_path: Path) -> None:
    sources = tmp_path / "src"
    sources.mkdir()
    spool_dir = tmp_path / "spool"
    first = UploadSpool(spool_dir, store, max_bytes=64 * 1024**2)  # never started: "crashed"
    path, bare = make_clip(sources, "evt-sf", camera_id="cam-sf")
    frame_path, sidecar = with_alarm_frame(sources, bare)
    frame_bytes = frame_path.read_bytes()
    with pytest.raises(ValueError, match="must come together"):
        first.enqueue(path, sidecar, move=True)  # the record without its frame: refused, nothing taken
    assert path.exists() and _item_dirs(spool_dir) == []
    first.enqueue(path, sidecar, move=True, frame_path=frame_path)
    assert not path.exists() and not frame_path.exists()
    assert (spool_dir / "000000000000-evt-sf" / FRAME_NAME).read_bytes() == frame_bytes

    second = UploadSpool(spool_dir, store, max_bytes=64 * 1024**2)
    assert second.pending_event_ids() == ["evt-sf"]
    assert second.pending_bytes() == sidecar.size_bytes + len(sidecar.to_json_bytes()) + len(frame_bytes)
    second.start()
    try:
        assert second.wait_drained(30)
    finally:
        second.stop()
    assert sidecar.alarm_frame is not None
    assert store.get_bytes(sidecar.alarm_frame.object_key) == frame_bytes
    assert store.get_sidecar(sidecar.object_key) == sidecar
    assert _item_dirs(spool_dir) == []


def test_spool_quarantines_a_corrupted_clip_and_moves_on(store: ClipStore, tmp_path: Path) -> None:
    sources = tmp_path / "src"
    sources.mkdir()
    spool = UploadSpool(tmp_path / "spool", store, max_bytes=64 * 1024**2)
    bad_path, bad = make_clip(sources, "evt-q-bad", camera_id="cam-q")
    good_path, good = make_clip(sources, "evt-q-good", camera_id="cam-q")
    spool.enqueue(bad_path, bad)
    spool.enqueue(good_path, good)
    spooled = spool.spool_dir / "000000000000-evt-q-bad" / "clip.mp4"
    spooled.write_bytes(os.urandom(bad.size_bytes))  # bit rot on disk: hash no longer matches
    spool.start()
    try:
        assert spool.wait_drained(30)
    finally:
        spool.stop()
    assert store.list_clips("clips/2026/05/01/cam-q/") == [good.object_key]
    failed = list((spool.spool_dir / FAILED_DIR).iterdir())
    assert len(failed) == 1 and failed[0].name.startswith("000000000000-evt-q-bad")
