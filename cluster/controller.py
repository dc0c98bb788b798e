"""CameraController: the one writer of "which camera runs on which shard".

A named Ray actor. It owns the decoder shards, places cameras on them by cost-weighted
rendezvous hashing with bounded loads (:mod:`cluster.sharding`), applies live changes (add,
remove, update, transfer), persists the inventory and assignment to S3
(:mod:`cluster.control_state`), and answers status queries for the CLI and the control API
(which reach it by name, not by import).

Shards are detached named actors, so they outlive a controller restart: a restarted
controller attaches to the shards that are still running, reads the stored state, and
changes nothing that already runs where it should.

Two ways to have shards:

* ``cluster.num_shards`` fixed shards (``shard-000``...), spread over the nodes; Ray restarts a
  crashed one (``max_restarts``), and the controller re-adds its cameras.
* ``cluster.shards_per_node``: that many shards pinned to every alive node that offers the
  ``shard_resources`` (e.g. the CPU worker group). A node that joins gets shards and the
  cameras rebalance onto them; a node that is lost takes its shards with it and their cameras
  go to the surviving shards. Their pre-roll buffers (seconds of compressed video in memory)
  are the only loss, counted in ``cctv_controller_cameras_moved_total{reason="shard_lost"}``.

A reconcile loop checks every shard each ``reconcile_interval_s``: a shard that does not
answer for ``shard_liveness_timeout_s`` is fenced (killed, so a camera never runs twice) and
its cameras placed elsewhere; a shard whose process changed (Ray restarted it) gets its
cameras back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import ray
from prometheus_client import CollectorRegistry, Counter, Gauge
from ray import ObjectRef
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.analytics.registry import build_camera_rules
from actors.shard import RemoteDecoderShard, ShardSettings, ShardStats
from cluster.acknowledgements import AcknowledgementBook
from cluster.control_state import (
    APPLIED_KEPT,
    AppliedChange,
    ChangeKind,
    ControlState,
    ControlStateError,
    ControlStateStore,
    inventory_sha256,
    merge_with_config,
)
from cluster.exports import MEDIA_POLICY, ExportDesk
from cluster.shard_ref import ShardRef
from cluster.sharding import camera_cost, moved, place
from configs.schema import CameraConfig
from contracts.cameras import CameraState, CameraStatus
from contracts.errors import (
    CameraAnalyticsError,
    DuplicateCameraError,
    RequestIdReusedError,
    UnknownCameraError,
    UnknownEventError,
)
from contracts.events import Acknowledgement, EventNotice, EventView
from contracts.exports import ExportRequest, ExportTicket
from serve_apps.metrics_export import export_metrics
from serve_apps.remote_call import TARGET_GONE, CallPolicy, ControlPlaneUnavailableError, gather
from storage.clip_store import ClipStore, StorageError
from storage.records import clip_object_key, frame_key_for

log = logging.getLogger(__name__)


def _check_analytics(cam: CameraConfig) -> None:
    """Build the camera's rules as its shard will, so that a config the shard would refuse (e.g. a calibration
    whose points define no homography) is refused before the inventory changes, not a failed start there.

    Raises:
        CameraAnalyticsError: naming the camera and why.
    """
    try:
        build_camera_rules(cam)
    except ValueError as exc:
        raise CameraAnalyticsError(f"camera {cam.id!r}: analytics not usable: {exc}") from None


CONTROLLER_NAME = "cctv-controller"
NODE_POLL_S = 5.0
RECONCILE_INTERVAL_S = 1.0
PING_TIMEOUT_S = 2.0

# The controller's own registry: it imports the shard modules but must not expose their idle series.
CONTROL_REGISTRY = CollectorRegistry(auto_describe=True)
RAY_NODES = Gauge(
    "cctv_ray_nodes", "Ray nodes the cluster's GCS knows, by state (alive, dead).", ["state"], registry=CONTROL_REGISTRY
)
SHARDS_LIVE = Gauge(
    "cctv_controller_shards", "Decoder shards, by liveness (live, lost).", ["state"], registry=CONTROL_REGISTRY
)
CAMERAS_MOVED = Counter(
    "cctv_controller_cameras_moved_total",
    "Cameras (re)started on another shard, by reason (shard_lost, shard_restarted, rebalance).",
    ["reason"],
    registry=CONTROL_REGISTRY,
)
STATE_SAVE_FAILURES = Counter(
    "cctv_controller_state_save_failures_total",
    "Failed writes of the camera inventory/assignment to S3 (retried on the next change or tick).",
    registry=CONTROL_REGISTRY,
)


def count_nodes(nodes: Iterable[Mapping[str, object]]) -> dict[str, int]:
    """Alive and dead node counts from ``ray.nodes()`` records."""
    counts = {"alive": 0, "dead": 0}
    for node in nodes:
        counts["alive" if node.get("Alive") else "dead"] += 1
    return counts


@dataclass(frozen=True, slots=True)
class Reassignment:
    """What one reconcile or change did (returned to callers and tests)."""

    started: dict[str, str]
    stopped: dict[str, str]
    reason: str


class CameraController:
    """Creates shards and owns the camera → shard assignment."""

    def __init__(
        self,
        base: ShardSettings,
        num_shards: int,
        config_cameras: list[CameraConfig] | None = None,
        reconcile_interval_s: float = RECONCILE_INTERVAL_S,
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._base = base
        self._num_shards = num_shards
        self._lock = threading.RLock()
        self._shards: dict[str, ShardRef] = {}
        self._cameras: dict[str, CameraConfig] = {}
        self._assignment: dict[str, str] = {}
        self._pending: dict[str, ShardRef] = {}  # created, not yet answering
        self._running: dict[str, str] = {}  # what the shards run, as far as the controller knows
        self._media = ClipStore.for_access(base.s3)  # alarm frames, exports and acknowledgements in the clip bucket
        self._export_desk = ExportDesk(
            self._media,
            namespace=base.namespace,
            max_export_s=base.max_export_s,
            url_expiry_s=base.export_url_expiry_s,
            locate=self._export_shard,
            shard=self._shard,
            live_shards=self._live_shards,
        )
        self._state_dirty = False
        self._applied: OrderedDict[str, AppliedChange] = OrderedDict()  # request id -> change (persisted)
        self._acks = AcknowledgementBook(self._media)  # event acknowledgements (API)
        self._stop = threading.Event()
        self._metrics_stop = self._stop
        self.metrics_address = export_metrics(
            "controller",
            "controller",
            bind_host=base.metrics_bind_host,
            namespace=base.namespace,
            registry=CONTROL_REGISTRY,
        )
        threading.Thread(target=self._node_metrics_loop, name="node-metrics", daemon=True).start()

        self._store = ControlStateStore(base.s3)
        self._base_sha = inventory_sha256(config_cameras or [])
        with self._lock:
            self._sync_shards(wait_s=180.0)
            for ref in self._shards.values():  # shards that survived a controller restart run cameras
                for cid in self._call(ref, "camera_ids") or []:
                    self._running[cid] = ref.shard_id
            stored = self._load_state()
            cameras, kept, why = merge_with_config(stored, config_cameras or [])
            log.info("camera inventory: %s", why)
            if stored is not None and stored.base_inventory_sha256 == self._base_sha:
                self._applied.update((a.request_id, a) for a in stored.applied)  # retries after a restart
            self._cameras = {c.id: c for c in cameras}
            current = {**kept, **{c: s for c, s in self._running.items() if c in self._cameras}}
            self._apply(self._place(current), "startup")
            self._save_state()
        self._reconciler = threading.Thread(
            target=self._reconcile_loop, args=(reconcile_interval_s,), name="reconcile", daemon=True
        )
        self._reconciler.start()

    # -- shards -------------------------------------------------------------------------

    def _shard_options(self, shard_id: str, node_id: str | None) -> dict[str, object]:
        cl = self._base.cluster
        opts: dict[str, object] = {
            "name": f"cctv-{shard_id}",
            "namespace": self._base.namespace,
            "num_cpus": cl.shard_num_cpus,
            "lifetime": "detached",
            "get_if_exists": True,
        }
        if cl.shard_resources:
            opts["resources"] = dict(cl.shard_resources)
        opts["scheduling_strategy"] = (
            NodeAffinitySchedulingStrategy(node_id, soft=False) if node_id is not None else "SPREAD"
        )
        return opts

    def _wanted_shards(self) -> dict[str, str | None]:
        """shard id -> node id it is pinned to (None: anywhere)."""
        per_node = self._base.cluster.shards_per_node
        if per_node is None:
            return {f"shard-{i:03d}": None for i in range(self._num_shards)}
        need = self._base.cluster.shard_resources
        wanted: dict[str, str | None] = {}
        for node in ray.nodes():
            res = node.get("Resources", {})
            if not node.get("Alive") or res.get("CPU", 0) <= 0 or any(res.get(k, 0) < v for k, v in need.items()):
                continue
            nid = node["NodeID"]
            for k in range(per_node):
                wanted[f"shard-{nid[:8]}-{k}"] = nid
        return wanted

    def _sync_shards(self, wait_s: float = 0.0) -> bool:
        """Create (or attach to) every wanted shard; True if a shard joined.

        A new shard joins once it answers; one that is still starting (or waiting for
        resources) is checked again on the next call, so no caller waits for it unless
        ``wait_s`` says so (start-up waits for all of them).
        """
        joined = False
        deadline = time.time() + wait_s
        wanted = self._wanted_shards()
        for shard_id in [s for s in self._pending if s not in wanted]:  # its node went away while it started
            with contextlib.suppress(ValueError, ray.exceptions.RayError):
                ray.kill(self._pending.pop(shard_id).actor, no_restart=True)
        for shard_id, node_id in wanted.items():
            if shard_id in self._shards or shard_id in self._pending:
                continue
            settings = dataclasses.replace(self._base, shard_id=shard_id)
            actor = RemoteDecoderShard.options(**self._shard_options(shard_id, node_id)).remote(settings)
            self._pending[shard_id] = ShardRef(shard_id, actor, node_id)
        while self._pending:
            for shard_id, ref in list(self._pending.items()):
                try:
                    inc = ray.get(ref.actor.incarnation.remote(), timeout=max(0.1, min(1.0, deadline - time.time())))
                except ray.exceptions.GetTimeoutError:
                    continue
                except TARGET_GONE as exc:
                    log.warning("shard %s failed to start (%s); retrying", shard_id, type(exc).__name__)
                    del self._pending[shard_id]
                    continue
                del self._pending[shard_id]
                ref.incarnation, ref.last_seen_ts = inc, time.time()
                self._shards[shard_id] = ref
                joined = True
                log.info("shard %s up (node %s)", shard_id, (ref.node_id or "any")[:8])
            if time.time() >= deadline:
                break
        return joined

    def _call(self, ref: ShardRef, method: str, *args: object, timeout_s: float = PING_TIMEOUT_S) -> object | None:
        """A shard method's answer, or None when the shard is dead or does not answer in ``timeout_s``.

        A shard that is restarting is retried within ``timeout_s`` (every shard method the
        controller calls is idempotent: cameras by id, exports by export id); one that died is
        not waited for: the reconcile loop fences or re-adds it.
        """
        policy = CallPolicy(deadline_s=timeout_s, retry_died=False)
        try:
            return ref.caller(self._base.namespace).call(method, lambda a: getattr(a, method).remote(*args), policy)
        except (*TARGET_GONE, ControlPlaneUnavailableError, ray.exceptions.GetTimeoutError):
            return None

    def _call_all(
        self, refs: list[ShardRef], ask: Callable[[ActorHandle], ObjectRef], *, timeout_s: float = PING_TIMEOUT_S
    ) -> dict[str, object | None]:
        """``ask`` (one call, e.g. ``lambda a: a.status.remote()``) of every shard at once; shard id -> answer,
        None for a dead or too slow shard.

        One shared deadline: a hung shard costs ``timeout_s`` once per call, not once per shard.
        """
        return gather({r.shard_id: ask(r.actor) for r in refs}, timeout_s)

    def _live_ids(self) -> list[str]:
        return sorted(sid for sid, ref in self._shards.items() if ref.live)

    def _place(self, current: Mapping[str, str], *, rebalance: bool = False) -> dict[str, str]:
        live = self._live_ids()
        if not live:
            return {}
        costs = {cid: camera_cost(c) for cid, c in self._cameras.items()}
        return place(costs, live, current, epsilon=self._base.cluster.placement_epsilon, rebalance=rebalance)

    def _apply(self, target: dict[str, str], reason: str) -> Reassignment:
        """Make the shards run ``target``: stop what runs in the wrong place, then start what is missing."""
        stop: dict[str, list[str]] = {}
        for cid, sid in self._running.items():
            if target.get(cid) != sid:
                stop.setdefault(sid, []).append(cid)
        stopped: dict[str, str] = {}
        for sid, ids in stop.items():
            ref = self._shards.get(sid)
            if ref is not None and ref.live:
                self._call(ref, "remove_cameras", ids, timeout_s=60.0)
            for cid in ids:
                stopped[cid] = sid
                self._running.pop(cid, None)
        start: dict[str, list[CameraConfig]] = {}
        for cid, sid in target.items():
            if self._running.get(cid) != sid:
                start.setdefault(sid, []).append(self._cameras[cid])
        started: dict[str, str] = {}
        for sid, cams in start.items():
            ref = self._shards[sid]
            if self._call(ref, "add_cameras", cams, timeout_s=60.0) is None:
                log.warning("shard %s did not take %d cameras; retried on the next reconcile", sid, len(cams))
                continue
            for cam in cams:
                self._running[cam.id] = sid
                started[cam.id] = sid
        self._assignment = dict(target)
        if stopped or started:
            self._state_dirty = True
            log.info("%s: started %d cameras, stopped %d", reason, len(started), len(stopped))
        return Reassignment(started, stopped, reason)

    # -- persistence --------------------------------------------------------------------

    def _load_state(self) -> ControlState | None:
        try:
            return self._store.load()
        except (StorageError, ControlStateError) as exc:
            log.error("stored camera state not usable (%s); starting from the config", exc)
            return None

    def _save_state(self) -> None:
        try:
            self._store.save(
                self._base_sha, list(self._cameras.values()), self._assignment, list(self._applied.values())
            )
            self._state_dirty = False
        except StorageError as exc:
            STATE_SAVE_FAILURES.inc()
            self._state_dirty = True
            log.warning("could not save the camera state (%s); will retry", exc)

    # -- reconcile ----------------------------------------------------------------------

    def reconcile(self) -> Reassignment:
        """Check every shard once and repair what changed (the loop calls this every interval)."""
        with self._lock:
            now = time.time()
            lost: list[str] = []
            restarted: list[str] = []
            live = [r for r in self._shards.values() if r.live]
            answers = self._call_all(live, lambda a: a.incarnation.remote())
            for ref in live:
                inc = answers[ref.shard_id]
                if inc is not None:
                    if ref.incarnation is not None and inc != ref.incarnation:
                        restarted.append(ref.shard_id)
                    ref.incarnation, ref.last_seen_ts = inc, now  # type: ignore[assignment]
                elif now - ref.last_seen_ts > self._base.cluster.shard_liveness_timeout_s:
                    lost.append(ref.shard_id)
            for sid in lost:
                ref = self._shards[sid]
                ref.live = False
                # Fence: a shard we gave up on must not keep streaming its cameras.
                with contextlib.suppress(ValueError, ray.exceptions.RayError):
                    ray.kill(ref.actor, no_restart=True)
                orphans = [c for c, s in self._running.items() if s == sid]
                for cid in orphans:
                    self._running.pop(cid)
                CAMERAS_MOVED.labels("shard_lost").inc(len(orphans))
                log.warning("shard %s lost with %d cameras; placing them on the live shards", sid, len(orphans))
            for sid in restarted:
                dropped = [c for c, s in self._running.items() if s == sid]
                for cid in dropped:
                    self._running.pop(cid)
                CAMERAS_MOVED.labels("shard_restarted").inc(len(dropped))
                log.warning("shard %s restarted by Ray; re-adding its %d cameras", sid, len(dropped))
            for sid in [s for s, r in self._shards.items() if not r.live]:
                del self._shards[sid]  # forgotten: a new actor under the same name may join later
            joined = self._sync_shards()
            target = self._place(self._assignment, rebalance=joined)
            before = dict(self._assignment)
            result = self._apply(target, "reconcile")
            if joined:
                CAMERAS_MOVED.labels("rebalance").inc(len(moved(before, target)))
            SHARDS_LIVE.labels("live").set(len(self._live_ids()))
            SHARDS_LIVE.labels("pending").set(len(self._pending))
            if self._state_dirty:
                self._save_state()
            return result

    def _reconcile_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.reconcile()
            except (ray.exceptions.RayError, StorageError, OSError) as exc:
                log.error("reconcile failed (%s: %s); retrying", type(exc).__name__, exc)

    def _node_metrics_loop(self) -> None:
        """Ray exports no node metric to our endpoints: count alive/dead nodes here for the NodeLost alert."""
        while True:
            try:
                for state, n in count_nodes(ray.nodes()).items():
                    RAY_NODES.labels(state).set(n)
            except Exception as exc:  # a GCS hiccup must not end the loop
                log.warning("could not list Ray nodes: %s", exc)
            if self._metrics_stop.wait(NODE_POLL_S):
                return

    # -- camera changes -----------------------------------------------------------------

    def shard_ids(self) -> list[str]:
        with self._lock:
            return self._live_ids()

    def _replay(self, request_id: str | None, kind: ChangeKind) -> AppliedChange | None:
        """The change already applied under ``request_id`` (caller holds ``_lock``).

        Raises:
            RequestIdReusedError: the id was used for another kind of change (nothing applied).
        """
        if request_id is None:
            return None
        done = self._applied.get(request_id)
        if done is not None and done.kind != kind:
            raise RequestIdReusedError(f"request id {request_id!r} was already used for a {done.kind}, not a {kind}")
        if done is not None:
            log.info("%s request %s already applied at %.0f: answered again", kind, request_id, done.applied_ts)
        return done

    def _remember(
        self, request_id: str | None, kind: ChangeKind, camera_ids: list[str], placed: dict[str, str] | None = None
    ) -> None:
        """Record an applied change (caller holds ``_lock`` and saves the state right after)."""
        if request_id is None:
            return
        change = AppliedChange(
            request_id=request_id, kind=kind, camera_ids=camera_ids, placed=placed or {}, applied_ts=time.time()
        )
        self._applied[request_id] = change
        while len(self._applied) > APPLIED_KEPT:
            self._applied.popitem(last=False)

    def add_cameras(
        self, cameras: list[CameraConfig], *, strict: bool = False, request_id: str | None = None
    ) -> dict[str, str]:
        """Place and start new cameras; returns camera id → shard id of those added.

        Args:
            cameras: the cameras.
            strict: refuse ids already in the inventory instead of skipping them.
            request_id: the caller's id for this change; the same id again (a retry) answers the
                first call's result and changes nothing.

        Raises:
            DuplicateCameraError: ``strict`` and an id is already in the inventory.
            CameraAnalyticsError: a new camera's analytics cannot be built (nothing is added).
        """
        with self._lock:
            if (done := self._replay(request_id, "add")) is not None:
                return dict(done.placed)
            dupes = [c.id for c in cameras if c.id in self._cameras]
            if strict and dupes:
                raise DuplicateCameraError(f"cameras already exist: {dupes}")
            new = [c for c in cameras if c.id not in self._cameras]
            for cam in new:
                _check_analytics(cam)
            for cam in new:
                self._cameras[cam.id] = cam
            result = self._apply(self._place(self._assignment), "add")
            placed = {c.id: result.started.get(c.id, self._assignment.get(c.id, "")) for c in new}
            self._remember(request_id, "add", [c.id for c in new], placed)
            self._save_state()
            return placed

    def remove_cameras(self, camera_ids: list[str], *, request_id: str | None = None) -> list[str]:
        """Stop and forget cameras; returns the ids that were in the inventory (see ``add_cameras``
        for ``request_id``)."""
        with self._lock:
            if (done := self._replay(request_id, "remove")) is not None:
                return list(done.camera_ids)
            removed = [cid for cid in camera_ids if self._cameras.pop(cid, None) is not None]
            self._apply(self._place(self._assignment), "remove")
            self._remember(request_id, "remove", removed)
            self._save_state()
            return removed

    def update_camera(self, camera: CameraConfig, *, request_id: str | None = None) -> str:
        """Replace one camera's configuration; only that camera restarts. Returns its shard (see
        ``add_cameras`` for ``request_id``).

        Raises:
            UnknownCameraError: no camera with that id.
            CameraAnalyticsError: the new config's analytics cannot be built (nothing changes).
        """
        with self._lock:
            if (done := self._replay(request_id, "update")) is not None:
                return done.placed.get(camera.id, "")
            return self._update(camera, request_id, "update")

    def _update(self, camera: CameraConfig, request_id: str | None, kind: ChangeKind) -> str:
        """Replace a camera's config (caller holds ``_lock``). Returns its shard."""
        if camera.id not in self._cameras:
            raise UnknownCameraError(camera.id)
        if self._cameras[camera.id] == camera and request_id is None:
            return self._assignment.get(camera.id, "")
        if self._cameras[camera.id] != camera:
            _check_analytics(camera)
            shard = self._running.pop(camera.id, None)
            ref = self._shards.get(shard) if shard is not None else None
            if ref is not None and ref.live:
                self._call(ref, "remove_cameras", [camera.id], timeout_s=60.0)
            self._cameras[camera.id] = camera
            self._apply(self._place(self._assignment), kind)
        where = self._assignment.get(camera.id, "")
        self._remember(request_id, kind, [camera.id], {camera.id: where})
        self._save_state()
        return where

    def transfer_camera(self, camera_id: str, district: str, *, request_id: str | None = None) -> CameraConfig:
        """Move a camera to another district (its labels and API answers change; it stays on its
        shard). Returns its new config (see ``add_cameras`` for ``request_id``).

        Raises:
            UnknownCameraError: no camera with that id.
        """
        with self._lock:
            cam = self._cameras.get(camera_id)
            if cam is None:
                raise UnknownCameraError(camera_id)
            if self._replay(request_id, "transfer") is not None:
                return cam
            new = CameraConfig.model_validate({**cam.model_dump(), "district": district})
            self._update(new, request_id, "transfer")
            return new

    def rebalance(self) -> Reassignment:
        """Move cameras off shards above the load bound (also done when shards join)."""
        with self._lock:
            before = dict(self._assignment)
            target = self._place(self._assignment, rebalance=True)
            result = self._apply(target, "rebalance")
            CAMERAS_MOVED.labels("rebalance").inc(len(moved(before, target)))
            self._save_state()
            return result

    # -- queries ------------------------------------------------------------------------

    def assignment(self) -> dict[str, str]:
        with self._lock:
            return dict(self._assignment)

    def cameras(self) -> list[CameraConfig]:
        with self._lock:
            return sorted(self._cameras.values(), key=lambda c: c.id)

    def camera(self, camera_id: str) -> CameraConfig:
        with self._lock:
            if camera_id not in self._cameras:
                raise UnknownCameraError(camera_id)
            return self._cameras[camera_id]

    def _gather(self, ask: Callable[[ActorHandle], ObjectRef]) -> list[object]:
        """One answer per live shard that answered (a lost shard is skipped, not an error)."""
        with self._lock:
            refs = [r for r in self._shards.values() if r.live]
        return [part for part in self._call_all(refs, ask, timeout_s=10.0).values() if part is not None]

    def status(self) -> list[CameraStatus]:
        out: list[CameraStatus] = [s for part in self._gather(lambda a: a.status.remote()) for s in part]  # type: ignore[attr-defined]
        seen = {s.camera_id for s in out}
        with self._lock:
            waiting = [c for cid, c in self._cameras.items() if cid not in seen]
            where = dict(self._assignment)
        now = time.time()
        for cam in waiting:  # in the inventory but on no answering shard (being placed, or its shard lost)
            out.append(_waiting_status(cam, where.get(cam.id, ""), now))
        return sorted(out, key=lambda s: s.camera_id)

    def stats(self) -> list[ShardStats]:
        return self._gather(lambda a: a.stats.remote())  # type: ignore[return-value]

    def events(self, since_ts: float = 0.0) -> list[EventNotice]:
        out: list[EventNotice] = [e for part in self._gather(lambda a: a.recent_events.remote(since_ts)) for e in part]  # type: ignore[attr-defined]
        return sorted(out, key=lambda e: e.received_ts)

    # -- events for the control API: query and acknowledge ------------------------------
    # Acknowledgements are kept in the bucket (control/acks/<event_id>.json), so a restarted
    # controller still knows them; the transitions themselves live in the shards' recent buffers.

    def event_view(self, since_ts: float = 0.0) -> EventView:
        """Transitions received since ``since_ts``, each camera's district, and every acknowledgement."""
        notices = tuple(self.events(since_ts))
        with self._lock:
            districts = {cid: cam.district for cid, cam in self._cameras.items()}
        return EventView(notices=notices, districts=districts, acks=self._acks.all())

    def acknowledge_event(self, event_id: str, operator: str, note: str, by: str) -> Acknowledgement:
        """Record that ``operator`` (through the API caller ``by``) saw an event; returns the record.

        Raises:
            UnknownEventError: no shard holds a transition of that event.
            EventAlreadyAcknowledgedError: acknowledged before by someone else or with another note
                (the message says by whom); the same acknowledgement again returns the first record.
            StorageError: the acknowledgement could not be stored (nothing recorded).
        """
        if not any(n.transition.event_id == event_id for n in self.events(0.0)):
            raise UnknownEventError(event_id)
        return self._acks.acknowledge(event_id, operator, note, by)

    # -- media: snapshots and exports ---------------------------------------------------
    # Snapshots: the shard that runs a camera keeps a reference to its latest sampled frame and
    # encodes the JPEG only when asked. Exports (112 police, 119 fire) are the ExportDesk's
    # (cluster/exports.py); the controller tells it where each camera runs.

    def alarm_frame(self, event_id: str) -> bytes | None:
        """The JPEG of the frame an event opened on, its region boxed; None while there is none (yet).

        The shards keep their latest alarm frames in memory (so the frame is there the second the event opens);
        once forgotten there (a restarted or busy shard) it is read from beside the event's clip in the bucket,
        where the recorder stores it with the clip (after the event ends).

        Raises:
            UnknownEventError: no shard holds a transition of that event.
            StorageError: the bucket did not answer (the frame may exist: retry).
        """
        notices = [n for n in self.events(0.0) if n.transition.event_id == event_id]
        if not notices:
            raise UnknownEventError(event_id)
        for frame in self._gather(lambda a: a.alarm_frame.remote(event_id)):
            if frame is not None:
                return frame.jpeg  # type: ignore[attr-defined]
        first = min(notices, key=lambda n: n.transition.ts).transition
        day = datetime.fromtimestamp(first.started_at, tz=UTC).date()
        key = frame_key_for(clip_object_key(first.camera_id, event_id, day))
        try:
            return self._media.get_bytes(key)
        except StorageError as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise

    def snapshot(self, camera_id: str) -> bytes | None:
        """JPEG of the camera's latest sampled frame; None while it has none (or no shard answers).

        Raises:
            UnknownCameraError: no camera with that id.
        """
        with self._lock:
            if camera_id not in self._cameras:
                raise UnknownCameraError(camera_id)
            ref = self._media_shard(camera_id)
        if ref is None:
            return None
        try:
            return ref.caller(self._base.namespace).call(
                "snapshot_jpeg", lambda a: a.snapshot_jpeg.remote(camera_id), MEDIA_POLICY
            )
        except KeyError:  # the camera moved off that shard meanwhile
            return None
        except (*TARGET_GONE, ControlPlaneUnavailableError, ray.exceptions.GetTimeoutError) as exc:
            log.warning("snapshot of camera %s: shard %s did not answer (%s)", camera_id, ref.shard_id, exc)
            return None

    def export_clip(self, req: ExportRequest, *, request_id: str | None = None) -> ExportTicket:
        """Start an emergency export (see :meth:`cluster.exports.ExportDesk.start`)."""
        return self._export_desk.start(req, request_id=request_id)

    def export_status(self, export_id: str) -> ExportTicket:
        """Where an export stands (see :meth:`cluster.exports.ExportDesk.status`)."""
        return self._export_desk.status(export_id)

    def _media_shard(self, camera_id: str) -> ShardRef | None:
        """The live shard running a camera (caller holds ``_lock``)."""
        sid = self._running.get(camera_id)
        ref = self._shards.get(sid) if sid is not None else None
        return ref if ref is not None and ref.live else None

    def _export_shard(self, camera_id: str) -> ShardRef | None:
        """The live shard an export of ``camera_id`` is recorded on; None while it is being placed.

        Raises:
            UnknownCameraError: no camera with that id.
        """
        with self._lock:
            if camera_id not in self._cameras:
                raise UnknownCameraError(camera_id)
            return self._media_shard(camera_id)

    def _shard(self, shard_id: str) -> ShardRef | None:
        with self._lock:
            return self._shards.get(shard_id)

    def _live_shards(self) -> list[ShardRef]:
        with self._lock:
            return [r for r in self._shards.values() if r.live]

    def stop(self, drain_timeout_s: float = 60.0) -> list[ShardStats]:
        """Stop every shard (each finishes its clips and drains its upload spool)."""
        self._stop.set()
        with self._lock:
            if self._state_dirty:
                self._save_state()
            live = [s for s in self._shards.values() if s.live]
            answers = gather({s.shard_id: s.actor.stop.remote(drain_timeout_s) for s in live}, drain_timeout_s + 30)
            stats: list[ShardStats] = [a for a in answers.values() if a is not None]
            for shard_id in [sid for sid, a in answers.items() if a is None]:
                log.warning("shard %s did not stop cleanly (no answer in %.0f s)", shard_id, drain_timeout_s + 30)
            for s in self._shards.values():
                with contextlib.suppress(ValueError, ray.exceptions.RayError):
                    ray.kill(s.actor, no_restart=True)
            self._shards.clear()
            return stats


def _waiting_status(cam: CameraConfig, shard: str, now: float) -> CameraStatus:
    return CameraStatus(
        camera_id=cam.id,
        district=cam.district,
        shard=shard,
        state=CameraState.CONNECTING,
        reason="waiting for a shard",
        since_ts=now,
        last_packet_ts=None,
        packets=0,
        keyframes=0,
        frames_decoded=0,
        frames_sampled=0,
        frames_static=0,
        decode_errors=0,
        decoder="",
        frames_dropped=0,
        detections_received=0,
        reconnects=0,
        events_opened=0,
        width=None,
        height=None,
        codec=None,
    )


# Restarted by Ray as often as it dies (-1): the control plane is a singleton with nothing to fall
# back to, its state is in S3 and the shards outlive it, so a restart costs seconds and no camera.
RemoteCameraController = ray.remote(num_cpus=0, max_concurrency=8, max_restarts=-1)(CameraController)
