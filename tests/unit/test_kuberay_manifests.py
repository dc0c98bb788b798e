"""configs/kuberay/: the RayService and RayCluster validate against KubeRay's CRD schema and agree with
the Gwangju profile (placement, resources, secrets, config mount, Prometheus discovery).

The CRD's openAPIV3Schema is turned into a strict JSON schema: an object schema that lists
``properties`` (and neither ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields``)
rejects unknown fields, as ``kubectl apply --validate=strict`` does (by default the API server
would silently prune them, so a misspelt field would just vanish); ``nullable`` admits null;
``x-kubernetes-int-or-string`` admits both; ``format: int32/int64`` become bounds. CEL rules
(``x-kubernetes-validations``) are not evaluated here.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from configs.loader import load_config
from configs.schema import AppConfig
from serve_apps.detector.deployment import detector_route

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CCTV_SHARED_DIR", ROOT.parent / "shared")).resolve()
SCHEMA_DIR = SHARED / "schemas" / "kuberay"
KUBERAY = ROOT / "configs" / "kuberay"
PROFILE = ROOT / "configs" / "profiles" / "gwangju.yaml"
INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


# ------------------------------------------------------------------------------- schema handling


def strict_schema(node: Any) -> Any:
    """A JSON-schema (draft 7) copy of a CRD openAPIV3Schema node, strict about unknown fields."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not"):
            out[key] = strict_schema(value)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "format", "default"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("format") in INT_BOUNDS:
        low, high = INT_BOUNDS[node["format"]]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def crd_validator(file_name: str) -> jsonschema.Draft7Validator:
    path = SCHEMA_DIR / file_name
    if not path.is_file():
        pytest.fail(
            f"KubeRay CRD schema {path} not found: these tests need ../shared/schemas/kuberay "
            "(set CCTV_SHARED_DIR to the shared directory)"
        )
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    schema = strict_schema(versions["v1"]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = METADATA_SCHEMA
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/v1"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema.pop("additionalProperties", None)  # status is written by the operator, not us
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(validator: jsonschema.Draft7Validator, doc: dict[str, Any]) -> list[str]:
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc))


@pytest.fixture(scope="module")
def rayservice_validator() -> jsonschema.Draft7Validator:
    return crd_validator("ray.io_rayservices.yaml")


@pytest.fixture(scope="module")
def raycluster_validator() -> jsonschema.Draft7Validator:
    return crd_validator("ray.io_rayclusters.yaml")


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())


@pytest.fixture(scope="module")
def raycluster() -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / "raycluster.yaml").read_text())


@pytest.fixture(scope="module")
def profile() -> AppConfig:
    return load_config(PROFILE, env={})


