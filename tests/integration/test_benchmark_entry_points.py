"""Every benchmark script starts as a module of the ``benchmarks`` package, with no ``sys.path`` edit of its own.

``python -m benchmarks.<name> --help`` imports the whole script (the product packages it uses included) and parses
its arguments, so an import broken by a move or a removed helper fails here, not on the day someone runs the
benchmark. Each script also runs on a tiny input: in test_benchmark_tiny_runs.py, or, for those named in
``TINY_RUNS``, in the test given there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCH = ROOT / "benchmarks"
GROUPS = ("performance", "accuracy", "gpu")  # what a benchmark measures; nothing runnable outside them but report
LIBRARIES = {"__init__", "common", "performance.cpu_accounting"}  # imported by the scripts, not run
TINY_RUNS = {
    "gpu.e2e_loop": "tests/integration/test_gpu_scripts_cpu.py::test_e2e_loop_quick_on_cpu",
    "gpu.run_all": "tests/integration/test_gpu_scripts_cpu.py::test_run_all_dry_run_with_a_tiny_budget",
    "gpu.torch_detector_check": "tests/unit/test_torch_runner.py::test_gpu_check_script_dry_run_on_cpu",
    "performance.profile_live": (
        "tests/integration/test_pipeline.py::test_live_profile_books_cpu_to_the_shards_and_the_replica"
    ),
    "report": "tests/unit/test_report.py",
}


def scripts() -> list[str]:
    """Every runnable benchmark as its module name under ``benchmarks`` (``accuracy`` is its package's __main__)."""
    names = [p.stem for p in BENCH.glob("*.py") if p.stem not in LIBRARIES]
    for group in GROUPS:
        for p in (BENCH / group).glob("*.py"):
            name = group if p.stem == "__main__" else f"{group}.{p.stem}"
            if p.stem != "__init__" and name not in LIBRARIES:
                names.append(name)
    return sorted(names)


def test_benchmarks_live_in_their_groups() -> None:
    folders = sorted(p.name for p in BENCH.iterdir() if p.is_dir() and p.name not in {"results", "__pycache__"})
    assert folders == sorted(GROUPS), f"benchmarks are grouped as {GROUPS}; found folders {folders}"
    loose = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in {"__init__", "common", "report"})
    assert loose == [], f"move these into one of {GROUPS}: {loose}"


def test_no_benchmark_edits_sys_path() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in BENCH.rglob("*.py")
        if re.search(r"^\s*sys\.path\.(insert|append)\(", p.read_text(encoding="utf-8"), re.M)
    ]
    assert offenders == [], f"run them as modules (python -m benchmarks.<name>) instead: {offenders}"


def test_every_benchmark_script_starts_as_a_module() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    names = scripts()
    assert len(names) >= 15, names
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"benchmarks.{name}", "--help"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in names
    }
    failed = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=240)
        if proc.returncode != 0 or "usage:" not in out:
            failed[name] = out[-1500:]
    assert failed == {}, failed


@pytest.mark.parametrize("name", sorted(TINY_RUNS))
def test_tiny_runs_named_here_exist(name: str) -> None:
    path, _, test = TINY_RUNS[name].partition("::")
    text = (ROOT / path).read_text(encoding="utf-8")
    assert not test or f"def {test}(" in text, TINY_RUNS[name]
    assert name in scripts()
