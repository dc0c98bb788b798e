"""Where a measurement came from: machine, package versions, git commit, command line.

Every figure the project publishes (run summaries, benchmarks) carries this record.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = ("ray", "av", "onnxruntime", "opencv-python-headless", "numpy", "torch", "minio", "prometheus-client")


def git_commit(repo: Path | None = None) -> str | None:
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def provenance(command: list[str] | None = None) -> dict[str, object]:
    """A JSON-ready record of this machine, versions, commit, command and time."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(command if command is not None else sys.argv),
        "git_commit": git_commit(),
        "machine": {
            "hostname": platform.node(),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "memory_gib": _mem_gib(),
            "platform": platform.platform(),
        },
        "versions": versions,
    }
