"""Pieces shared by the two ways the product is deployed.

* ``cctv run`` (:class:`cluster.runtime.Runtime`): one process starts everything, in order.
* A KubeRay RayService (``configs/kuberay/``): Serve builds each application from its
  ``import_path`` and ``args``; there is no ``cctv run`` process, so the control API's builder
  starts the detached camera controller itself (:func:`ensure_controller`).

Both go through the same functions here, so the RayService path is the one the tests run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import ray
from ray import serve
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.shard import ShardSettings
from cluster.controller import CONTROLLER_NAME, RemoteCameraController
from configs.loader import load_config
from configs.schema import AppConfig, DetectorConfig
from serve_apps.api.app import build_api_app
from serve_apps.api.auth import TokenSpecError, resolve_access
from serve_apps.detector.deployment import build_detector_app
from storage.access import S3Access, S3AccessError


class DeployError(RuntimeError):
    """The configuration cannot be deployed as asked (the message says what to change)."""


def external_s3(cfg: AppConfig, env: Mapping[str, str] = os.environ) -> S3Access:
    """Access to the configured S3 endpoint, keys from the environment variables the config names.

    Raises:
        DeployError: no endpoint configured, or a key variable unset.
    """
    st = cfg.storage
    if st.endpoint is None:
        raise DeployError("storage.endpoint is not set: a cluster deployment needs an external S3/MinIO endpoint")
    try:
        return S3Access.from_config(st, env)
    except S3AccessError as exc:
        raise DeployError(str(exc)) from None


def model_registry(cfg: AppConfig, s3: S3Access) -> S3Access:
    """The models bucket beside the clip bucket."""
    return s3.with_bucket(cfg.storage.models_bucket)


def shard_settings(cfg: AppConfig, s3: S3Access, state_dir: Path) -> ShardSettings:
    """What every decoder shard gets (its id is filled in by the controller)."""
    return ShardSettings(
        shard_id="",
        namespace=cfg.cluster.namespace,
        cluster=cfg.cluster,
        ingest=cfg.ingest,
        recorder=cfg.recorder,
        detector=cfg.detector,
        purpose_detectors=dict(cfg.purpose_detectors),
        s3=s3,
        spool_max_bytes=cfg.storage.spool_max_bytes,
        state_dir=state_dir,
        metrics_bind_host=cfg.metrics.bind_host,
        export_url_expiry_s=cfg.api.export_url_expiry_s,
        max_export_s=cfg.api.max_export_s,
        storage=cfg.storage,
    )


def ensure_controller(cfg: AppConfig, s3: S3Access, state_dir: Path) -> ray.actor.ActorHandle:
    """The named camera controller, started if it is not running (detached: it outlives its starter).

    The config's cameras go to the constructor (not a later call), so a controller that Ray
    restarts knows them too and can tell them apart from the live changes it stored.
    """
    # On the head node: the control plane must not live on a worker that an autoscaler may remove
    # or that is lost (it needs no CPU; the head fails with the GCS anyway). A soft affinity is not
    # enough: Ray placed a soft-pinned zero-CPU actor on a worker in tests.
    here = NodeAffinitySchedulingStrategy(head_node_id(), soft=False)
    return RemoteCameraController.options(
        name=CONTROLLER_NAME,
        namespace=cfg.cluster.namespace,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=here,
    ).remote(shard_settings(cfg, s3, state_dir), cfg.cluster.num_shards, list(cfg.cameras))


def head_node_id() -> str:
    """The Ray head node's id (the node offering ``node:__internal_head__``), else this process's node."""
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return str(node["NodeID"])
    return ray.get_runtime_context().get_node_id()


def detector_for(cfg: AppConfig, name: str) -> DetectorConfig:
    """The configured detector called ``name`` (its ``name``, or its ``model_name`` when unnamed).

    Raises:
        DeployError: no detector of the config has that name.
    """
    for det in cfg.all_detectors():
        if (det.name or det.model_name) == name:
            return det
    names = sorted(d.name or d.model_name for d in cfg.all_detectors())
    raise DeployError(f"no detector {name!r} in the config (it has {names})")


def _profile(args: Mapping[str, str]) -> AppConfig:
    try:
        return load_config(Path(args["config_path"]))
    except KeyError:
        raise DeployError("app builder args need 'config_path' (the profile YAML inside the pod)") from None


def detector_app(args: Mapping[str, str], env: Mapping[str, str] = os.environ) -> serve.Application:
    """The detector application ``args['detector']`` (a detector's name) of the profile at ``args['config_path']``."""
    cfg = _profile(args)
    if "detector" not in args:
        raise DeployError("detector app builder args need 'detector' (a detector's name, e.g. yolox_nano)")
    det = detector_for(cfg, args["detector"])
    s3 = external_s3(cfg, env)
    return build_detector_app(
        det, cfg.cluster.namespace, cfg.metrics.bind_host, model_registry(cfg, s3), cfg.state_dir / "model-cache"
    )


def api_app(args: Mapping[str, str], env: Mapping[str, str] = os.environ) -> serve.Application:
    """The control API application; starts the camera controller (and so the shards) if needed."""
    cfg = _profile(args)
    s3 = external_s3(cfg, env)
    try:  # a cluster deployment never makes up a token: they come from the pod's environment (a Secret)
        access = resolve_access(cfg.api.tokens_env, cfg.api.auth_required, env)
    except TokenSpecError as exc:
        raise DeployError(f"api.tokens_env: {exc}") from None
    ensure_controller(cfg, s3, cfg.state_dir)
    return build_api_app(
        CONTROLLER_NAME, cfg.cluster.namespace, tokens=access.table, api_cfg=cfg.api, s3=s3, storage_cfg=cfg.storage
    )


def detector_app_builder(args: dict[str, str]) -> serve.Application:
    """Serve ``import_path`` of a detector app in a RayService: ``args`` = ``{config_path, detector}``."""
    return detector_app(args)


def api_app_builder(args: dict[str, str]) -> serve.Application:
    """Serve ``import_path`` of the control API in a RayService: ``args`` = ``{config_path}``."""
    return api_app(args)
