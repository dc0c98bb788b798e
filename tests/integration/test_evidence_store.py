"""Evidence store on a real SeaweedFS (``weed mini``) through the minio SDK.

Outage during an upload burst, object-lock retention and legal hold, day manifests checked by the
``cctv evidence`` CLI (as a subprocess), the spool's evidence policy, the access log, lifecycle.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from minio.error import S3Error
from prometheus_client import REGISTRY

from configs.schema import StorageConfig
from storage.access import S3Access
from storage.access_log import AccessEntry, AccessLog
from storage.clip_store import ClipStore
from storage.embedded_s3 import EmbeddedS3
from storage.evidence import EvidenceStore
from storage.manifest import manifest_key
from storage.records import ClipSidecar, ExportRecord, clip_object_key
from storage.spool import UploadSpool
from tests.support.clips import with_alarm_frame

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BASE = datetime.now(UTC).date() - timedelta(days=25)
"""Test days lie within the 30-day clip retention, so a missing clip is "missing", not "expired"."""


def _d(n: int) -> date:
    return BASE + timedelta(days=n)


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def make_clip(
    directory: Path,
    event_id: str,
    day: date,
    *,
    camera_id: str = "cam-ev",
    size_bytes: int = 50_000,
    evidence: bool = False,
    case: str | None = None,
) -> tuple[Path, ClipSidecar]:
    data = os.urandom(size_bytes)
    path = directory / f"{event_id}.mp4"
    path.write_bytes(data)
    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    export = None
    if case is not None:
        export = ExportRecord(
            requester="112",
            case_number=case,
            requested_at=at,
            requested_start=at,
            requested_end=at + timedelta(seconds=10),
            covered_start=at,
            covered_end=at + timedelta(seconds=10),
        )
    sidecar = ClipSidecar(
        event_id=event_id,
        camera_id=camera_id,
        event_type="crowd",
        started_at=at,
        ended_at=at + timedelta(seconds=3),
        clip_start=at,
        clip_end=at + timedelta(seconds=8),
        peak_value=6,
        detector="yolox_nano",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=size_bytes,
        duration_s=8.0,
        object_key=clip_object_key(camera_id, event_id, day),
        export=export,
        evidence=evidence,
    )
    return path, sidecar


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    server = EmbeddedS3(tmp_path_factory.mktemp("s3"), start_timeout_s=60).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def access(s3_server: EmbeddedS3) -> S3Access:
    return s3_server.access("cctv-ev")


@pytest.fixture(scope="module")
def cfg() -> StorageConfig:
    return StorageConfig(bucket="cctv-ev", clip_retention_days=30, evidence_retention_days=7)


@pytest.fixture(scope="module")
def evidence(access: S3Access, cfg: StorageConfig) -> EvidenceStore:
    store = EvidenceStore(access, cfg)
    store.ensure_buckets()
    return store


def _upload(store: ClipStore, directory: Path, day: date, names: list[str], **kw: object) -> list[ClipSidecar]:
    out = []
    for name in names:
        path, sidecar = make_clip(directory, name, day, **kw)  # type: ignore[arg-type]
        store.put_clip(path, sidecar)
        out.append(sidecar)
    return out


# ---------------------------------------------------------------------------------------------- outage


def test_store_stopped_during_an_upload_burst_every_clip_arrives_once(tmp_path: Path) -> None:
    state = tmp_path / "s3"
    first = EmbeddedS3(state, start_timeout_s=60).start()
    second: EmbeddedS3 | None = None
    spool: UploadSpool | None = None
    day = _d(0)
    try:
        access = first.access("cctv-burst")
        ev = EvidenceStore(access, StorageConfig(bucket="cctv-burst"))
        ev.ensure_buckets()
        clip_store = ev.clips
        uploaded: list[str] = []
        lock = threading.Lock()

        def on_uploaded(s: ClipSidecar) -> None:
            with lock:
                uploaded.append(s.event_id)

        spool = UploadSpool(
            tmp_path / "spool",
            clip_store,
            max_bytes=256 * 1024**2,
            retry_initial_s=0.1,
            retry_max_s=0.5,
            on_uploaded=on_uploaded,
            evidence=ev,
        )
        spool.start()
        src = tmp_path / "src"
        src.mkdir()
        clips = [
            make_clip(src, f"evt-burst-{i:02d}", day, size_bytes=300_000 + i, evidence=i in (7, 15), case="C-1")
            for i in range(24)
        ]
        for i, (path, sidecar) in enumerate(clips):
            spool.enqueue(path, sidecar)
            if i == 5:
                first.stop()  # mid-burst: uploads in flight fail, the rest queue up
            time.sleep(0.02)
        time.sleep(1.0)
        assert spool.pending() >= 10, "the outage should have left clips waiting"
        second = EmbeddedS3(
            state, access_key=first.access_key, secret_key=first.secret_key, ports=first.ports, start_timeout_s=60
        ).start()
        assert spool.wait_drained(60), f"still pending: {spool.pending_event_ids()}"

        names = [s.event_id for _, s in clips]
        assert uploaded == names  # each exactly once, in order
        keys = clip_store.list_keys("clips/")
        assert keys == sorted([s.object_key for _, s in clips] + [s.sidecar_key for _, s in clips])
        for path, sidecar in clips:
            sha, size = clip_store.hash_object(sidecar.object_key)
            assert sha == sidecar.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
            assert size == sidecar.size_bytes
            assert clip_store.stat_clip(sidecar.object_key).sha256 == sidecar.sha256
        # The two evidence clips were locked by the spool after upload, with the export's case number.
        locked = ev.locked.list_keys("clips/")
        assert locked == sorted(k for i in (7, 15) for k in (clips[i][1].object_key, clips[i][1].sidecar_key))
        assert {m.case_number for m in ev.evidence_marks(day)} == {"C-1"}
    finally:
        if spool is not None:
            spool.stop(10)
        if second is not None:
            second.stop()
        first.stop()


# ---------------------------------------------------------------------------------------------- locking


def test_locked_evidence_clip_cannot_be_deleted(evidence: EvidenceStore, tmp_path: Path) -> None:
    day = _d(1)
    (sidecar,) = _upload(evidence.clips, tmp_path, day, ["evt-lock"])
    marked_before = _metric("cctv_evidence_marked_total")
    evidence.mark_evidence(sidecar.object_key, case_number="2026-112-0042")
    assert _metric("cctv_evidence_marked_total") == marked_before + 1

    client, bucket = evidence.locked.client, evidence.locked.bucket
    for key in (sidecar.object_key, sidecar.sidecar_key):
        stat = client.stat_object(bucket, key)
        assert stat.version_id
        retention = client.get_object_retention(bucket, key, version_id=stat.version_id)
        assert retention is not None and retention.mode == "GOVERNANCE"
        assert retention.retain_until_date > datetime.now(UTC) + timedelta(days=6)
        assert client.is_object_legal_hold_enabled(bucket, key, version_id=stat.version_id)
    version = client.stat_object(bucket, sidecar.object_key).version_id
    with pytest.raises(S3Error) as info:
        client.remove_object(bucket, sidecar.object_key, version_id=version)
    assert info.value.code == "AccessDenied"
    client.remove_object(bucket, sidecar.object_key)  # only adds a delete marker
    assert evidence.locked.hash_object(sidecar.object_key, version)[0] == sidecar.sha256
    # Marking again (another case) keeps the same locked version and adds a mark record.
    evidence.mark_evidence(sidecar.object_key, case_number="2026-119-0007")
    assert {m.case_number for m in evidence.evidence_marks(day)} == {"2026-112-0042", "2026-119-0007"}


def test_evidence_locks_the_alarm_frame_with_its_clip(evidence: EvidenceStore, tmp_path: Path) -> None:
    day = _d(2)
    path, bare = make_clip(tmp_path, "evt-lock-frame", day)
    frame_path, sidecar = with_alarm_frame(tmp_path, bare)
    evidence.clips.put_clip(path, sidecar, frame_path=frame_path)
    evidence.mark_evidence(sidecar.object_key, case_number="2026-119-0100")

    assert sidecar.alarm_frame is not None
    key = sidecar.alarm_frame.object_key
    client, bucket = evidence.locked.client, evidence.locked.bucket
    stat = client.stat_object(bucket, key)
    retention = client.get_object_retention(bucket, key, version_id=stat.version_id)
    assert retention is not None and retention.mode == "GOVERNANCE"
    assert client.is_object_legal_hold_enabled(bucket, key, version_id=stat.version_id)
    assert evidence.locked.hash_object(key, stat.version_id)[0] == sidecar.alarm_frame.sha256
    (mark,) = [m for m in evidence.evidence_marks(day) if m.case_number == "2026-119-0100"]
    assert mark.frame_version_id == stat.version_id


def test_compliance_mode_is_configurable_and_a_bad_clip_is_refused(
    access: S3Access, evidence: EvidenceStore, tmp_path: Path
) -> None:
    strict = EvidenceStore(access, StorageConfig(bucket="cctv-ev", evidence_lock_mode="COMPLIANCE"))
    day = _d(2)
    good, bad = _upload(strict.clips, tmp_path, day, ["evt-comp", "evt-forged"])
    strict.mark_evidence(good.object_key, case_number="K-1", retain_days=1)
    retention = strict.locked.client.get_object_retention(strict.locked.bucket, good.object_key)
    assert retention is not None and retention.mode == "COMPLIANCE"
    forged = os.urandom(bad.size_bytes)
    strict.clips.client.put_object(strict.clips.bucket, bad.object_key, io.BytesIO(forged), len(forged))
    with pytest.raises(ValueError, match=rf"{bad.object_key} has sha256 {hashlib.sha256(forged).hexdigest()}"):
        strict.mark_evidence(bad.object_key, case_number="K-2")
    with pytest.raises(ValueError, match="must be clips/"):
        strict.mark_evidence("clips/../../etc/passwd", case_number="K-3")


# ---------------------------------------------------------------------------------------------- CLI verify


def _cli(args: list[str], s3: EmbeddedS3, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCTV_S3_")}
    env.update({"CCTV_S3_ACCESS_KEY": s3.access_key, "CCTV_S3_SECRET_KEY": s3.secret_key})
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", "evidence", *args, "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture(scope="module")
def cli_config(s3_server: EmbeddedS3, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "evidence.yaml"
    path.write_text(
        f"state_dir: state\nstorage:\n  endpoint: {s3_server.endpoint}\n  bucket: cctv-ev\n"
        "  evidence_retention_days: 7\n"
    )
    return path


def test_cli_verify_finds_a_modified_and_a_removed_clip(
    s3_server: EmbeddedS3, evidence: EvidenceStore, cli_config: Path, tmp_path: Path
) -> None:
    day = _d(3)
    sidecars = _upload(evidence.clips, tmp_path, day, ["evt-v1", "evt-v2", "evt-v3"])
    wrote = _cli(["manifest", day.isoformat()], s3_server, cli_config)
    assert wrote.returncode == 0, wrote.stderr
    assert f"{manifest_key(day)}: 3 clips" in wrote.stdout
    ok = _cli(["verify", day.isoformat()], s3_server, cli_config)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(f"OK {day}: 3 clips checked")

    modified = sidecars[0]
    forged = os.urandom(modified.size_bytes)
    evidence.clips.client.put_object(evidence.clips.bucket, modified.object_key, io.BytesIO(forged), len(forged))
    bad = _cli(["verify", day.isoformat()], s3_server, cli_config)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"modified clip: {modified.object_key} sha256 {hashlib.sha256(forged).hexdigest()}" in bad.stdout
    assert f"(manifest: {modified.sha256})" in bad.stdout

    removed = sidecars[1]
    evidence.clips.client.remove_object(evidence.clips.bucket, removed.object_key)
    worse = _cli(["verify", day.isoformat(), "--json"], s3_server, cli_config)
    assert worse.returncode == 1
    assert f"missing: {removed.object_key}" in worse.stdout
    assert f"modified clip: {modified.object_key}" in worse.stdout

    # Re-writing the manifest cannot launder either change.
    assert _cli(["manifest", day.isoformat()], s3_server, cli_config).returncode == 0
    assert _cli(["verify", day.isoformat()], s3_server, cli_config).returncode == 1


def test_cli_verify_bad_input_exits_2(s3_server: EmbeddedS3, cli_config: Path, tmp_path: Path) -> None:
    bad_date = _cli(["verify", "2026-02-30"], s3_server, cli_config)
    assert bad_date.returncode == 2 and "2026-02-30" in bad_date.stderr
    no_manifest = _cli(["verify", "2001-01-01"], s3_server, cli_config)
    assert no_manifest.returncode == 2 and "no manifest for 2001-01-01" in no_manifest.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("storage:\n  evidence_lock_mode: STRICT\n")
    bad_cfg = _cli(["verify", _d(3).isoformat()], s3_server, broken)
    assert bad_cfg.returncode == 2 and "evidence_lock_mode" in bad_cfg.stderr


# ---------------------------------------------------------------------------------------------- manifests


def test_manifests_chain_across_days_and_late_clips_extend_without_breaking(
    evidence: EvidenceStore, tmp_path: Path
) -> None:
    d1, d2 = _d(5), _d(6)
    _upload(evidence.clips, tmp_path, d1, ["evt-d1-a", "evt-d1-b"])
    _upload(evidence.clips, tmp_path, d2, ["evt-d2-a"])
    written = _metric("cctv_evidence_manifests_written_total")
    evidence.write_day_manifest(d1)
    evidence.write_day_manifest(d2)
    m1, m2 = evidence.read_manifest(d1), evidence.read_manifest(d2)
    assert m1 is not None and m2 is not None
    assert m2.prev_manifest_sha256 == hashlib.sha256(m1.to_json_bytes()).hexdigest()
    assert evidence.verify_day(d2).ok

    # A clip of day 1 arrives late (spool drained after an outage): unlisted until the manifest is extended.
    (late,) = _upload(evidence.clips, tmp_path, d1, ["evt-d1-late"])
    assert evidence.verify_day(d1).unlisted == (late.object_key,)
    evidence.write_day_manifest(d1)
    evidence.write_day_manifest(d1)  # nothing new: no new version
    assert _metric("cctv_evidence_manifests_written_total") == written + 3
    r1, r2 = evidence.verify_day(d1), evidence.verify_day(d2)
    assert r1.ok and r1.clips_checked == 3, r1.problems()
    assert r2.ok, r2.problems()  # day 2 still links to day 1's first (locked) version

    # Deleting the manifest only hides it behind a delete marker: verify says so.
    evidence.locked.client.remove_object(evidence.locked.bucket, manifest_key(d1))
    gone = evidence.verify_day(d1)
    assert not gone.ok and any("delete marker" in p for p in gone.chain_problems)


def test_verify_checks_evidence_copies(evidence: EvidenceStore, tmp_path: Path) -> None:
    day = _d(7)
    a, b = _upload(evidence.clips, tmp_path, day, ["evt-e-a", "evt-e-b"])
    evidence.mark_evidence(a.object_key, case_number="E-1")
    evidence.write_day_manifest(day)
    report = evidence.verify_day(day)
    assert report.ok and report.evidence_checked == 1, report.problems()
    forged = os.urandom(a.size_bytes)
    evidence.locked.client.put_object(evidence.locked.bucket, a.object_key, io.BytesIO(forged), len(forged))
    report = evidence.verify_day(day)
    assert not report.ok
    assert [(m.part, m.actual_sha256) for m in report.modified] == [
        ("evidence copy", hashlib.sha256(forged).hexdigest())
    ]
    assert b.object_key not in {m.key for m in report.modified}


# ---------------------------------------------------------------------------------------------- spool policy


def test_full_spool_drops_oldest_ordinary_clips_and_keeps_evidence(evidence: EvidenceStore, tmp_path: Path) -> None:
    day = _d(4)
    src = tmp_path / "src"
    src.mkdir()
    items = [
        make_clip(src, "sp-e0", day, size_bytes=20_000, evidence=True),
        make_clip(src, "sp-o1", day, size_bytes=20_000),
        make_clip(src, "sp-o2", day, size_bytes=20_000),
        make_clip(src, "sp-e3", day, size_bytes=20_000, evidence=True, case="S-9"),
        make_clip(src, "sp-o4", day, size_bytes=20_000),
    ]
    item_bytes = max(20_000 + len(s.to_json_bytes()) for _, s in items)
    spool = UploadSpool(tmp_path / "spool", evidence.clips, max_bytes=3 * item_bytes + 100, evidence=evidence)
    dropped = _metric("cctv_spool_dropped_total")
    for path, sidecar in items:
        spool.enqueue(path, sidecar)
    assert spool.pending_event_ids() == ["sp-e0", "sp-e3", "sp-o4"]
    assert _metric("cctv_spool_dropped_total") == dropped + 2
    assert _metric("cctv_spool_evidence_items") == 2
    spool.start()
    try:
        assert spool.wait_drained(30)
    finally:
        spool.stop()
    prefix = f"clips/{day:%Y/%m/%d}/cam-ev/"
    assert [k.rsplit("/", 1)[1] for k in evidence.clips.list_clips(prefix)] == ["sp-e0.mp4", "sp-e3.mp4", "sp-o4.mp4"]
    assert [k.rsplit("/", 1)[1] for k in evidence.locked.list_clips(prefix)] == ["sp-e0.mp4", "sp-e3.mp4"]
    assert {m.case_number for m in evidence.evidence_marks(day)} == {"unassigned", "S-9"}


# ---------------------------------------------------------------------------------------------- access log


def test_access_log_appends_locked_entries_and_answers_queries(
    access: S3Access, cfg: StorageConfig, s3_server: EmbeddedS3, cli_config: Path
) -> None:
    log = AccessLog(access)
    assert log.bucket == cfg.evidence_bucket_name
    t0 = datetime(2026, 6, 6, 23, 59, 58, tzinfo=UTC).timestamp()
    entries = [
        AccessEntry(actor="kim", role="operator", action="view", clip_key="clips/a.mp4", reason="check", ts=t0),
        AccessEntry(
            actor="lee",
            role="admin",
            action="export",
            clip_key="clips/b.mp4",
            reason="police request",
            case_number="2026-112-1",
            requester="112",
            ts=t0 + 1,
        ),
        AccessEntry(actor="kim", role="operator", action="view", clip_key="clips/b.mp4", reason="follow-up", ts=t0 + 3),
    ]
    before = _metric("cctv_access_log_entries_total")
    keys = [log.append(e) for e in entries]
    assert _metric("cctv_access_log_entries_total") == before + 3
    assert keys[0].startswith("access-log/2026/06/06/") and keys[2].startswith("access-log/2026/06/07/")

    assert log.query(t0, t0 + 10) == entries
    assert log.query(t0, t0 + 10, actor="kim") == [entries[0], entries[2]]
    assert log.query(t0, t0 + 10, clip_key="clips/b.mp4") == entries[1:]
    assert log.query(t0 + 0.5, t0 + 2) == [entries[1]]
    assert log.query(t0, t0 + 10, limit=1) == [entries[0]]
    with pytest.raises(ValueError, match="empty or reversed"):
        log.query(t0, t0)
    window = ["--since", "2026-06-06", "--until", "2026-06-08"]
    cli = _cli(["access-log", *window, "--actor", "kim"], s3_server, cli_config)
    assert cli.returncode == 0, cli.stderr
    assert [AccessEntry.model_validate_json(line) for line in cli.stdout.splitlines()] == [entries[0], entries[2]]

    client = log.store.client
    version = client.stat_object(log.bucket, keys[1]).version_id
    retention = client.get_object_retention(log.bucket, keys[1], version_id=version)
    assert retention is not None and retention.mode == "GOVERNANCE"
    with pytest.raises(S3Error) as info:
        client.remove_object(log.bucket, keys[1], version_id=version)
    assert info.value.code == "AccessDenied"


def test_an_existing_bucket_without_object_lock_is_refused_for_evidence(s3_server: EmbeddedS3) -> None:
    plain = ClipStore.for_access(s3_server.access("cctv-plain"))
    plain.ensure_bucket()
    assert not plain.object_lock_enabled()
    with pytest.raises(RuntimeError, match=r"'cctv-plain'.*exists without object lock"):
        plain.ensure_bucket(object_lock=True)


def test_lifecycle_expiry_rule_is_installed(evidence: EvidenceStore) -> None:
    evidence.apply_lifecycle()
    assert evidence.lifecycle_days() == 30


def test_daily_manifest_writer_writes_yesterdays_manifest(evidence: EvidenceStore, tmp_path: Path) -> None:
    from storage.evidence import DailyManifestWriter

    day = _d(9)
    _upload(evidence.clips, tmp_path, day, ["evt-daily-a", "evt-daily-b"])
    writer = DailyManifestWriter(evidence, interval_s=60, settle_s=900)
    next_midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    assert writer.tick(now=next_midnight.timestamp() + 1000) == manifest_key(day)
    manifest = evidence.read_manifest(day)
    assert manifest is not None and len(manifest.entries) == 2
    assert evidence.verify_day(day).ok