@pytest.fixture(scope="module")
def serve_config(rayservice: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def groups(cluster_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in cluster_spec["workerGroupSpecs"]}


def containers(cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    pods = [cluster_spec["headGroupSpec"]["template"]] + [g["template"] for g in cluster_spec["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["spec"]["containers"]]


def ray_resources(group: dict[str, Any]) -> dict[str, float]:
    """Custom resources from rayStartParams (KubeRay's quoted-JSON form: '"{\\"name\\": 1}"')."""
    raw = group["rayStartParams"].get("resources")
    if raw is None:
        return {}
    return json.loads(json.loads(raw) if raw.startswith('"') else raw)


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# ------------------------------------------------------------------------------------- schema


def test_rayservice_validates_against_the_crd(rayservice_validator, rayservice) -> None:
    assert errors(rayservice_validator, rayservice) == []


def test_raycluster_validates_against_the_crd(raycluster_validator, raycluster) -> None:
    assert errors(raycluster_validator, raycluster) == []


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _drop(doc: dict[str, Any], path: tuple[Any, ...]) -> None:
    for key in path[:-1]:
        doc = doc[key]
    del doc[path[-1]]


WORKER0 = ("spec", "rayClusterConfig", "workerGroupSpecs", 0)


@pytest.mark.parametrize(
    ("mutate", "expected_path"),
    [
        (lambda d: _set(d, (*WORKER0, "replicas"), "four"), "spec.rayClusterConfig.workerGroupSpecs.0.replicas"),
        (lambda d: _set(d, (*WORKER0, "minReplica"), 1), "spec.rayClusterConfig.workerGroupSpecs.0"),
        (lambda d: _drop(d, (*WORKER0, "groupName")), "spec.rayClusterConfig.workerGroupSpecs.0"),
        (lambda d: _set(d, (*WORKER0, "maxReplicas"), 2**31), "spec.rayClusterConfig.workerGroupSpecs.0.maxReplicas"),
        (lambda d: _set(d, ("spec", "serveConfigV2"), {"applications": []}), "spec.serveConfigV2"),
        (
            lambda d: _set(d, ("spec", "rayClusterConfig", "autoscalerOptions", "upscalingMode"), "Fast"),
            "spec.rayClusterConfig.autoscalerOptions.upscalingMode",
        ),
        (
            lambda d: _set(d, (*WORKER0, "template", "spec", "containers", 0, "imagePullPolicy"), ["Always"]),
            "spec.rayClusterConfig.workerGroupSpecs.0.template.spec.containers.0.imagePullPolicy",
        ),
        (lambda d: _set(d, ("metadata", "name"), "CCTV_Gwangju"), "metadata.name"),
        (lambda d: _set(d, ("kind",), "RayCluster"), "kind"),
    ],
    ids=[
        "replicas-wrong-type",
        "misspelt-field",
        "missing-required",
        "int32-overflow",
        "serveConfigV2-not-a-string",
        "enum",
        "nested-pod-spec-type",
        "bad-name",
        "wrong-kind",
    ],
)
def test_the_validator_rejects_a_broken_copy(rayservice_validator, rayservice, mutate, expected_path: str) -> None:
    broken = copy.deepcopy(rayservice)
    mutate(broken)
    found = errors(rayservice_validator, broken)
    assert found, "the broken manifest was accepted"
    assert any(e.startswith(f"{expected_path}:") for e in found), found


def test_raycluster_is_the_rayservice_cluster(rayservice, raycluster) -> None:
    assert raycluster["spec"] == rayservice["spec"]["rayClusterConfig"], (
        "raycluster.yaml drifted from rayservice.yaml's rayClusterConfig: regenerate it (configs/kuberay/README.md)"
    )


def test_ray_version_and_images_match_the_installed_ray(rayservice) -> None:
    ray_version = metadata.version("ray")
    spec = rayservice["spec"]["rayClusterConfig"]
    assert spec["rayVersion"] == ray_version
    python_tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    for c in containers(spec):
        tag = c["image"].rsplit(":", 1)[1]
        assert f"ray{ray_version}-{python_tag}" in tag, c["image"]


# ------------------------------------------------------------------------------ serve config


def test_serve_config_is_a_valid_serve_deploy_schema(serve_config) -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config)


def test_serve_apps_match_the_profile(serve_config, profile: AppConfig, rayservice) -> None:
    apps = {a["name"]: a for a in serve_config["applications"]}
    expected = {d.app_name: detector_route(d) for d in profile.all_detectors()} | {"api": "/"}
    assert {n: a["route_prefix"] for n, a in apps.items()} == expected
    assert serve_config["http_options"]["port"] == profile.cluster.serve_http_port
    for app in apps.values():
        assert Path(app["args"]["config_path"]).name == PROFILE.name
        if app["name"] != "api":
            assert app["args"]["detector"] in {d.name or d.model_name for d in profile.all_detectors()}
    # Every pod mounts the profile where the builders read it.
    mount_dirs = {str(Path(a["args"]["config_path"]).parent) for a in apps.values()}
    for c in containers(rayservice["spec"]["rayClusterConfig"]):
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mount_dirs <= set(mounts), c["name"]


def test_serve_import_paths_point_into_the_repository(serve_config) -> None:
    for app in serve_config["applications"]:
        module, _, attr = app["import_path"].partition(":")
        assert attr, app["import_path"]
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), app["import_path"]


def test_serve_app_builders_exist(rayservice) -> None:
    """Every import_path names a one-argument function (Serve's builder contract)."""
    import importlib
    import inspect

    serve_cfg = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    for app in serve_cfg["applications"]:
        module, _, name = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module), name)
        assert len(inspect.signature(builder).parameters) == 1, app["import_path"]


