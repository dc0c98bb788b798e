"""The stored control state: applied change requests travel with the inventory they changed."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from cluster.control_state import APPLIED_KEPT, AppliedChange, ControlState, inventory_sha256, merge_with_config
from configs.schema import CameraConfig


def _cam(i: int) -> CameraConfig:
    return CameraConfig(id=f"cam-{i}", url=f"rtsp://127.0.0.1:9/{i}")


def _state(applied: list[AppliedChange]) -> ControlState:
    return ControlState(
        base_inventory_sha256=inventory_sha256([_cam(1)]),
        cameras=[_cam(1), _cam(2)],
        assignment={"cam-1": "shard-000", "cam-2": "shard-001"},
        saved_ts=1.0,
        applied=applied,
    )


def test_applied_changes_round_trip_with_the_inventory() -> None:
    change = AppliedChange(
        request_id="admin/key:abc", kind="add", camera_ids=["cam-2"], placed={"cam-2": "shard-001"}, applied_ts=2.0
    )
    back = ControlState.model_validate_json(_state([change]).model_dump_json())
    assert back.applied == [change]
    cameras, kept, _ = merge_with_config(back, [_cam(1)])  # config unchanged: the live add survives
    assert [c.id for c in cameras] == ["cam-1", "cam-2"] and kept["cam-2"] == "shard-001"


def test_a_state_written_before_request_ids_still_loads() -> None:
    doc = json.loads(_state([]).model_dump_json())
    del doc["applied"]
    assert ControlState.model_validate(doc).applied == []


def test_a_change_record_is_checked_like_any_stored_document() -> None:
    with pytest.raises(ValidationError, match="kind"):
        AppliedChange(request_id="r", kind="rename", camera_ids=[], applied_ts=0.0)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="request_id"):
        AppliedChange(request_id="", kind="add", camera_ids=[], applied_ts=0.0)
    assert APPLIED_KEPT >= 1000  # far more than any client's retries in flight
