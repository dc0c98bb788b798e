"""The camera inventory and its shard assignment, persisted as one S3 object.

The controller writes ``control/cameras.json`` in the clip bucket after every change (add,
remove, update, transfer, reassignment), so a controller that restarts — or a whole new run
against the same store — recovers the live inventory and the assignment instead of going back
to the config file.

Which wins, the config file or the stored state? The stored document records the SHA-256 of the
config inventory it grew from (``base_inventory_sha256``). If the config's cameras are unchanged
since, the stored state (config + live changes) wins; if an operator edited the config file, the
config wins and the live changes are dropped, with a log line saying so. Cameras that survive
keep their shard either way.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from configs.schema import CameraConfig
from storage.access import S3Access
from storage.clip_store import ClipStore, StorageError

log = logging.getLogger(__name__)

STATE_KEY = "control/cameras.json"
APPLIED_KEPT = 2048
"""Applied change requests remembered (oldest forgotten first): far more than a client retries."""

ChangeKind = Literal["add", "remove", "update", "transfer"]


class ControlStateError(ValueError):
    """The stored control state exists but cannot be used (not JSON, wrong schema)."""


class AppliedChange(BaseModel):
    """One camera change the controller applied, under the request id its caller gave.

    Stored in the same document as the inventory it changed, so a change and the record that it
    was made are written together: a caller that retries the request (its answer was lost to a
    controller restart, or it timed out) gets this answer back instead of a second change.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(min_length=1, max_length=128)
    kind: ChangeKind
    camera_ids: list[str]
    placed: dict[str, str] = Field(default_factory=dict, description="camera id -> shard id (add, update)")
    applied_ts: float


class ControlState(BaseModel):
    """What the controller persists."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    base_inventory_sha256: str
    cameras: list[CameraConfig]
    assignment: dict[str, str] = Field(description="camera id -> shard id")
    saved_ts: float
    applied: list[AppliedChange] = Field(default_factory=list, description="recent change requests, oldest first")


def inventory_sha256(cameras: Sequence[CameraConfig]) -> str:
    """Order-independent hash of a camera inventory."""
    docs = sorted(json.dumps(c.model_dump(mode="json"), sort_keys=True) for c in cameras)
    return hashlib.sha256("\n".join(docs).encode()).hexdigest()


class ControlStateStore:
    """Reads and writes :data:`STATE_KEY` in the clip bucket."""

    def __init__(self, s3: S3Access) -> None:
        self._store = ClipStore.for_access(s3, retries=1)

    def load(self) -> ControlState | None:
        """The stored state, or None when there is none yet.

        Raises:
            StorageError: the store could not be read (other than "no such key").
            ControlStateError: the object is there but is not a valid state document.
        """
        try:
            data = self._store.get_bytes(STATE_KEY)
        except StorageError as exc:
            if exc.code == "NoSuchKey":
                return None
            raise
        try:
            return ControlState.model_validate_json(data)
        except ValidationError as exc:
            raise ControlStateError(f"{self._store.bucket}/{STATE_KEY} is not a valid control state: {exc}") from exc

    def save(
        self,
        base_sha256: str,
        cameras: Sequence[CameraConfig],
        assignment: dict[str, str],
        applied: Sequence[AppliedChange] = (),
    ) -> None:
        """Write the state (one PUT: readers see the old or the new document, never a mix).

        Raises:
            StorageError: the store could not be written; the caller keeps the state and retries.
        """
        doc = ControlState(
            base_inventory_sha256=base_sha256,
            cameras=sorted(cameras, key=lambda c: c.id),
            assignment=dict(sorted(assignment.items())),
            saved_ts=time.time(),
            applied=list(applied)[-APPLIED_KEPT:],
        )
        data = doc.model_dump_json().encode()
        with self._store.translate_errors("PUT", STATE_KEY):
            self._store.client.put_object(
                self._store.bucket, STATE_KEY, io.BytesIO(data), len(data), content_type="application/json"
            )


def merge_with_config(
    stored: ControlState | None, config_cameras: Sequence[CameraConfig]
) -> tuple[list[CameraConfig], dict[str, str], str]:
    """The inventory to run, the assignment to keep, and why (for the log).

    See the module docstring for which source wins.
    """
    base = inventory_sha256(config_cameras)
    if stored is None:
        return list(config_cameras), {}, "no stored state: inventory from the config"
    if stored.base_inventory_sha256 == base:
        return (
            list(stored.cameras),
            dict(stored.assignment),
            (f"stored state restored ({len(stored.cameras)} cameras, live changes included)"),
        )
    ids = {c.id for c in config_cameras}
    kept = {cid: sid for cid, sid in stored.assignment.items() if cid in ids}
    return (
        list(config_cameras),
        kept,
        (
            "the config's camera list changed since the stored state was written: inventory from the config, "
            f"live changes dropped, {len(kept)} cameras keep their shard"
        ),
    )
