"""The one place that starts everything and stops it in reverse.

Order of start: state dir → object store (embedded SeaweedFS unless an endpoint is
configured; evidence bucket, clip expiry rule, daily manifest writer) and, beside it, Ray (local
unless an address is configured) → metrics target registry → Serve apps (detector, control API) →
camera controller and its shards → cameras → Prometheus discovery file. :meth:`Runtime.stop`
undoes exactly what was started, last first, and keeps going if one step fails so nothing is
left running.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray import serve

from actors.shard import ShardStats
from cluster.controller import CONTROLLER_NAME
from cluster.deploy import DeployError, ensure_controller, external_s3, model_registry
from cluster.models import fire_smoke_model_problems, seed_registry
from cluster.ray_session import shutdown_ray
from configs.schema import AppConfig, CameraConfig
from serve_apps.api.app import API_APP, build_api_app
from serve_apps.api.auth import TokenSpecError, resolve_access
from serve_apps.detector.deployment import build_detector_app, detector_route
from serve_apps.metrics_export import TARGETS_ACTOR, MetricsTargets, file_sd
from serve_apps.remote_call import READ, WRITE, ActorCaller, CallPolicy, ControlPlaneUnavailableError
from storage.access import S3Access
from storage.clip_store import ClipStore, StorageError
from storage.embedded_s3 import EmbeddedS3
from storage.evidence import DailyManifestWriter, EvidenceStore
from storage.model_store import ModelStore

log = logging.getLogger(__name__)

CONTROLLER_START = CallPolicy(deadline_s=300.0, attempt_timeout_s=240.0)
"""Its constructor waits up to 180 s for every shard to answer."""
CONTROLLER_STOP = CallPolicy(deadline_s=200.0)
"""Shards drain their clips and spools (60 s each, in parallel)."""
SD_READ = CallPolicy(deadline_s=10.0)


APPS_DELETE_TIMEOUT_S = 120.0


def _delete_apps(names: list[str]) -> None:
    """Delete Serve apps side by side (``serve.delete`` waits ~3 s for each in turn) and wait until all are gone.

    Raises:
        TimeoutError: one of them was still listed after ``APPS_DELETE_TIMEOUT_S``; names it.
    """
    for name in names:
        serve.delete(name, _blocking=False)
    deadline = time.monotonic() + APPS_DELETE_TIMEOUT_S
    while left := sorted(set(names) & set(serve.status().applications)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Serve apps {left} still present {APPS_DELETE_TIMEOUT_S:.0f} s after delete")
        time.sleep(0.2)


class StartupError(RuntimeError):
    """The job cannot start as configured (the message says what to change)."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a user looks once the job runs."""

    serve_url: str
    dashboard_url: str | None
    s3_endpoint: str
    bucket: str
    prometheus_file_sd: Path
    ray_logs: str | None
    api_token: str | None = field(default=None, repr=False)  # an admin token of the API (never logged)
    api_token_file: Path | None = None  # where the demo's generated admin token is kept (mode 0600)


@dataclass
class _Step:
    name: str
    undo: Callable[[], None]


