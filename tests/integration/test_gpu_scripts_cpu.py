"""The GPU node scripts (benchmarks/gpu, issue 9) run here on the CPU: fields, ratios, budgets, no Ray."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.footage import prepare_stream
from tests.conftest import CACHE_DIR, ROOT

GPU_DIR = ROOT / "benchmarks" / "gpu"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def streams_dir(vtest_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one prepared 360p vtest stream (the scripts take a folder of .mp4 files)."""
    stream = prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=1.0, max_height=360)
    folder = tmp_path_factory.mktemp("gpu-streams")
    (folder / "vtest360.h264.gop1s.h360.mp4").symlink_to(stream)
    return folder


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_no_ray_import_in_gpu_scripts() -> None:
    for path in GPU_DIR.glob("*.py"):
        assert not re.search(r"^\s*(import ray|from ray)", path.read_text(), re.M), path


def test_e2e_loop_quick_on_cpu(streams_dir: Path, models_dir: Path, tmp_path: Path) -> None:
    _run(
        [
            "-m",
            "benchmarks.gpu.e2e_loop",
            "--streams",
            str(streams_dir),
            "--models-dir",
            str(models_dir),
            "--device",
            "cpu",
            "--quick",
            "--decoders",
            "cpu",
            "--out",
            str(tmp_path),
            "--tag",
            "dry",
        ],
        timeout=240,
    )
    doc = json.loads((tmp_path / "e2e_loop-dry.json").read_text())
    assert doc["environment"]["ray_imported"] is False
    assert doc["errors"] == [] and doc["skipped"] == []
    check = doc["preprocess_check"]
    assert check["frames"] == 4 and check["kinds"] == ["i420"]  # planes went to the "device", not BGR
    assert check["mean_abs_diff"] < 2.0 and check["frac_pixels_over_8"] < 0.01
    (det,) = doc["detector_only"]
    assert det["batch"] == 2 and det["forward_img_per_s"] > 0 and det["infer_img_per_s"] > 0
    (dec,) = doc["decode_only"]
    assert dec["backends_used"] == {"cpu": 2} and dec["fps"] > 0
    (e2e,) = doc["e2e"]
    assert e2e["frames"] > 0 and e2e["fps"] > 0 and e2e["errors"] == []
    stages = e2e["stages"]
    for key in ("h2d_preprocess_s", "forward_s", "postprocess_s", "rule_s", "decode_busy_core_s"):
        assert stages[key] > 0, key
    (ratio,) = doc["ratios"]
    assert ratio["e2e_fps"] == e2e["fps"]
    low = min(ratio["decode_only_fps"], ratio["detector_forward_fps"])
    assert ratio["e2e_over_min_limit"] == pytest.approx(e2e["fps"] / low, abs=2e-3)
    assert ratio["limit"] in ("decode", "detector") and ratio["target"] == 0.8
    assert isinstance(ratio["meets_target"], bool)


def test_run_all_dry_run_with_a_tiny_budget(streams_dir: Path, models_dir: Path, tmp_path: Path) -> None:
    budget = 70
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu.run_all",
            "run",
            str(tmp_path),
            "--streams",
            str(streams_dir),
            "--models-dir",
            str(models_dir),
            "--device",
            "cpu",
            "--quick",
            "--budget-s",
            str(budget),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=budget + 120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    names = [s["name"] for s in summary["steps"]]
    assert names == ["nvdec_ingest", "torch_detector_check", "e2e_1080p", "e2e_360p"]
    for step in summary["steps"]:  # each got a share and either finished or was cut at its budget
        assert step["skipped"] or step["rc"] == 0 or step["timed_out"], (step, proc.stdout[-3000:])
    # Time a step leaves unused passes to the later ones; what must hold is the total.
    assert summary["elapsed_s"] < budget + 60
    assert summary["environment"]["packages"]["ray_installed"] is True  # the probe ran (Ray is in this venv)
    assert (tmp_path / "run_all.log").is_file()
    assert len(list(tmp_path.iterdir())) <= 8  # the device tool brings back at most 8 files