# ------------------------------------------------------------------------- placement, resources


def test_shards_and_their_replicas_share_every_node(rayservice, profile: AppConfig) -> None:
    """The mixed layout: one worker group whose every node runs shards and one replica of each detector.

    Frames stay on the node that decoded them only if every node that takes shards also takes a
    replica of each detector, and the shards prefer it (``detector_routing: same_node_first``).
    """
    spec = rayservice["spec"]["rayClusterConfig"]
    g = groups(spec)
    assert set(g) == {"decode-gpu"}
    group = g["decode-gpu"]
    offered = ray_resources(group)
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    cores, gpus = cpu_cores(limits["cpu"]), int(limits["nvidia.com/gpu"])
    nodes = group["replicas"]
    # No autoscaling of the group: a node is worth adding only with its replicas, and Serve would not add them.
    assert group["minReplicas"] == nodes == group["maxReplicas"]
    cl = profile.cluster
    assert cl.detector_routing == "same_node_first"
    assert cl.shards_per_node is not None, "shards must be pinned per node, not SPREAD by count"
    assert cl.shard_resources, "shards are not pinned to the decode-gpu group"
    for name, amount in cl.shard_resources.items():
        assert offered.get(name, 0) >= amount * cl.shards_per_node, name
    for det in profile.all_detectors():
        assert det.replica_resources, f"{det.app_name} replicas are not pinned to the decode-gpu group"
        for name, amount in det.replica_resources.items():
            assert offered.get(name, 0) >= amount, name
        assert det.max_replicas_per_node == 1 and det.num_replicas == nodes and det.autoscaling is None, det.app_name
    # What one node runs fits it: 2 cores left to Ray, the GPU shared by the detectors' replicas.
    detectors = profile.all_detectors()
    node_cpus = cl.shards_per_node * cl.shard_num_cpus + sum(d.num_cpus_per_replica for d in detectors)
    assert node_cpus <= cores - 2
    assert sum(d.num_gpus_per_replica for d in detectors) <= gpus
    # Head takes no CPU work: shards and replicas land on the worker group.
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_s3_keys_come_from_a_secret_never_a_literal(rayservice, profile: AppConfig) -> None:
    names = {profile.storage.access_key_env, profile.storage.secret_key_env}
    for c in containers(rayservice["spec"]["rayClusterConfig"]):
        env = {e["name"]: e for e in c.get("env", [])}
        for name in names:
            assert name in env, f"{c['name']} lacks {name}"
            assert "value" not in env[name], f"{name} is a literal in {c['name']}"
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "cctv-s3"


def test_prometheus_discovery_points_at_the_serve_service(rayservice, serve_config) -> None:
    docs = list(yaml.safe_load_all((KUBERAY / "prometheus.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ScrapeConfig", "PodMonitor"}
    meta = rayservice["metadata"]
    port = serve_config["http_options"]["port"]
    url = kinds["ScrapeConfig"]["spec"]["httpSDConfigs"][0]["url"]
    assert url == f"http://{meta['name']}-serve-svc.{meta['namespace']}.svc.cluster.local:{port}/metrics/targets"
    assert '"/metrics/targets"' in (ROOT / "serve_apps" / "api" / "app.py").read_text()
    # The PodMonitor's port exists on every Ray pod and is Ray's metrics export port.
    port_name = kinds["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"]
    selector = kinds["PodMonitor"]["spec"]["selector"]["matchLabels"]
    spec = rayservice["spec"]["rayClusterConfig"]
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for pod in pods:
        assert selector.items() <= pod["template"]["metadata"]["labels"].items()
        ports = {p["name"]: p["containerPort"] for p in pod["template"]["spec"]["containers"][0]["ports"]}
        assert str(ports[port_name]) == pod["rayStartParams"]["metrics-export-port"]