@dataclass
class Runtime:
    """Starts the job described by an :class:`AppConfig`; a context manager.

    Args:
        cfg: The validated configuration.
        include_dashboard: Start Ray's dashboard with a local Ray (costs ~150 MB).
        ray_init_kwargs: Extra arguments for a local ``ray.init`` (tests shrink memory).
    """

    cfg: AppConfig
    include_dashboard: bool = True
    ray_init_kwargs: dict[str, object] = field(default_factory=dict)
    endpoints: Endpoints | None = None
    store: ClipStore | None = None
    controller: ray.actor.ActorHandle | None = None
    _controller: ActorCaller | None = None
    _steps: list[_Step] = field(default_factory=list)
    _sd_stop: threading.Event = field(default_factory=threading.Event)
    final_stats: list[ShardStats] = field(default_factory=list)
    _ray_info: dict[str, str] = field(default_factory=dict)
    stored_clips: list[str] = field(default_factory=list)
    """Clips this run stored: in the bucket at stop and not at start (a state dir keeps earlier runs' clips)."""
    _clips_at_start: frozenset[str] = frozenset()

    def __enter__(self) -> Runtime:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start ------------------------------------------------------------------------------

    def start(self) -> Endpoints:
        cfg = self.cfg
        state = cfg.state_dir.resolve()
        state.mkdir(parents=True, exist_ok=True)
        # What the config and environment alone decide is checked before anything starts: a missing key or a
        # bad token table is refused at once, not after a Ray start and stop.
        external = self._external_s3()
        try:
            access = resolve_access(cfg.api.tokens_env, cfg.api.auth_required, demo_state_dir=state)
        except TokenSpecError as exc:
            raise StartupError(f"api.tokens_env: {exc}") from None

        # The object store starts beside Ray: weed and its buckets (~1.2 s on 2 cores) fit inside ray.init
        # (~4 s), which stays on this thread (it installs signal handlers). Ray's undo is pushed once the
        # store's steps are, whichever failed, so that stop() still ends Ray before the store.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="start-storage") as pool:
            storage = pool.submit(self._start_storage, state, external)
            try:
                started_ray, ray_step = self._start_ray(state)
            except BaseException:
                futures.wait([storage])
                if (exc := storage.exception()) is not None:
                    log.error("the object store failed to start as well: %s", exc)
                raise
            try:
                s3 = storage.result()
            finally:
                if ray_step is not None:
                    self._steps.append(ray_step)
        ns = cfg.cluster.namespace
        registry = MetricsTargets.options(name=TARGETS_ACTOR, namespace=ns, get_if_exists=True).remote()
        self._push("metrics registry", lambda: ray.kill(registry))

        serve.start(http_options={"host": cfg.cluster.serve_http_host, "port": cfg.cluster.serve_http_port})
        # Our own Serve (started_ray) ends with our Ray: nothing to undo. A graceful serve.shutdown() first cost
        # 2.3-2.8 s of every stop and drained nothing, since the controller step has stopped every shard (the only
        # callers of the detectors) by then and the API has no work that outlives its request.
        models = self._model_registry(s3, state)
        targets = [
            serve.RunTarget(
                build_detector_app(det, ns, cfg.metrics.bind_host, models, state / "model-cache"),
                name=det.app_name,
                route_prefix=detector_route(det),
            )
            for det in cfg.all_detectors()
        ]
        targets.append(
            serve.RunTarget(
                build_api_app(
                    CONTROLLER_NAME, ns, tokens=access.table, api_cfg=cfg.api, s3=s3, storage_cfg=cfg.storage
                ),
                name=API_APP,
                route_prefix="/",
            )
        )
        # One deploy for every app: their replicas start side by side (2-3 s less than one after the other),
        # and the undo is pushed first, so that an app that fails to start is removed with the others.
        self._push_app_delete("serve apps", [t.name for t in targets], started_ray)
        serve.run_many(targets)

        controller = ensure_controller(cfg, s3, state)
        self._controller = ActorCaller(CONTROLLER_NAME, ns, controller)
        self._controller.call("shard_ids", lambda c: c.shard_ids.remote(), CONTROLLER_START)  # shards are up
        self.controller = controller
        self._push("controller", self._stop_controller)

        sd_path = state / "prometheus" / "targets.json"
        sd_thread = threading.Thread(target=self._write_file_sd, args=(registry, sd_path), daemon=True)
        sd_thread.start()
        self._push("prometheus file_sd", lambda: (self._sd_stop.set(), sd_thread.join(5.0)))

        http = cfg.cluster.serve_http_host
        self.endpoints = Endpoints(
            serve_url=f"http://{http}:{cfg.cluster.serve_http_port}",
            dashboard_url=self._ray_info.get("dashboard_url"),
            s3_endpoint=s3.endpoint,
            bucket=s3.bucket,
            prometheus_file_sd=sd_path,
            ray_logs=self._ray_info.get("logs"),
            api_token=access.admin_token,
            api_token_file=access.token_file,
        )
        return self.endpoints

    def add_cameras(self, cameras: list[CameraConfig]) -> dict[str, str]:
        assert self._controller is not None, "runtime not started"
        req = f"runtime/{uuid.uuid4().hex}"  # one change, however often the call is retried
        return self._controller.call("add_cameras", lambda c: c.add_cameras.remote(cameras, request_id=req), WRITE)

    def assignment(self) -> dict[str, str]:
        """Camera id → shard id, as the controller placed them."""
        assert self._controller is not None, "runtime not started"
        return self._controller.call("assignment", lambda c: c.assignment.remote(), READ)

    def _start_storage(self, state: Path, external: S3Access | None) -> S3Access:
        """The object store (``external``, or an embedded one where None), the clip bucket and the evidence
        store; runs beside :meth:`_start_ray`."""
        s3 = external if external is not None else self._start_embedded_s3(state)
        self.store = ClipStore.for_access(s3)
        try:
            self.store.ensure_bucket()
            self._clips_at_start = frozenset(self.store.list_clips("clips/"))
        except StorageError as exc:  # names the endpoint and what failed
            raise StartupError(f"clip store: {exc}") from None
        self._push("clip inventory", self._take_clip_inventory)  # runs after shards drained, before S3 stops
        # Evidence: the object-locked bucket, the clips' expiry rule, and yesterday's manifest each night.
        evidence = EvidenceStore(s3, self.cfg.storage)
        try:
            evidence.ensure_buckets()
            evidence.apply_lifecycle()
        except StorageError as exc:
            raise StartupError(f"evidence store at {s3.endpoint}: {exc}") from None
        manifests = DailyManifestWriter(evidence)
        manifests.start()
        self._push("daily manifests", manifests.stop)
        return s3

    def _external_s3(self) -> S3Access | None:
        """Access to the configured S3 endpoint, or None where the embedded store is to start."""
        if self.cfg.storage.endpoint is None:
            return None
        try:
            return external_s3(self.cfg)
        except DeployError as exc:
            raise StartupError(str(exc)) from None

    def _start_embedded_s3(self, state: Path) -> S3Access:
        s3 = EmbeddedS3(state / "s3")
        s3.start()
        self._push("embedded S3", s3.stop)
        return s3.access(self.cfg.storage.bucket)

    def _model_registry(self, s3: S3Access, state: Path) -> S3Access:
        """The ``models`` bucket beside the clips; seeded from models_dir with any version it lacks."""
        registry = model_registry(self.cfg, s3)
        store = ModelStore(registry, cache_dir=state / "model-cache")
        store.ensure_bucket()
        for det in self.cfg.all_detectors():
            if det.model_version is not None:
                seed_registry(store, Path(det.models_dir), [(det.model_name, det.model_version)])
        # A learned fire/smoke source needs its model's classes, which only the manifests tell.
        problems = fire_smoke_model_problems(self.cfg, store.get_manifest)
        if problems:
            raise StartupError("; ".join(problems))
        return registry

    def _push_app_delete(self, step: str, app_names: list[str], own_serve: bool) -> None:
        """Undo Serve apps: deleted by name on a shared cluster; when Serve is ours it ends with our Ray."""
        if not own_serve:
            self._push(step, lambda: _delete_apps(app_names))

    def _start_ray(self, state: Path) -> tuple[bool, _Step | None]:
        """Connect to the configured cluster or start a local one.

        Returns:
            Whether we started it, and the step that undoes what was done (for the caller to push).
        """
        if ray.is_initialized():
            return False, None
        cl = self.cfg.cluster
        if cl.ray_address:
            ray.init(address=cl.ray_address, namespace=cl.namespace, log_to_driver=False)
            return False, _Step("ray connection", shutdown_ray)
        # A local demo/test cluster: no usage reporting; token auth off (production keeps it on).
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        kwargs: dict[str, object] = {
            "address": "local",
            "namespace": cl.namespace,
            "include_dashboard": self.include_dashboard,
            "log_to_driver": False,
        }
        if cl.local_num_cpus is not None:
            kwargs["num_cpus"] = cl.local_num_cpus
        kwargs.update(self.ray_init_kwargs)
        ctx = ray.init(**kwargs)
        if ctx.dashboard_url:
            self._ray_info["dashboard_url"] = f"http://{ctx.dashboard_url}"
        session_dir = ctx.address_info.get("session_dir")
        if session_dir:
            self._ray_info["logs"] = str(Path(session_dir) / "logs")
        return True, _Step("local ray", shutdown_ray)

    def _stop_controller(self) -> None:
        if self.controller is None or self._controller is None:
            return
        self.final_stats = self._controller.call("stop", lambda c: c.stop.remote(), CONTROLLER_STOP)
        ray.kill(self._controller.handle())  # the handle now held (a restarted controller has a new one)
        self.controller = self._controller = None

    def _take_clip_inventory(self) -> None:
        if self.store is not None:
            self.stored_clips = [k for k in self.store.list_clips("clips/") if k not in self._clips_at_start]

    def _write_file_sd(self, registry: ray.actor.ActorHandle, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        targets = ActorCaller(TARGETS_ACTOR, self.cfg.cluster.namespace, registry)
        while not self._sd_stop.is_set():
            try:
                doc = file_sd(targets.call("targets", lambda r: r.targets.remote(), SD_READ))
            except (ray.exceptions.RayError, ControlPlaneUnavailableError) as exc:
                log.warning("could not read metrics targets: %s", exc)
            else:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(doc, indent=1))
                tmp.replace(path)
            self._sd_stop.wait(2.0)

    # -- stop -------------------------------------------------------------------------------

    def _push(self, name: str, undo: Callable[[], object]) -> None:
        self._steps.append(_Step(name, lambda: undo() and None))

    def stop(self) -> None:
        """Undo every started step, last first; a failing step is logged and skipped."""
        while self._steps:
            step = self._steps.pop()
            t0 = time.monotonic()
            try:
                step.undo()
            except Exception as exc:
                log.error("stopping %s failed: %s", step.name, exc)
            else:
                log.info("stopped %s (%.1f s)", step.name, time.monotonic() - t0)

    def stats(self) -> list[ShardStats]:
        assert self._controller is not None, "runtime not started"
        return self._controller.call("stats", lambda c: c.stats.remote(), READ)
