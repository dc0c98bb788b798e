"""Operators' acknowledgements of events, kept in the bucket so a restarted controller still knows them.

Each is one object, ``control/acks/<event_id>.json``. An event is acknowledged once: the same acknowledgement
again (a retried request) answers the first record; another one is refused, naming who acknowledged it first.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable

from pydantic import ValidationError

from contracts.errors import EventAlreadyAcknowledgedError
from contracts.events import Acknowledgement
from storage.clip_store import ClipStore, StorageError

log = logging.getLogger(__name__)

ACK_PREFIX = "control/acks/"


class AcknowledgementBook:
    """Every event's acknowledgement, read from the bucket once and written through on each new one.

    Args:
        store: the clip bucket's store (the objects live under :data:`ACK_PREFIX`).
        now: the clock of new acknowledgements.
    """

    def __init__(self, store: ClipStore, *, now: Callable[[], float] = time.time) -> None:
        self._store = store
        self._now = now
        self._lock = threading.Lock()
        self._acks: dict[str, Acknowledgement] | None = None

    def all(self) -> dict[str, Acknowledgement]:
        """Event id -> its acknowledgement (a copy).

        Raises:
            StorageError: the bucket could not be listed (on first use).
        """
        with self._lock:
            return dict(self._load())

    def acknowledge(self, event_id: str, operator: str, note: str, by: str) -> Acknowledgement:
        """Record that ``operator`` (through the API caller ``by``) saw ``event_id``; returns the record.

        Raises:
            EventAlreadyAcknowledgedError: acknowledged before by someone else or with another note.
            StorageError: it could not be stored (nothing recorded).
        """
        with self._lock:
            acks = self._load()
            first = acks.get(event_id)
            if first is not None:
                if (first.operator, first.note, first.by) == (operator, note, by):
                    return first  # the same acknowledgement again (a retry): answered, not refused
                raise EventAlreadyAcknowledgedError(
                    f"event {event_id} was acknowledged by {first.operator} at {first.ts:.0f}"
                )
            ack = Acknowledgement(operator=operator, note=note, by=by, ts=self._now())
            data = json.dumps({"event_id": event_id, **ack.model_dump()}).encode()
            key = f"{ACK_PREFIX}{event_id}.json"
            with self._store.translate_errors("PUT", key):
                self._store.client.put_object(
                    self._store.bucket, key, io.BytesIO(data), len(data), content_type="application/json"
                )
            acks[event_id] = ack
            return ack

    def _load(self) -> dict[str, Acknowledgement]:
        """The acknowledgements, read once (callers hold the lock); an unreadable object is logged and skipped."""
        if self._acks is None:
            acks: dict[str, Acknowledgement] = {}
            for key in self._store.list_keys(ACK_PREFIX):
                try:
                    record = json.loads(self._store.get_bytes(key))
                    acks[str(record["event_id"])] = Acknowledgement.model_validate(record)
                except (StorageError, ValueError, KeyError, TypeError, ValidationError) as exc:
                    log.warning("acknowledgement %s unreadable: %s", key, exc)
            self._acks = acks
        return self._acks
