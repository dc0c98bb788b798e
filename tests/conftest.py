"""Shared test fixtures.

Tests under tests/unit are pure logic: ``ray.init`` is forbidden there so they stay fast.
Tests under tests/integration touch real services (Ray, SeaweedFS, Prometheus, video).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CCTV_SHARED_DIR", ROOT.parent / "shared")).resolve()
MODELS_DIR = Path(os.environ.get("CCTV_MODELS_DIR", SHARED / "models")).resolve()
CLIPS_DIR = SHARED / "data" / "clips"
CACHE_DIR = Path(os.environ.get("CCTV_CACHE_DIR", ROOT / ".cache")).resolve()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _forbid_ray_init_in_unit_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("unit") is None:
        return
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a hard dependency
        return

    def _forbidden(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("ray.init is forbidden in unit tests (tests/unit): move the test to tests/integration")

    monkeypatch.setattr(ray, "init", _forbidden)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    if not (MODELS_DIR / "yolox_nano" / "yolox_nano.onnx").is_file():
        pytest.fail(f"detector weights not found under {MODELS_DIR}: set CCTV_MODELS_DIR")
    return MODELS_DIR


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    if not CLIPS_DIR.is_dir():
        pytest.fail(f"footage not found at {CLIPS_DIR}: set CCTV_SHARED_DIR")
    return CLIPS_DIR


@pytest.fixture(scope="session")
def vtest_path() -> Path:
    """vtest.avi from Debian's opencv-doc, fetched by `make test` (scripts/fetch_vtest.sh)."""
    path = CACHE_DIR / "footage" / "vtest.avi"
    if not path.is_file():
        pytest.fail(f"{path} missing: run scripts/fetch_vtest.sh {path.parent} (make test does)")
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name what is still running when the suite ends.

    Threads or a Ray connection left alive by a fixture run C code while the interpreter
    finalizes; that is where an exit-time crash comes from, so the summary lists them.
    """
    import sys
    import threading

    live = [t for t in threading.enumerate() if t is not threading.main_thread()]
    ray_mod = sys.modules.get("ray")
    ray_connected = bool(ray_mod is not None and ray_mod.is_initialized())
    if live or ray_connected:
        terminalreporter.section("left running at the end of the session")
        terminalreporter.write_line(f"ray connected: {ray_connected}")
        for t in live:
            terminalreporter.write_line(f"thread {t.name!r} daemon={t.daemon} alive={t.is_alive()}")
