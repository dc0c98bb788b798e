"""The house is one-way: a package imports only the packages below it (docs/ARCHITECTURE.md, Layers and imports).

Every import statement of every module is read (``ast``, nothing imported), function-level ones included, so a
lazy import cannot hide an upward edge. ``benchmarks/``, ``scripts/`` and ``tests/`` sit on top and may import all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS = ("cluster", "actors", "serve_apps", "storage", "contracts", "configs")
"""Top to bottom: each may import those after it, never those before it."""


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``; relative imports resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(root).with_suffix("").parts[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def upward_imports(root: Path) -> list[str]:
    """``file:line imports module`` for each import that points up the layer order."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    problems = []
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            for line, module in imported_modules(path, root):
                target = module.split(".")[0]
                if target in rank and rank[target] < rank[layer]:
                    problems.append(f"{path.relative_to(root)}:{line} imports {module} ({layer} is below {target})")
    return problems


def test_no_package_imports_a_layer_above_it() -> None:
    assert upward_imports(ROOT) == []


def test_every_layer_has_modules_to_check() -> None:
    for layer in LAYERS:
        assert list((ROOT / layer).rglob("*.py")), f"{layer}/ has no modules: the layer list is out of date"


@pytest.mark.parametrize(
    ("layer", "source", "flagged"),
    [
        ("serve_apps", "from actors.analytics.registry import build_camera_rules\n", True),
        ("storage", "def f():\n    import cluster.runtime\n", True),
        ("storage", "from . import records\nfrom configs.schema import StorageConfig\n", False),
        ("actors", "from contracts.detector import Detection\nimport numpy\n", False),
        ("configs", "from ..storage import records\n", True),
    ],
)
def test_an_upward_import_is_found_wherever_it_hides(tmp_path: Path, layer: str, source: str, flagged: bool) -> None:
    for name in LAYERS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / layer / "probe.py").write_text(source)
    problems = upward_imports(tmp_path)
    assert bool(problems) is flagged, problems
    if flagged:
        assert problems[0].startswith(f"{layer}/probe.py:")


INFERENCE_RUNTIMES = ("onnx", "onnxruntime", "openvino", "torch", "serve_apps.detector.deployment")


def test_shards_and_controller_start_without_the_replicas_inference_code() -> None:
    """A shard only calls the detector: importing it (and the controller that creates shards) must not pull in
    the replica's runtimes, which cost ~0.6 s of every shard and controller worker's start on the CI machine.
    A fresh interpreter, since this one has imported them all."""
    probe = "import sys, actors.shard, cluster.controller; print(','.join(m for m in sys.argv[1:] if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe, *INFERENCE_RUNTIMES], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing a shard loads {out.stdout.strip()}"
