"""How metrics leave the cluster: one Prometheus endpoint per process, discovered by file.

Every process that owns metrics (each decoder shard, each detector replica) serves the
``prometheus_client`` default registry on its own ephemeral port and registers that
address with a small named Ray actor, :class:`MetricsTargets`. The runtime writes the
registered targets as a Prometheus ``file_sd`` JSON file (and the control API serves
them for ``http_sd``), so Prometheus follows shards and replicas as they come and go.

Why not ``ray.util.metrics``: Ray's export batches samples every few seconds through the
node agent and prefixes every name; plain ``prometheus_client`` gives exact names,
histogram buckets of our choosing and samples that are current at scrape time.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

import ray
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

log = logging.getLogger(__name__)

TARGETS_ACTOR = "cctv-metrics-targets"


@dataclass(frozen=True, slots=True)
class MetricsTarget:
    """One scrape target: ``address`` is host:port; ``job`` groups targets in Prometheus."""

    job: str
    address: str
    instance: str
    registered_ts: float


def node_ip() -> str:
    """The address other nodes reach this process on (loopback on a one-machine cluster)."""
    try:
        return ray.util.get_node_ip_address()
    except (RuntimeError, AttributeError):  # outside Ray
        return "127.0.0.1"


def start_metrics_server(bind_host: str = "0.0.0.0", port: int = 0, registry: CollectorRegistry = REGISTRY) -> int:
    """Serve ``registry`` (default: this process's default registry) over HTTP; returns the bound port."""
    server, _thread = start_http_server(port, addr=bind_host, registry=registry)
    return int(server.server_address[1])


@ray.remote(num_cpus=0)
class MetricsTargets:
    """Registry of scrape targets (named, one per cluster namespace)."""

    def __init__(self) -> None:
        self._targets: dict[str, MetricsTarget] = {}

    def register(self, target: MetricsTarget) -> None:
        self._targets[target.instance] = target

    def unregister(self, instance: str) -> None:
        self._targets.pop(instance, None)

    def targets(self) -> list[MetricsTarget]:
        return sorted(self._targets.values(), key=lambda t: (t.job, t.instance))


def export_metrics(
    job: str,
    instance: str,
    *,
    bind_host: str = "0.0.0.0",
    namespace: str | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> str:
    """Start this process's exporter and register it; returns host:port.

    Registration is best effort: without a registry actor (e.g. a model runner used
    outside the cluster) the endpoint still serves. A process that imports the data-plane
    modules without running them (the controller) passes its own ``registry`` so that it
    does not expose their idle, unlabelled series.
    """
    port = start_metrics_server(bind_host, registry=registry)
    host = bind_host if bind_host not in ("0.0.0.0", "::", "") else node_ip()
    address = f"{host}:{port}"
    try:
        registry = ray.get_actor(TARGETS_ACTOR, namespace=namespace)
    except ValueError:
        log.info("no %s actor: %s metrics at %s are not registered", TARGETS_ACTOR, instance, address)
        return address
    registry.register.remote(MetricsTarget(job=job, address=address, instance=instance, registered_ts=time.time()))
    return address


def file_sd(targets: list[MetricsTarget]) -> list[dict[str, object]]:
    """Prometheus file_sd / http_sd document for ``targets`` (one group per target)."""
    return [{"targets": [t.address], "labels": {"component": t.job, "cctv_instance": t.instance}} for t in targets]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that cannot bind port 0 themselves)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
