"""`cctv run` as a user runs it: a subprocess, a config file, Ctrl-C, a summary, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from serve_apps.metrics_export import free_port
from tests.conftest import CACHE_DIR, CLIPS_DIR, ROOT
from tests.support.wait import wait_for


def _write_config(tmp_path: Path, models_dir: Path) -> Path:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"""
state_dir: state
cluster:
  namespace: cctv-clitest
  local_num_cpus: 2
  num_shards: 2
  shard_num_cpus: 0.25
  serve_http_port: {free_port()}
storage:
  bucket: cli-test
detector:
  models_dir: {models_dir}
  max_batch_size: 4
  num_cpus_per_replica: 0.25
recorder:
  pre_roll_s: 2
  post_roll_s: 2
metrics:
  bind_host: 127.0.0.1
cameras: []
"""
    )
    return cfg


def test_run_until_ctrl_c_stops_everything_and_writes_a_summary(tmp_path: Path, models_dir: Path) -> None:
    cfg = _write_config(tmp_path, models_dir)
    summary = tmp_path / "summary.json"
    cmd = [
        sys.executable,
        "-m",
        "cluster.cli",
        "run",
        "--config",
        str(cfg),
        "--cameras",
        "3",
        "--no-dashboard",
        "--cache-dir",
        str(CACHE_DIR),
        "--data-dir",
        str(CLIPS_DIR),
        "--summary-json",
        str(summary),
        "--progress",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "run.log").open("w+")
    # Started with SIGINT ignored, as a background job of a script is: Ctrl-C must stop it all the same.
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        start_new_session=True,  # its own process group: a failed run is killed with everything it started
    )
    try:

        def banner() -> bool:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]  # exited: fail at once
            return "cctv-cluster is running" in (tmp_path / "run.log").read_text()

        wait_for(
            banner,
            120,
            "the run's banner",
            interval_s=1.0,
            detail=lambda: (tmp_path / "run.log").read_text()[-3000:],
        )
        text = (tmp_path / "run.log").read_text()
        for where in ("control API", "API token", "Prometheus file_sd", "Ray dashboard", "S3", "camera source"):
            assert where in text
        token_file = tmp_path / "state" / "api-token"  # the demo's generated admin token, for the CLI
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert token in text  # shown on the terminal, next to the addresses
        # Interrupted once its progress line shows frames analysed (every 5 s: "decoded N analysed M events K").
        wait_for(
            lambda: re.search(r"\] decoded [1-9]\d* analysed [1-9]", (tmp_path / "run.log").read_text()),
            90,
            "a progress line with frames decoded and analysed",
            interval_s=1.0,
            detail=lambda: (tmp_path / "run.log").read_text()[-2000:],
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = json.loads(summary.read_text())
    assert out["stopped_by"] == "interrupt"
    assert out["cameras"] == 3
    assert out["decoded_fps"] > 0 and out["analysed_fps"] > 0
    assert out["provenance"]["git_commit"]
    text = (tmp_path / "run.log").read_text()
    # Stopped in reverse order of start: cameras' controller before Ray (and Serve, ours, with it) before S3.
    order = [text.index(f"stopped {step}") for step in ("controller", "local ray", "embedded S3")]
    assert order == sorted(order)
    # Nothing it started is left running.
    state = tmp_path / "state"
    leftovers = subprocess.run(["pgrep", "-af", str(state)], capture_output=True, text=True).stdout
    assert not leftovers.strip(), leftovers
    for log_file in state.rglob("*.log"):  # never in a log file (Ray's session logs included)
        assert token not in log_file.read_text(errors="replace"), log_file


def test_bad_config_is_refused_with_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("cluster:\n  num_shards: 0\ncameras:\n  - id: c1\n    url: rtsp://u:topsecret@h/1\n    fps: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "run", "--config", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"{cfg}:2: cluster.num_shards" in proc.stderr
    assert f"{cfg}:6: cameras[0].fps" in proc.stderr
    assert "topsecret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("missing", ["CCTV_S3_ACCESS_KEY"])
def test_configured_endpoint_needs_keys_from_env(tmp_path: Path, missing: str) -> None:
    cfg = tmp_path / "ext.yaml"
    cfg.write_text("storage:\n  endpoint: 127.0.0.1:9\ncameras:\n  - id: c1\n    url: /nonexistent.mp4\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCTV_S3_")}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "run", "--config", str(cfg), "--duration", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode != 0
    assert missing in proc.stderr
    assert "Started a local Ray" not in proc.stderr + proc.stdout  # refused before anything started


def test_configured_s3_endpoint_is_used_and_nothing_embedded_starts(tmp_path: Path, vtest_path: Path) -> None:
    from storage.clip_store import ClipStore
    from storage.embedded_s3 import EmbeddedS3

    with EmbeddedS3(tmp_path / "external-s3") as external:
        cfg = tmp_path / "ext.yaml"
        cfg.write_text(
            f"state_dir: state\nstorage:\n  endpoint: {external.endpoint}\n  bucket: city-clips\n"
            f"cluster:\n  local_num_cpus: 2\n  serve_http_port: {free_port()}\n  shard_num_cpus: 0.25\n"
            f"detector:\n  models_dir: {ROOT.parent / 'shared' / 'models'}\n  num_cpus_per_replica: 0.25\n"
            f"cameras:\n  - id: c1\n    url: {vtest_path}\n"
        )
        env = {**os.environ, "CCTV_S3_ACCESS_KEY": external.access_key, "CCTV_S3_SECRET_KEY": external.secret_key}
        proc = subprocess.run(
            [sys.executable, "-m", "cluster.cli", "run", "--config", str(cfg), "--duration", "3", "--no-dashboard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"http://{external.endpoint}" in proc.stdout
        assert "weed mini" not in proc.stderr and "stopped embedded S3" not in proc.stderr
        store = ClipStore.for_access(external.access("city-clips"))
        assert store.healthy()


def test_a_store_that_fails_beside_ray_start_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The object store starts beside Ray: when it fails, the Ray that started meanwhile is stopped too."""
    import ray

    from cluster.runtime import Runtime, StartupError
    from configs.schema import AppConfig, ClusterConfig, StorageConfig

    monkeypatch.setenv("CCTV_S3_ACCESS_KEY", "cctv-test")  # keys are there (checked before anything starts) ...
    monkeypatch.setenv("CCTV_S3_SECRET_KEY", "cctv-test-secret")
    cfg = AppConfig(
        state_dir=tmp_path / "state",
        cluster=ClusterConfig(namespace="cctv-store-fails", local_num_cpus=1, serve_http_port=free_port()),
        storage=StorageConfig(endpoint=f"127.0.0.1:{free_port()}"),  # ... but nothing listens there
    )
    caplog.set_level("INFO", logger="cluster.runtime")
    unreachable = rf"clip store: .*{cfg.storage.endpoint} unreachable"
    with pytest.raises(StartupError, match=unreachable), Runtime(cfg, include_dashboard=False):
        pytest.fail("started without its object store")
    assert "stopped local ray" in caplog.text, caplog.text  # Ray had started beside the store, and was stopped
    assert not ray.is_initialized()
