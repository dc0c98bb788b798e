"""configs/profiles/: laptop, gpu-node and gwangju load with the real loader and fit their machines."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.plan import PlanRequest, make_plan
from configs.loader import ConfigError, load_config
from configs.schema import AppConfig

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "configs" / "profiles"
NAMES = ("laptop", "gpu-node", "gwangju")
RAY_RESERVED_CPUS = 0.5  # left to raylet, GCS and Serve's controller/proxy on a one-node profile


def load(name: str) -> AppConfig:
    return load_config(PROFILES / f"{name}.yaml", env={})


def cpu_demand(cfg: AppConfig) -> float:
    detectors = sum(
        (d.autoscaling.max_replicas if d.autoscaling else d.num_replicas) * d.num_cpus_per_replica
        for d in cfg.all_detectors()
    )
    return cfg.cluster.num_shards * cfg.cluster.shard_num_cpus + detectors


def gpu_demand(cfg: AppConfig) -> float:
    return sum(
        (d.autoscaling.max_replicas if d.autoscaling else d.num_replicas) * d.num_gpus_per_replica
        for d in cfg.all_detectors()
    )


def test_the_three_profiles_exist() -> None:
    assert sorted(p.stem for p in PROFILES.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_profile_loads(name: str) -> None:
    cfg = load(name)
    assert cfg.cameras == []  # inventories are the site's, added by cameras_file: or the API
    assert cfg.storage.access_key_env and cfg.storage.secret_key_env


def test_laptop_fits_its_cpus_without_a_gpu() -> None:
    cfg = load("laptop")
    assert cfg.cluster.local_num_cpus is not None
    assert cpu_demand(cfg) <= cfg.cluster.local_num_cpus - RAY_RESERVED_CPUS
    assert gpu_demand(cfg) == 0
    assert all(d.device == "cpu" and d.backend == "onnxruntime" for d in cfg.all_detectors())
    assert cfg.storage.endpoint is None  # embedded S3
    assert cfg.metrics.bind_host == "127.0.0.1"


def test_gpu_node_fits_16_cores_and_one_gpu() -> None:
    cfg = load("gpu-node")
    assert cpu_demand(cfg) <= 16 - 2
    assert 0 < gpu_demand(cfg) <= 1
    assert all(d.device == "cuda" and d.backend == "torch" and d.half for d in cfg.all_detectors())


GWANGJU_NODE_CORES = 16  # the decode-gpu worker group's node (configs/kuberay/rayservice.yaml)
GWANGJU_GPU_IMAGES_PER_S = 2000.0  # ASSUMED in the profile's sizing: no GPU has been measured yet


def test_gwangju_is_a_cluster_profile_sized_by_the_plan() -> None:
    cfg = load("gwangju")
    assert cfg.storage.endpoint and cfg.storage.secure
    assert cfg.cluster.serve_http_host == "0.0.0.0"
    assert all(d.device == "cuda" for d in cfg.all_detectors())
    assert f"--gpu-images-per-s {GWANGJU_GPU_IMAGES_PER_S:g}" in (PROFILES / "gwangju.yaml").read_text()
    req = PlanRequest(
        cameras=10_069,
        resolution="360p",
        fps=15,
        analytics_fps=1,
        mode="keyframe",
        receiver=cfg.ingest.rtsp_receiver,
        routing=cfg.cluster.detector_routing,
        node_cores=GWANGJU_NODE_CORES,
        gpus_per_node=1,
        gpu_images_per_s=GWANGJU_GPU_IMAGES_PER_S,
    )
    plan = make_plan(req)
    assert cfg.cluster.detector_routing == "same_node_first"
    (mixed,) = [g for g in plan.node_groups if g.name == "decode+gpu"]
    per_node = cfg.cluster.shards_per_node
    assert per_node is not None, "the mixed layout pins shards per node"
    assert cfg.cluster.shard_num_cpus == plan.suggested_shard_num_cpus
    working = (mixed.nodes - req.spare_nodes) * per_node  # with the spare node down or busy elsewhere
    assert plan.suggested_num_shards <= working <= 1.25 * plan.suggested_num_shards
    # Every node runs one replica of every detector: replicas follow the plan's node count.
    for d in cfg.all_detectors():
        assert d.num_replicas == mixed.nodes and d.max_replicas_per_node == 1 and d.autoscaling is None, d.app_name


def test_a_profile_with_an_unknown_key_does_not_load(tmp_path: Path) -> None:
    text = (PROFILES / "gwangju.yaml").read_text().replace("  shards_per_node: 8", "  shard_per_node: 8")
    broken = tmp_path / "gwangju.yaml"
    broken.write_text(text)
    with pytest.raises(ConfigError, match=r"cluster\.shard_per_node"):
        load_config(broken, env={})
