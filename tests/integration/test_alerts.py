"""Monitoring on real parts: Prometheus scrapes a running pipeline and the shipped alerts fire and resolve.

Two RTSP cameras from the GStreamer simulator, one Ray shard, the Serve detector and the control
API. Prometheus runs with ``configs/prometheus/prometheus.yml`` (discovery through the API's
http_sd endpoint) and ``configs/prometheus/alerts.yml`` with every ``for:`` shortened to 5 s:

* every shard, detector replica and the controller are scrape targets, and up;
* frame counters rise and the controller reports the one Ray node alive;
* the simulator is stopped: CameraDown goes pending, then firing, for both cameras;
* the simulator comes back on the same port: the alert resolves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.footage import prepare_stream
from cluster.rtsp_sim import RtspSimulator, system_ready
from cluster.runtime import Runtime
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig, IngestConfig
from serve_apps.metrics_export import free_port
from tests.conftest import CACHE_DIR
from tests.support.monitoring import ALERTS_YML, cluster_prometheus_config, rules_with_for
from tests.support.prometheus import PrometheusServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(300)

CAMERAS = ["rtsp-001", "rtsp-002"]
TEST_FOR = "5s"


class ClusterPrometheus(PrometheusServer):
    """The shared Prometheus helper, run with a given configuration instead of a file_sd one."""

    def __init__(self, workdir: Path, config_text: str) -> None:
        super().__init__(workdir, workdir / "unused-file-sd.json")
        self.config.write_text(config_text)

    def alerts(self, name: str) -> dict[str, str]:
        """camera (or instance) -> state (pending / firing) of the active alerts called ``name``."""
        r = httpx.get(f"{self.url}/api/v1/alerts", timeout=5.0)
        r.raise_for_status()
        return {
            a["labels"].get("camera", a["labels"].get("cctv_instance", "")): a["state"]
            for a in r.json()["data"]["alerts"]
            if a["labels"]["alertname"] == name
        }

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None  # type: ignore[index]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, vtest_path: Path, models_dir: Path
) -> Iterator[tuple[Runtime, RtspSimulator, ClusterPrometheus, Path]]:
    ok, why = system_ready()
    if not ok:
        pytest.fail(f"GStreamer RTSP server not usable: {why} (make test installs scripts/debian-packages.txt)")
    source = prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=1.0, max_height=360)
    state = tmp_path_factory.mktemp("alerts")
    sim = RtspSimulator({"vtest": source}, cameras=len(CAMERAS), log_path=state / "sim1.log")
    sim.start()
    api_port = free_port()
    cfg = AppConfig(
        state_dir=state,
        cluster=ClusterConfig(
            namespace="cctv-alerts", num_shards=1, shard_num_cpus=0.5, local_num_cpus=4, serve_http_port=api_port
        ),
        detector=DetectorConfig(models_dir=models_dir, max_batch_size=4, num_cpus_per_replica=0.5),
        ingest=IngestConfig(
            open_timeout_s=3, stall_timeout_s=2, reconnect_initial_s=0.5, reconnect_max_s=2, max_failures_before_down=2
        ),
        cameras=[
            CameraConfig(id=cid, url=url, district="seo-gu", analytics_fps=0.5, decode_mode="keyframe")
            for cid, url in zip(CAMERAS, sim.camera_urls(), strict=True)
        ],
    )
    rt = Runtime(cfg, include_dashboard=False, ray_init_kwargs={"object_store_memory": 256 * 1024**2})
    try:
        with rt:
            assert rt.endpoints is not None
            rules = rules_with_for(ALERTS_YML, state / "alerts-test-profile.yml", TEST_FOR)
            token_file = state / "prometheus-api-token"  # what the shipped config reads from state/api-token
            token_file.write_text(rt.endpoints.api_token or "")
            token_file.chmod(0o600)
            config = cluster_prometheus_config(
                f"{rt.endpoints.serve_url}/metrics/targets", rules, token_file=token_file
            )
            prom = ClusterPrometheus(state / "prometheus", config)
            prom.start()
            try:
                yield rt, sim, prom, state
            finally:
                prom.stop()
    finally:
        sim.stop()


def test_targets_are_up_and_frame_counters_rise(
    cluster: tuple[Runtime, RtspSimulator, ClusterPrometheus, Path],
) -> None:
    _, _, prom, _ = cluster

    def healthy() -> dict[str, Any] | None:
        targets = prom.targets()
        comps = {t["labels"]["component"] for t in targets if t["health"] == "up"}  # type: ignore[index]
        ok = {"shard", "detector", "controller"} <= comps and all(t["health"] == "up" for t in targets)
        return {"targets": targets} if ok else None

    assert wait_for(healthy, 30, "every scrape target up"), [
        (t["labels"], t["health"], t.get("lastError")) for t in prom.targets()
    ]  # type: ignore[index]

    first = wait_for(lambda: prom.value("sum(cctv_frames_decoded_total)"), 30, "frames decoded in a scrape")
    assert first is not None and first > 0
    later = wait_for(
        lambda: (v := prom.value("sum(cctv_frames_decoded_total)")) and v > first and v,
        20,
        "decoded frames to rise between scrapes",
    )
    assert later and later > first
    assert wait_for(lambda: prom.value("sum(cctv_packets_demuxed_total)"), 5, "packets demuxed in a scrape")
    assert prom.value('cctv_ray_nodes{state="alive"}') == 1.0
    assert wait_for(
        lambda: prom.value(f'sum(cctv_camera_up{{camera=~"{"|".join(CAMERAS)}"}})') == 2.0,
        20,
        "both cameras up in a scrape",
    )


def test_camera_down_alert_pends_fires_and_resolves(
    cluster: tuple[Runtime, RtspSimulator, ClusterPrometheus, Path],
) -> None:
    _, sim, prom, state = cluster
    # Cameras streaming: any CameraDown from start-up (connecting) has resolved.
    assert wait_for(lambda: not prom.alerts("CameraDown"), 30, "no CameraDown alert while streaming"), prom.alerts(
        "CameraDown"
    )

    port = sim.port
    sim.stop()
    stopped = time.monotonic()
    seen: dict[str, set[str]] = {c: set() for c in CAMERAS}

    def both_firing() -> bool:
        for cam, st in prom.alerts("CameraDown").items():
            if cam in seen:
                seen[cam].add(st)
        return all("firing" in s for s in seen.values())

    wait_for(both_firing, 40, f"CameraDown firing for {CAMERAS} after the simulator stopped", interval_s=0.25)
    fired_after_s = time.monotonic() - stopped
    assert all(s == {"pending", "firing"} for s in seen.values()), seen
    # Not before the (test profile's) 5 s for-duration plus the 2 s stall timeout.
    assert fired_after_s >= 5

    sim2 = RtspSimulator(dict(sim.sources), cameras=len(CAMERAS), port=port, log_path=state / "sim2.log")
    sim2.start()
    try:
        assert wait_for(
            lambda: not prom.alerts("CameraDown"), 40, "CameraDown to resolve after the simulator came back"
        ), prom.alerts("CameraDown")
        assert prom.value(f'sum(cctv_camera_up{{camera=~"{"|".join(CAMERAS)}"}})') == 2.0
    finally:
        sim2.stop()
