"""Schemathesis against the running API's own OpenAPI document: no input may cause a 5xx.

A real local Runtime (Ray, Serve, SeaweedFS, the detector, one looped camera) with tokens per
role from ``CCTV_API_TOKENS``. Two runs of the ``st`` CLI with the ``not_a_server_error`` check:

* as admin, every operation but two: ``POST /cameras`` (every valid random camera would start a
  real stream on the shard) and ``GET /events/stream`` (an endless response by design; its
  parameters are checked in test_api.py);
* as a viewer, the camera-changing operations including ``POST /cameras``: the role check
  answers before anything is created (examples and fuzzing only: the body is never read).

Examples, coverage (boundary and invalid values) and fuzzing phases; a fixed seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.footage import prepare_stream
from cluster.runtime import Runtime
from configs.schema import AppConfig, CameraConfig, ClusterConfig, DetectorConfig
from serve_apps.metrics_export import free_port
from tests.support.api import role_tokens, tokens_spec

pytestmark = pytest.mark.timeout(900)

ST = Path(sys.executable).with_name("st")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, vtest_path: Path, models_dir: Path) -> Iterator[tuple]:
    from tests.conftest import CACHE_DIR

    stream = prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=1.0)
    state = tmp_path_factory.mktemp("st")
    port = free_port()
    cfg = AppConfig(
        state_dir=state,
        cluster=ClusterConfig(
            namespace="cctv-st-test", num_shards=1, shard_num_cpus=0.5, local_num_cpus=4, serve_http_port=port
        ),
        detector=DetectorConfig(models_dir=models_dir, max_batch_size=4, num_cpus_per_replica=0.5),
        cameras=[CameraConfig(id="cam-0", url=str(stream), loop=True, decode_mode="keyframe", district="seo-gu")],
    )
    tokens = role_tokens()
    old = os.environ.get(cfg.api.tokens_env)
    os.environ[cfg.api.tokens_env] = tokens_spec(tokens)
    try:
        with Runtime(cfg, include_dashboard=False, ray_init_kwargs={"object_store_memory": 256 * 1024**2}):
            yield f"http://127.0.0.1:{port}", tokens, state
    finally:
        if old is None:
            os.environ.pop(cfg.api.tokens_env, None)
        else:
            os.environ[cfg.api.tokens_env] = old


def _st(
    url: str, token: str, report: Path, *filters: str, max_examples: int, phases: str = "examples,coverage,fuzzing"
) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(ST),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error",
        "--phases",
        phases,
        "--max-examples",
        str(max_examples),
        "--seed",
        "20260601",
        "--workers",
        "1",  # hypothesis' lambda-source reflection is not thread-safe (an internal error with 2)
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        *filters,
    ]
    # Run in the test's state dir: st keeps replay data in ./.schemathesis/.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=780, cwd=report.parent)


def _failures(proc: subprocess.CompletedProcess[str]) -> str:
    """The report's failures section (each with its curl reproduction), or its tail."""
    out = proc.stdout
    start = out.find("FAILURES")
    return (out[start : start + 20000] if start >= 0 else out[-6000:]) + proc.stderr[-2000:]


def test_no_input_makes_a_server_error(served: tuple) -> None:
    url, tokens, state = served
    admin = _st(
        url,
        tokens["admin"],
        state / "st-admin.xml",
        "--exclude-operation-id",
        "add_camera_cameras_post",
        "--exclude-path",
        "/events/stream",
        max_examples=int(os.environ.get("CCTV_ST_MAX_EXAMPLES", "25")),
    )
    assert admin.returncode == 0, _failures(admin)
    viewer = _st(
        url,
        tokens["viewer"],
        state / "st-viewer.xml",
        "--include-path-regex",
        "^/cameras",
        "--include-method-regex",
        "^(POST|PUT|DELETE)$",
        max_examples=10,
        # The role check answers 403 before the body is read, so the coverage phase's hundreds of boundary
        # bodies (12 s per operation here) would test one branch; the admin run covers bodies.
        phases="examples,fuzzing",
    )
    assert viewer.returncode == 0, _failures(viewer)
    print(admin.stdout[-3000:])
    print(viewer.stdout[-2000:])
