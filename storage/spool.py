"""A local disk spool in front of the clip store: nothing is lost while the store is down.

Layout of ``spool_dir``::

    000000000042-<event_id>/clip.mp4       one committed item per directory; the 12-digit sequence
    000000000042-<event_id>/sidecar.json   number orders items across restarts
    000000000042-<event_id>/frame.jpg      the alarm frame, when the sidecar records one
    .000000000043-<event_id>.part/         an item being written (removed on restart)
    failed/                                items that can never upload (hash/size mismatch, bad JSON)

An item is built in a ``.part`` directory (files fsynced) and committed with one ``rename``, so a
crash leaves either a whole item or a ``.part`` directory, never half an item.

One daemon thread drains items strictly in sequence order: it uploads the head item with
:meth:`ClipStore.put_clip` and deletes the local files only after both objects are stored. A
failure backs off exponentially (with jitter, capped at ``retry_max_s``) and retries the same
item. Because object keys are deterministic, an upload retried after an ambiguous failure
overwrites the same keys instead of duplicating.

The spool keeps at most ``max_bytes`` on disk (clip plus sidecar): a new item that does not fit
evicts the oldest waiting *ordinary* items first; every eviction is counted and logged with its
event id. Evidence items (``sidecar.evidence``) are never evicted: when only evidence and the item
being uploaded are left, a new ordinary item is dropped itself, and a new evidence item is kept
over budget (logged; ``cctv_spool_evidence_items`` shows them). The item being uploaded is not
evicted, so the bound can be overshot by that one item while its upload runs. A single ordinary
item larger than ``max_bytes`` is itself dropped.

With an ``evidence`` store, an evidence item is marked (locked copy, retention, legal hold) right
after its upload, before its local files are deleted; a failed mark is retried like an upload.

Assumes one :class:`UploadSpool` per directory (one process, one instance).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import re
import shutil
import threading
import time
from bisect import insort
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from storage import metrics
from storage.clip_store import ClipIntegrityError, ClipStore, StorageError
from storage.records import ClipSidecar

if TYPE_CHECKING:
    from storage.evidence import EvidenceStore

logger = logging.getLogger(__name__)

CLIP_NAME = "clip.mp4"
SIDECAR_NAME = "sidecar.json"
FRAME_NAME = "frame.jpg"
FAILED_DIR = "failed"
_ITEM_RE = re.compile(r"^(\d{12})-(.+)$")
_PART_SUFFIX = ".part"
_GAUGE_REFRESH_S = 1.0
_WARN_EVERY_FAILURES = 10


@dataclass(order=True)
class _Item:
    """One committed spool item (internal)."""

    seq: int
    event_id: str = field(compare=False)
    path: Path = field(compare=False)
    size_bytes: int = field(compare=False)
    created_at: float = field(compare=False)
    """Wall-clock seconds (epoch) when the item was committed; survives restarts via the dir mtime."""
    evidence: bool = field(default=False, compare=False)
    """Never evicted to make room (``ClipSidecar.evidence``)."""

    @property
    def clip_path(self) -> Path:
        return self.path / CLIP_NAME

    @property
    def sidecar_path(self) -> Path:
        return self.path / SIDECAR_NAME

    @property
    def frame_path(self) -> Path:
        return self.path / FRAME_NAME


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UploadSpool:
    """Disk-backed FIFO of clips waiting for upload, drained by one background thread.

    Args:
        spool_dir: where items wait (created if missing).
        store: the clip store uploads go to.
        max_bytes: disk budget of waiting items (clip plus sidecar bytes).
        retry_initial_s: first backoff after a failed upload.
        retry_max_s: backoff cap.
        on_uploaded: called (from the drain thread) with each sidecar once its clip is stored.
        evidence: marks evidence items after upload (case number from ``sidecar.export``, else
            ``unassigned_case``); None leaves marking to someone else.
        unassigned_case: case number of evidence items that carry none.
    """

    def __init__(
        self,
        spool_dir: Path,
        store: ClipStore,
        *,
        max_bytes: int,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        on_uploaded: Callable[[ClipSidecar], None] | None = None,
        evidence: EvidenceStore | None = None,
        unassigned_case: str = "unassigned",
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes={max_bytes} must be positive")
        if not 0 < retry_initial_s <= retry_max_s:
            raise ValueError(f"spool retry_initial_s={retry_initial_s} must be in (0, retry_max_s={retry_max_s}]")
        self.spool_dir = Path(spool_dir)
        self.store = store
        self.max_bytes = max_bytes
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.on_uploaded = on_uploaded
        self.evidence = evidence
        self.unassigned_case = unassigned_case
        self._cond = threading.Condition()
        self._items: list[_Item] = []
        self._bytes = 0
        self._uploading: _Item | None = None
        self._next_seq = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._recover()

    # ------------------------------------------------------------------ state on disk

    def _recover(self) -> None:
        """Load items left by a previous run; drop half-written ``.part`` directories."""
        max_seq = -1
        for entry in sorted(self.spool_dir.iterdir()):
            if not entry.is_dir() or entry.name == FAILED_DIR:
                continue
            if entry.name.endswith(_PART_SUFFIX):
                logger.warning("spool: removing incomplete item %s left by a previous run", entry)
                shutil.rmtree(entry, ignore_errors=True)
                continue
            match = _ITEM_RE.match(entry.name)
            if match is None:
                continue
            seq = int(match.group(1))
            max_seq = max(max_seq, seq)
            item = _Item(seq, match.group(2), entry, 0, entry.stat().st_mtime)
            try:
                sidecar = ClipSidecar.from_json_bytes(item.sidecar_path.read_bytes())
                item.size_bytes = item.clip_path.stat().st_size + item.sidecar_path.stat().st_size
                if sidecar.alarm_frame is not None:
                    item.size_bytes += item.frame_path.stat().st_size
            except (OSError, ValidationError) as exc:
                self._quarantine(item, f"unreadable on resume: {exc}")
                continue
            item.event_id = sidecar.event_id
            item.evidence = sidecar.evidence
            self._items.append(item)
            self._bytes += item.size_bytes
        self._items.sort()
        self._next_seq = max_seq + 1
        if self._items:
            logger.info("spool %s: resuming %d clip(s), %d bytes", self.spool_dir, len(self._items), self._bytes)
        with self._cond:
            self._make_room(0)
            self._refresh_gauges()

    def _quarantine(self, item: _Item, reason: str) -> None:
        failed = self.spool_dir / FAILED_DIR
        failed.mkdir(exist_ok=True)
        target = failed / f"{item.path.name}-{time.time_ns()}"
        logger.error("spool: event %s can never upload (%s); moved to %s", item.event_id, reason, target)
        try:
            os.replace(item.path, target)
        except OSError as exc:
            logger.error("spool: could not move %s to %s: %s; deleting it", item.path, target, exc)
            shutil.rmtree(item.path, ignore_errors=True)

    def _make_room(self, incoming_bytes: int) -> bool:
        """Evict oldest waiting ordinary items (never evidence, never the one uploading) until
        ``incoming_bytes`` fits. True when it fits. Lock held."""
        while self._bytes + incoming_bytes > self.max_bytes:
            victim = next((i for i in self._items if i is not self._uploading and not i.evidence), None)
            if victim is None:
                return False
            self._items.remove(victim)
            self._bytes -= victim.size_bytes
            shutil.rmtree(victim.path, ignore_errors=True)
            metrics.SPOOL_DROPPED.inc()
            logger.error(
                "spool over budget (%d + %d > %d bytes): dropped oldest clip of event %s (%d bytes)",
                self._bytes + victim.size_bytes,
                incoming_bytes,
                self.max_bytes,
                victim.event_id,
                victim.size_bytes,
            )
        return True

    def _refresh_gauges(self) -> None:
        metrics.SPOOL_ITEMS.set(len(self._items))
        metrics.SPOOL_EVIDENCE_ITEMS.set(sum(1 for i in self._items if i.evidence))
        metrics.SPOOL_CAPACITY_BYTES.set(self.max_bytes)
        metrics.SPOOL_BYTES.set(self._bytes)
        metrics.SPOOL_OLDEST_AGE_SECONDS.set(self._oldest_age_locked())

    def _oldest_age_locked(self) -> float:
        return max(0.0, time.time() - self._items[0].created_at) if self._items else 0.0

    # ------------------------------------------------------------------ public API

    def enqueue(
        self, clip_path: Path, sidecar: ClipSidecar, *, move: bool = False, frame_path: Path | None = None
    ) -> None:
        """Put a clip in the spool (durably) for upload; returns once it is on disk.

        Args:
            clip_path: the MP4 file.
            sidecar: its record (``size_bytes`` must match the file).
            move: move the files into the spool instead of copying them (a rename on the same
                filesystem).
            frame_path: the alarm frame (JPEG), exactly when ``sidecar.alarm_frame`` records one.

        Raises:
            ClipIntegrityError: a file's size differs from its sidecar's record, or an alarm frame is given
                without a record (or the other way round).
            OSError: a file could not be read or the spool written (the item is not spooled).
        """
        body = sidecar.to_json_bytes()
        clip_bytes = clip_path.stat().st_size
        if clip_bytes != sidecar.size_bytes:
            raise ClipIntegrityError(
                f"clip {clip_path} has {clip_bytes} bytes, its sidecar for event "
                f"{sidecar.event_id!r} says {sidecar.size_bytes}"
            )
        frame_bytes = 0
        if (frame_path is None) != (sidecar.alarm_frame is None):
            raise ClipIntegrityError(
                f"event {sidecar.event_id!r}: alarm frame file {frame_path} and sidecar record "
                f"{sidecar.alarm_frame} must come together"
            )
        if frame_path is not None and sidecar.alarm_frame is not None:
            frame_bytes = frame_path.stat().st_size
            if frame_bytes != sidecar.alarm_frame.size_bytes:
                raise ClipIntegrityError(
                    f"alarm frame {frame_path} has {frame_bytes} bytes, its sidecar for event "
                    f"{sidecar.event_id!r} says {sidecar.alarm_frame.size_bytes}"
                )
        size_bytes = clip_bytes + len(body) + frame_bytes
        with self._cond:
            evictable = sum(i.size_bytes for i in self._items if i is not self._uploading and not i.evidence)
            could_fit = self._bytes - evictable + size_bytes <= self.max_bytes
            # An ordinary clip that cannot fit even after evicting every older ordinary clip is dropped
            # alone (evicting them would lose them for nothing); evidence evicts what it can.
            fits = (could_fit or sidecar.evidence) and self._make_room(size_bytes)
            if not fits and not sidecar.evidence:
                metrics.SPOOL_DROPPED.inc()
                logger.error(
                    "spool: clip of event %s (%d bytes) does not fit the spool budget (%d bytes, %d held by "
                    "evidence or the upload in flight): dropped, %s left in place",
                    sidecar.event_id,
                    size_bytes,
                    self.max_bytes,
                    self._bytes,
                    clip_path,
                )
                return
            if not fits:
                logger.error(
                    "spool: evidence clip of event %s (%d bytes) kept over the spool budget (%d + %d > %d bytes)",
                    sidecar.event_id,
                    size_bytes,
                    self._bytes,
                    size_bytes,
                    self.max_bytes,
                )
            self._bytes += size_bytes  # reserved while the files are written
            seq = self._next_seq
            self._next_seq += 1
        name = f"{seq:012d}-{sidecar.event_id}"
        stage = self.spool_dir / f".{name}{_PART_SUFFIX}"
        final = self.spool_dir / name
        try:
            stage.mkdir()
            self._place_clip(clip_path, stage / CLIP_NAME, move=move)
            if frame_path is not None:
                self._place_clip(frame_path, stage / FRAME_NAME, move=move)
            with (stage / SIDECAR_NAME).open("wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_path(stage)
            os.rename(stage, final)
            _fsync_path(self.spool_dir)
        except OSError:
            for staged, original in ((stage / CLIP_NAME, clip_path), (stage / FRAME_NAME, frame_path)):
                if move and original is not None and staged.exists() and not original.exists():
                    # Already moved in: put it back so the caller still has it.
                    with contextlib.suppress(OSError):
                        os.replace(staged, original)
            shutil.rmtree(stage, ignore_errors=True)
            with self._cond:
                self._bytes -= size_bytes
                self._refresh_gauges()
            raise
        with self._cond:
            insort(self._items, _Item(seq, sidecar.event_id, final, size_bytes, time.time(), sidecar.evidence))
            self._refresh_gauges()
            self._cond.notify_all()

    @staticmethod
    def _place_clip(src: Path, dst: Path, *, move: bool) -> None:
        if move:
            try:
                os.replace(src, dst)
                _fsync_path(dst)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        with src.open("rb") as fin, dst.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
        if move:
            src.unlink()

    def start(self) -> None:
        """Start the drain thread (no-op if running)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="clip-upload-spool", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the drain thread; waits up to ``timeout_s`` for an upload in flight. True if it ended."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning("spool drain thread still busy after %.1f s (an upload in flight)", timeout_s)
            return False
        self._thread = None
        return True

    def pending(self) -> int:
        """Items waiting (including one being uploaded)."""
        with self._cond:
            return len(self._items)

    def pending_bytes(self) -> int:
        """Bytes on disk of waiting items (clip, sidecar and alarm frame)."""
        with self._cond:
            return self._bytes

    def oldest_age_s(self) -> float:
        """Seconds since the oldest waiting item was spooled (0.0 when empty)."""
        with self._cond:
            return self._oldest_age_locked()

    def pending_event_ids(self) -> list[str]:
        """Event ids of waiting items, oldest first."""
        with self._cond:
            return [i.event_id for i in self._items]

    def wait_drained(self, timeout_s: float) -> bool:
        """Block until no item is waiting; False if ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._items, timeout=timeout_s)

    # ------------------------------------------------------------------ drain thread

    def _run(self) -> None:
        delay_s = self.retry_initial_s
        failures = 0  # consecutive failed attempts (any item): logged loudly at first, then sparsely
        while True:
            with self._cond:
                while not self._stop and not self._items:
                    self._refresh_gauges()
                    self._cond.wait(timeout=_GAUGE_REFRESH_S)
                if self._stop:
                    return
                item = self._items[0]
                self._uploading = item
            outcome, reason = self._upload(item)
            if outcome != "retry":
                if failures and outcome == "ok":
                    logger.info(
                        "spool: upload of event %s succeeded after %d failed attempt(s)", item.event_id, failures
                    )
                failures = 0
                delay_s = self.retry_initial_s
                continue
            failures += 1
            sleep_s = random.uniform(delay_s / 2, delay_s)
            log = logger.warning if failures == 1 or failures % _WARN_EVERY_FAILURES == 0 else logger.debug
            log(
                "spool: upload of event %s failed (attempt %d, %d waiting), retrying in %.1f s: %s",
                item.event_id,
                failures,
                self.pending(),
                sleep_s,
                reason,
            )
            delay_s = min(delay_s * 2, self.retry_max_s)
            with self._cond:
                self._refresh_gauges()
                self._cond.wait_for(lambda: self._stop, timeout=sleep_s)

    def _upload(self, item: _Item) -> tuple[str, str]:
        """One attempt at the head item: (``"ok"``, ``"failed"`` (quarantined) or ``"retry"``; reason)."""
        sidecar: ClipSidecar | None = None
        reason = ""
        try:
            sidecar = ClipSidecar.from_json_bytes(item.sidecar_path.read_bytes())
            frame = item.frame_path if sidecar.alarm_frame is not None else None
            self.store.put_clip(item.clip_path, sidecar, frame_path=frame)
            if sidecar.evidence and self.evidence is not None:
                case = sidecar.export.case_number if sidecar.export is not None else self.unassigned_case
                self.evidence.mark_evidence(sidecar.object_key, case_number=case)
            outcome = "ok"
        except StorageError as exc:
            outcome, reason = "retry", str(exc)
        except (ClipIntegrityError, ValidationError, FileNotFoundError) as exc:
            outcome, reason = "failed", f"{type(exc).__name__}: {exc}"
        except OSError as exc:  # a local read error may be transient (e.g. EIO, ENFILE)
            outcome, reason = "retry", f"local I/O: {exc}"
        except Exception:
            # A bug must not silently stop the only uploader: log it with its traceback and retry
            # with backoff; the item stays on disk.
            logger.exception("spool: unexpected error uploading event %s", item.event_id)
            outcome, reason = "retry", "unexpected error"
        with self._cond:
            self._uploading = None
            if outcome != "retry" and item in self._items:
                self._items.remove(item)
                self._bytes -= item.size_bytes
                if outcome == "ok":
                    shutil.rmtree(item.path, ignore_errors=True)
                else:
                    self._quarantine(item, reason)
            self._refresh_gauges()
            self._cond.notify_all()
        if outcome == "ok" and sidecar is not None and self.on_uploaded is not None:
            self._call_on_uploaded(sidecar)
        return outcome, reason

    def _call_on_uploaded(self, sidecar: ClipSidecar) -> None:
        assert self.on_uploaded is not None
        try:
            self.on_uploaded(sidecar)
        except Exception:  # user callback: log it, never kill the drain thread
            logger.exception("spool: on_uploaded callback failed for event %s", sidecar.event_id)
