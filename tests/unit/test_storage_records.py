"""Pure logic of the storage records: key layout and sidecar JSON (no server, no Ray)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from storage.clip_store import sha256_file
from storage.records import (
    ClipSidecar,
    clip_object_key,
    sidecar_key_for,
    sidecar_object_key,
)

T0 = datetime(2026, 3, 7, 23, 59, 58, 250000, tzinfo=UTC)


def _sidecar(**overrides: object) -> ClipSidecar:
    fields: dict[str, object] = {
        "event_id": "evt-20260307T235958-0001",
        "camera_id": "cam-01",
        "event_type": "crowd",
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=4),
        "clip_start": T0 - timedelta(seconds=5),
        "clip_end": T0 + timedelta(seconds=9),
        "peak_value": 7.0,
        "zone": "plaza",
        "detector": "yolox_nano",
        "sha256": "ab" * 32,
        "size_bytes": 123456,
        "duration_s": 14.0,
        "object_key": clip_object_key("cam-01", "evt-20260307T235958-0001", T0.date()),
    }
    fields.update(overrides)
    return ClipSidecar.model_validate(fields)


def test_clip_key_layout_is_zero_padded_by_day() -> None:
    assert clip_object_key("cam-01", "e1", date(2026, 3, 7)) == "clips/2026/03/07/cam-01/e1.mp4"
    assert sidecar_object_key("cam-01", "e1", date(2026, 3, 7)) == "clips/2026/03/07/cam-01/e1.json"


def test_clip_key_accepts_a_datetime_and_uses_its_date() -> None:
    assert clip_object_key("cam.A_2", "e1", T0) == "clips/2026/03/07/cam.A_2/e1.mp4"


@pytest.mark.parametrize(
    ("camera_id", "event_id", "bad"),
    [
        ("cam/01", "e1", "cam/01"),
        ("..", "e1", ".."),
        ("cam-01", "a/b", "a/b"),
        ("cam-01", ".hidden", ".hidden"),
        ("cam-01", "", ""),
    ],
)
def test_clip_key_rejects_unsafe_segments_naming_them(camera_id: str, event_id: str, bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        clip_object_key(camera_id, event_id, date(2026, 1, 1))


def test_sidecar_key_for_maps_mp4_to_json_and_rejects_others() -> None:
    assert sidecar_key_for("clips/2026/01/01/c/e.mp4") == "clips/2026/01/01/c/e.json"
    with pytest.raises(ValueError, match=r"clips/x\.avi"):
        sidecar_key_for("clips/x.avi")


def test_sidecar_json_round_trip_is_exact() -> None:
    sidecar = _sidecar()
    data = sidecar.to_json_bytes()
    again = ClipSidecar.from_json_bytes(data)
    assert again == sidecar
    assert again.started_at.tzinfo is not None
    assert again.sidecar_key == "clips/2026/03/07/cam-01/evt-20260307T235958-0001.json"
    assert again.schema_version == 1


def test_sidecar_keeps_non_utc_offsets_and_null_zone() -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    sidecar = _sidecar(zone=None, started_at=T0.astimezone(tz))
    again = ClipSidecar.from_json_bytes(sidecar.to_json_bytes())
    assert again.zone is None
    assert again.started_at == T0
    assert again.started_at.utcoffset() == timedelta(hours=5, minutes=30)


def test_sidecar_rejects_unknown_fields() -> None:
    data = _sidecar().model_dump(mode="json") | {"colour": "red"}
    with pytest.raises(ValidationError, match="colour"):
        ClipSidecar.model_validate(data)


def test_sidecar_is_frozen() -> None:
    sidecar = _sidecar()
    with pytest.raises(ValidationError):
        sidecar.peak_value = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"started_at": datetime(2026, 3, 7, 12, 0)}, "started_at"),
        ({"ended_at": T0 - timedelta(seconds=1)}, "before started_at"),
        ({"clip_end": T0 - timedelta(seconds=6)}, "before clip_start"),
        ({"sha256": "XYZ"}, "sha256"),
        ({"size_bytes": -1}, "size_bytes"),
        ({"object_key": "clips/2026/03/07/cam-01/e1.avi"}, r"e1\.avi"),
        ({"camera_id": "cam/01"}, "camera_id"),
    ],
)
def test_sidecar_validation_names_the_problem(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _sidecar(**overrides)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 1 MiB: several read chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
