"""Live camera changes through the HTTP control API and the CLI, and a controller restart.

Real local Ray, Serve, SeaweedFS and footage (vtest.avi as H.264, looped live). Cameras that
are not touched by a change must keep running in the same stream (``since_ts`` of their
state unchanged, packets still rising); a restarted controller re-attaches to the running
shards and recovers the live inventory from S3.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray

from actors.camera_state import CameraState
from cluster.control_state import STATE_KEY, ControlState
from cluster.footage import prepare_stream
from cluster.runtime import Runtime
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig
from serve_apps.metrics_export import free_port
from tests.support.api import admin_client

pytestmark = pytest.mark.timeout(600)

NS = "cctv-live-test"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, vtest_path: Path, models_dir: Path) -> Iterator[tuple]:
    from tests.conftest import CACHE_DIR

    stream = prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=1.0)
    state = tmp_path_factory.mktemp("live")
    cams = [
        CameraConfig(id=f"cam-{i}", url=str(stream), loop=True, decode_mode="keyframe", district="seo-gu")
        for i in range(4)
    ]
    port = free_port()
    cfg = AppConfig(
        state_dir=state,
        cluster=ClusterConfig(namespace=NS, num_shards=2, shard_num_cpus=0.5, local_num_cpus=4, serve_http_port=port),
        detector=DetectorConfig(models_dir=models_dir, max_batch_size=4, num_cpus_per_replica=0.5),
        cameras=cams,
    )
    rt = Runtime(cfg, include_dashboard=False, ray_init_kwargs={"object_store_memory": 256 * 1024**2})
    with rt, admin_client(rt) as api:
        yield rt, stream, api


def _status(api: httpx.Client) -> dict[str, dict]:
    return {s["camera_id"]: s for s in api.get("/cameras", timeout=30).json()}


def _wait(pred, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.5)
    return pred()


def _streaming(api: httpx.Client, ids: list[str]) -> bool:
    st = _status(api)
    return all(c in st and st[c]["state"] == CameraState.STREAMING.value for c in ids)


def test_add_update_transfer_remove_live_without_touching_others(setup: tuple) -> None:
    rt, stream, api = setup
    base = [f"cam-{i}" for i in range(4)]
    assert _wait(lambda: _streaming(api, base), 60), _status(api)
    before = _status(api)

    new = {"id": "cam-new", "district": "nam-gu"}
    r = api.post("/cameras", json={**new, "url": str(stream), "loop": True}, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["shard"] in ray.get(rt.controller.shard_ids.remote())  # type: ignore[union-attr]
    assert api.post("/cameras", json={**new, "url": str(stream)}, timeout=60).status_code == 409
    bad = api.post("/cameras", json={"id": "x y", "url": "ftp://nope", "colour": 1}, timeout=30)
    assert bad.status_code == 422 and "colour" in bad.text
    assert _wait(lambda: _streaming(api, ["cam-new"]), 60)

    # Update: only the updated camera restarts (a new since_ts); the others keep their streams.
    upd = {"id": "cam-1", "url": str(stream), "loop": True, "decode_mode": "sampled", "district": "seo-gu"}
    assert api.put("/cameras/cam-1", json=upd, timeout=60).status_code == 200
    assert api.put("/cameras/cam-9", json={**upd, "id": "cam-9"}, timeout=60).status_code == 404
    assert api.put("/cameras/cam-1", json={**upd, "id": "cam-2"}, timeout=60).status_code == 400
    # Transfer: district changes in the API, nothing restarts.
    r = api.post("/cameras/cam-2/transfer", json={"district": "buk-gu"}, timeout=60)
    assert r.status_code == 200 and r.json()["camera"]["district"] == "buk-gu"
    assert api.post("/cameras/nope/transfer", json={"district": "x"}, timeout=30).status_code == 404
    cfg = api.get("/cameras/cam-2/config", timeout=30).json()
    assert cfg["camera"]["district"] == "buk-gu" and cfg["shard"]

    assert _wait(lambda: _streaming(api, base), 60)
    after = _status(api)
    for cid in ("cam-0", "cam-3"):
        assert after[cid]["since_ts"] == before[cid]["since_ts"], cid  # same stream, never restarted
        assert after[cid]["packets"] > before[cid]["packets"]
    assert after["cam-1"]["since_ts"] > before["cam-1"]["since_ts"]

    assert api.delete("/cameras/cam-new", timeout=60).status_code == 204
    assert api.delete("/cameras/cam-new", timeout=60).status_code == 404
    assert "cam-new" not in _status(api)


def test_cli_drives_the_api(setup: tuple, tmp_path: Path) -> None:
    _, stream, api = setup
    inv = tmp_path / "cams.csv"
    inv.write_text(
        f"id,url,district,loop,decode_mode,nominal_resolution\ncam-cli,{stream},dong-gu,true,keyframe,360p\n"
    )
    url, token = str(api.base_url).rstrip("/"), api.headers["authorization"].split()[1]
    cctv = [sys.executable, "-m", "cluster.cli", "cameras", "--api", url, "--token", token]
    run = lambda *a: subprocess.run([*cctv, *a], capture_output=True, text=True, timeout=120)  # noqa: E731
    out = run("add", str(inv))
    assert out.returncode == 0 and "cam-cli on shard-" in out.stdout, out.stderr
    assert run("add", str(inv)).returncode == 1  # already there: 409 reported
    broken = tmp_path / "broken.csv"
    broken.write_text("id,url,decode_mode\ncam-b,x.mp4,sometimes\n")
    bad = run("add", str(broken))
    assert bad.returncode == 2 and "broken.csv:2" in bad.stderr and "decode_mode" in bad.stderr
    assert run("transfer", "cam-cli", "--district", "gwangsan-gu").returncode == 0
    listed = run("list")
    assert listed.returncode == 0 and any("cam-cli" in ln and "gwangsan-gu" in ln for ln in listed.stdout.splitlines())
    assert run("remove", "cam-cli").returncode == 0
    assert run("remove", "cam-cli").returncode == 1
    assert subprocess.run([*cctv[:-2], "--api", "http://127.0.0.1:9", "list"], capture_output=True).returncode == 3


def test_controller_restart_recovers_assignment_without_touching_streams(setup: tuple) -> None:
    rt, stream, api = setup
    ctl = rt.controller
    assert (
        api.post("/cameras", json={"id": "cam-live", "url": str(stream), "loop": True}, timeout=60).status_code == 201
    )
    ids = [f"cam-{i}" for i in range(4)] + ["cam-live"]
    assert _wait(lambda: _streaming(api, ids), 60)
    assignment = ray.get(ctl.assignment.remote())  # type: ignore[union-attr]
    shards = [ray.get_actor(f"cctv-{sid}", namespace=NS) for sid in sorted(set(assignment.values()))]
    incarnations = ray.get([s.incarnation.remote() for s in shards])
    before = _status(api)
    stored = ControlState.model_validate_json(rt.store.get_bytes(STATE_KEY))  # type: ignore[union-attr]
    assert "cam-live" in {c.id for c in stored.cameras} and stored.assignment == assignment

    ray.kill(ctl, no_restart=False)  # the controller process dies; Ray restarts it
    time.sleep(2)
    ctl2 = ray.get_actor("cctv-controller", namespace=NS)
    assert _wait(lambda: ray.get(ctl2.assignment.remote(), timeout=60), 120) == assignment
    assert ray.get([s.incarnation.remote() for s in shards]) == incarnations
    after = _status(api)
    for cid in ids:  # the live-added camera is back from S3, and nothing restarted
        assert after[cid]["since_ts"] == before[cid]["since_ts"], cid
