"""Manifest chaining and verification logic, access-log records, and the spool's evidence policy (no S3 server)."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from configs.schema import StorageConfig, default_evidence_bucket
from storage.access_log import AccessEntry, _key_ts, entry_key
from storage.clip_store import ClipStore
from storage.evidence import mark_key
from storage.manifest import (
    DayManifest,
    ObservedClip,
    build_manifest,
    chain_breaks,
    chain_seed,
    compare,
    history_problems,
    manifest_key,
    next_link,
)
from storage.records import ClipSidecar, clip_object_key
from storage.spool import UploadSpool

DAY = date(2026, 5, 1)
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _clip(name: str, *, size: int = 100, body: str | None = None) -> ObservedClip:
    sha = _sha(body or name)
    return ObservedClip(
        key=f"clips/2026/05/01/cam-01/{name}.mp4",
        size_bytes=size,
        sha256=sha,
        sidecar_sha256=_sha("side-" + name),
        sidecar_claims_sha256=sha,
    )


@pytest.fixture
def clips() -> list[ObservedClip]:
    return [_clip(n) for n in ("evt-c", "evt-a", "evt-b")]


@pytest.fixture
def manifest(clips: list[ObservedClip]) -> DayManifest:
    return build_manifest(DAY, clips, prev_manifest_sha256=None, created_at=T0)


# ---------------------------------------------------------------------------------------------- chain


def test_manifest_is_sorted_and_each_link_chains_the_previous(manifest: DayManifest) -> None:
    assert [e.key.rsplit("/", 1)[1] for e in manifest.entries] == ["evt-a.mp4", "evt-b.mp4", "evt-c.mp4"]
    link = chain_seed(DAY, None)
    for e in manifest.entries:
        link = next_link(link, e.key, e.size_bytes, e.sha256, e.sidecar_sha256)
        assert e.link == link
    assert manifest.root == link
    assert chain_breaks(manifest) == []
    assert manifest_key(DAY) == "manifests/2026/05/01.json"


def test_manifest_round_trips_and_is_deterministic(clips: list[ObservedClip], manifest: DayManifest) -> None:
    again = build_manifest(DAY, list(reversed(clips)), prev_manifest_sha256=None, created_at=T0)
    assert again.to_json_bytes() == manifest.to_json_bytes()
    assert DayManifest.from_json_bytes(manifest.to_json_bytes()) == manifest


def test_empty_day_root_is_the_seed_and_the_seed_binds_day_and_previous_manifest() -> None:
    empty = build_manifest(DAY, [], prev_manifest_sha256=None, created_at=T0)
    assert empty.entries == () and empty.root == chain_seed(DAY, None)
    assert chain_seed(DAY, None) != chain_seed(DAY + timedelta(days=1), None)
    assert chain_seed(DAY, None) != chain_seed(DAY, "0" * 64)
    linked = build_manifest(DAY, [], prev_manifest_sha256="0" * 64, created_at=T0)
    assert linked.root != empty.root


def test_an_edited_entry_breaks_the_chain_at_that_entry(manifest: DayManifest) -> None:
    entries = list(manifest.entries)
    entries[1] = entries[1].model_copy(update={"sha256": _sha("forged")})
    forged = manifest.model_copy(update={"entries": tuple(entries)})
    problems = chain_breaks(forged)
    assert len(problems) == 1 and "chain breaks at clips/2026/05/01/cam-01/evt-b.mp4" in problems[0]


def test_a_dropped_or_reordered_entry_is_a_chain_problem(manifest: DayManifest) -> None:
    dropped = manifest.model_copy(update={"entries": manifest.entries[:1] + manifest.entries[2:]})
    assert chain_breaks(dropped)
    last = manifest.model_copy(update={"entries": manifest.entries[:-1]})
    assert any("root" in p for p in chain_breaks(last))
    swapped = manifest.model_copy(update={"entries": (manifest.entries[1], manifest.entries[0], manifest.entries[2])})
    assert any("sorted" in p for p in chain_breaks(swapped))


def test_a_clip_without_sidecar_or_listed_twice_cannot_be_listed() -> None:
    bare = _clip("evt-x").model_copy(update={"sidecar_sha256": None})
    with pytest.raises(ValueError, match=r"evt-x\.mp4 has no sidecar"):
        build_manifest(DAY, [bare], prev_manifest_sha256=None)
    with pytest.raises(ValueError, match="listed twice"):
        build_manifest(DAY, [_clip("evt-x"), _clip("evt-x")], prev_manifest_sha256=None)


# ---------------------------------------------------------------------------------------------- compare


def test_untouched_day_verifies(clips: list[ObservedClip], manifest: DayManifest) -> None:
    report = compare(manifest, {c.key: c for c in clips})
    assert report.ok and report.manifest_chain_ok
    assert report.clips_checked == 3 and report.problems() == []


def test_modified_clip_and_sidecar_are_reported_with_both_hashes(
    clips: list[ObservedClip], manifest: DayManifest
) -> None:
    observed = {c.key: c for c in clips}
    a, b = clips[1], clips[2]
    observed[a.key] = a.model_copy(update={"sha256": _sha("changed"), "sidecar_claims_sha256": _sha("changed")})
    observed[b.key] = b.model_copy(update={"sidecar_sha256": _sha("edited sidecar")})
    report = compare(manifest, observed)
    assert not report.ok
    got = {(m.key, m.part): m for m in report.modified}
    assert got[(a.key, "clip")].expected_sha256 == a.sha256
    assert got[(a.key, "clip")].actual_sha256 == _sha("changed")
    assert got[(b.key, "sidecar")].actual_sha256 == _sha("edited sidecar")
    assert any(a.key in line and "modified clip" in line for line in report.problems())


def test_removed_clip_is_missing_unless_the_day_has_expired(clips: list[ObservedClip], manifest: DayManifest) -> None:
    observed = {c.key: c for c in clips[1:]}
    report = compare(manifest, observed)
    assert report.missing == (clips[0].key,) and not report.ok
    expired = compare(manifest, observed, expired_ok=True)
    assert expired.ok and expired.expired == (clips[0].key,) and expired.missing == ()


def test_unlisted_and_sidecar_mismatch_fail(clips: list[ObservedClip], manifest: DayManifest) -> None:
    observed = {c.key: c for c in clips}
    late = _clip("evt-late")
    observed[late.key] = late
    report = compare(manifest, observed)
    assert report.unlisted == (late.key,) and not report.ok
    observed = {c.key: c for c in clips}
    observed[clips[0].key] = clips[0].model_copy(update={"sidecar_claims_sha256": _sha("other")})
    assert compare(manifest, observed).sidecar_mismatch == (clips[0].key,)


def test_extra_chain_problems_fail_the_report(clips: list[ObservedClip], manifest: DayManifest) -> None:
    report = compare(manifest, {c.key: c for c in clips}, extra_chain_problems=["link to the day before broken"])
    assert not report.ok and not report.manifest_chain_ok
    assert report.problems() == ["chain: link to the day before broken"]


# ---------------------------------------------------------------------------------------------- rewrites


def test_rewrite_keeps_earlier_entries_unchanged_and_adds_late_clips(
    clips: list[ObservedClip], manifest: DayManifest
) -> None:
    tampered = clips[0].model_copy(update={"sha256": _sha("tampered")})
    late = _clip("evt-late")
    newer = build_manifest(DAY, [tampered, late], prev_manifest_sha256="f" * 64, created_at=T0, keep=manifest)
    by_key = newer.by_key()
    assert by_key[clips[0].key].sha256 == clips[0].sha256  # a rewrite cannot launder a change
    assert late.key in by_key and len(newer.entries) == 4
    assert newer.prev_manifest_sha256 is None  # kept from the first version
    assert chain_breaks(newer) == [] and history_problems(manifest, newer) == []
    assert compare(newer, {c.key: c for c in [tampered, late, *clips[1:]]}).modified[0].key == clips[0].key


def test_history_detects_a_newer_version_that_drops_or_changes_an_entry(manifest: DayManifest) -> None:
    shorter = build_manifest(
        DAY,
        [_clip("evt-a"), _clip("evt-b", body="changed")],
        prev_manifest_sha256=None,
        created_at=T0,
    )
    problems = history_problems(manifest, shorter)
    assert any("evt-c.mp4 was listed by an earlier manifest version" in p for p in problems)
    assert any("evt-b.mp4 has other hashes" in p for p in problems)


def test_keep_must_be_the_same_day(manifest: DayManifest) -> None:
    with pytest.raises(ValueError, match="2026-05-01, not 2026-05-02"):
        build_manifest(DAY + timedelta(days=1), [], prev_manifest_sha256=None, keep=manifest)


# ---------------------------------------------------------------------------------------------- records


def test_access_entry_validation_and_time_sorted_keys() -> None:
    e1 = AccessEntry(
        actor="kim", role="operator", action="view", clip_key="clips/x.mp4", reason="incident check", ts=1e9
    )
    e2 = e1.model_copy(update={"ts": 1e9 + 0.5})
    k1, k2 = entry_key(e1, "aa"), entry_key(e2, "00")
    assert k1.startswith("access-log/2001/09/09/") and k1 < k2
    assert _key_ts(k1) == pytest.approx(1e9)
    with pytest.raises(ValidationError, match="actor"):
        AccessEntry(actor="  ", role="operator", action="view", reason="x")
    with pytest.raises(ValidationError, match="action"):
        AccessEntry(actor="kim", role="operator", action="delete", reason="x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="reason"):
        AccessEntry(actor="kim", role="operator", action="export", reason="")


def test_evidence_bucket_name_and_mark_keys() -> None:
    assert StorageConfig(bucket="cctv-demo").evidence_bucket_name == "cctv-demo-evidence"
    assert StorageConfig(bucket="cctv-demo", evidence_bucket="vault").evidence_bucket_name == "vault"
    long = default_evidence_bucket("b" * 63)
    assert len(long) == 63 and long.endswith("-evidence")
    assert StorageConfig().evidence_lock_mode == "GOVERNANCE"
    with pytest.raises(ValidationError, match="evidence_lock_mode"):
        StorageConfig(evidence_lock_mode="STRICT")  # type: ignore[arg-type]
    key = mark_key("clips/2026/05/01/cam-01/evt-1.mp4", "112/2026 #7")
    assert key == "evidence-marks/clips/2026/05/01/cam-01/evt-1/112%2F2026%20%237.json"
    with pytest.raises(ValueError, match="not under"):
        mark_key("other/x.mp4", "c")


# ---------------------------------------------------------------------------------------------- spool policy


def _sidecar(directory: Path, event_id: str, *, evidence: bool, size: int = 10_000) -> tuple[Path, ClipSidecar]:
    data = os.urandom(size)
    path = directory / f"{event_id}.mp4"
    path.write_bytes(data)
    return path, ClipSidecar(
        event_id=event_id,
        camera_id="cam-u",
        event_type="crowd",
        started_at=T0,
        ended_at=T0,
        clip_start=T0,
        clip_end=T0,
        peak_value=1,
        detector="yolox_nano",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=size,
        duration_s=1.0,
        object_key=clip_object_key("cam-u", event_id, DAY),
        evidence=evidence,
    )


def _dropped() -> float:
    return REGISTRY.get_sample_value("cctv_spool_dropped_total") or 0.0


def test_full_spool_drops_oldest_ordinary_clips_never_evidence(tmp_path: Path) -> None:
    # The spool is never started: enqueue alone applies the budget; the store is never contacted.
    store = ClipStore("127.0.0.1:9", "k", "s", "unused")
    src = tmp_path / "src"
    src.mkdir()
    items = [
        _sidecar(src, "e0", evidence=True),
        _sidecar(src, "o1", evidence=False),
        _sidecar(src, "e2", evidence=True),
        _sidecar(src, "o3", evidence=False),
    ]
    item_bytes = 10_000 + len(items[0][1].to_json_bytes())
    spool = UploadSpool(tmp_path / "spool", store, max_bytes=4 * item_bytes + 10)
    before = _dropped()
    for path, sidecar in items:
        spool.enqueue(path, sidecar)
    assert spool.pending_event_ids() == ["e0", "o1", "e2", "o3"]

    spool.enqueue(*_sidecar(src, "o4", evidence=False))  # evicts o1 (oldest ordinary), not e0
    assert spool.pending_event_ids() == ["e0", "e2", "o3", "o4"]
    spool.enqueue(*_sidecar(src, "e5", evidence=True))  # evicts o3
    assert spool.pending_event_ids() == ["e0", "e2", "o4", "e5"]
    assert _dropped() == before + 2
    assert REGISTRY.get_sample_value("cctv_spool_evidence_items") == 3

    spool.enqueue(*_sidecar(src, "e6", evidence=True))  # evicts o4; then only evidence is left
    spool.enqueue(*_sidecar(src, "e7", evidence=True))  # nothing ordinary left: kept over budget
    assert spool.pending_event_ids() == ["e0", "e2", "e5", "e6", "e7"]
    assert spool.pending_bytes() > spool.max_bytes
    spool.enqueue(*_sidecar(src, "o8", evidence=False))  # an ordinary clip cannot make room: dropped itself
    assert spool.pending_event_ids() == ["e0", "e2", "e5", "e6", "e7"]
    assert _dropped() == before + 4

    small = UploadSpool(tmp_path / "small", store, max_bytes=2 * item_bytes + 10)
    small.enqueue(*_sidecar(src, "s-e0", evidence=True))
    small.enqueue(*_sidecar(src, "s-o1", evidence=False))
    small.enqueue(*_sidecar(src, "s-big", evidence=False, size=2 * 10_000))  # cannot fit even alone with e0
    assert small.pending_event_ids() == ["s-e0", "s-o1"]  # o1 is not evicted for nothing
    assert _dropped() == before + 5

    resumed = UploadSpool(tmp_path / "spool", store, max_bytes=item_bytes)  # budget cut on restart
    assert resumed.pending_event_ids() == ["e0", "e2", "e5", "e6", "e7"]  # evidence survives it


def test_daily_manifest_writer_waits_for_the_settle_time_after_midnight() -> None:
    from storage.access import S3Access
    from storage.evidence import DailyManifestWriter, EvidenceStore

    store = EvidenceStore(S3Access("127.0.0.1:9", "k", "s", "cctv-unit"), StorageConfig(bucket="cctv-unit"))
    writer = DailyManifestWriter(store, interval_s=60, settle_s=900)
    midnight = datetime(2026, 5, 2, tzinfo=UTC).timestamp()
    assert writer.tick(now=midnight + 899) is None  # too early: the store is not contacted
    with pytest.raises(ValueError, match="interval_s=0"):
        DailyManifestWriter(store, interval_s=0)
