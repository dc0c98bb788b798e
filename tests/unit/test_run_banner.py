"""`cctv run` says where its demo cameras come from, in one line a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

import cluster.rtsp_sim
from cluster.cli import _start_simulator


def test_without_gstreamer_the_run_says_its_cameras_are_files_and_how_to_get_rtsp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cluster.rtsp_sim, "system_ready", lambda: (False, "gst-rtsp-server typelib not found"))
    sim, line = _start_simulator([tmp_path / "vtest.mp4"], 8, tmp_path)
    assert sim is None
    assert "FILES" in line and "not RTSP" in line and "gst-rtsp-server typelib not found" in line
    assert "make system-deps" in line  # how to get RTSP
    assert line in capsys.readouterr().err  # said at once, not only in the banner
