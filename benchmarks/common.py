"""Small helpers shared by the benchmarks: CPU-time measurement, load average, result files.

Throughput is reported per *CPU-second of the process* (``time.process_time``: every
thread of the process, user + system), not per wall-second, so that a benchmark run on a
shared or busy machine still gives the cost of the work itself. Wall time is recorded
next to it.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cluster.provenance import provenance


@dataclass(slots=True)
class CpuSample:
    """CPU and wall seconds spent in a measured block (filled in when the block ends)."""

    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    wall_s: float = 0.0

    @property
    def cores_used(self) -> float:
        """Average number of cores busy during the block."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


@contextmanager
def cpu_timer() -> Iterator[CpuSample]:
    """Measure the process CPU time (all threads) and wall time of the ``with`` block."""
    sample = CpuSample()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        yield sample
    finally:
        c1, w1 = time.process_time(), time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        sample.cpu_s = c1 - c0
        sample.wall_s = w1 - w0
        sample.user_s = r1.ru_utime - r0.ru_utime
        sample.sys_s = r1.ru_stime - r0.ru_stime


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where /proc/loadavg is missing)."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


@contextmanager
def pinned_to_one_cpu() -> Iterator[int | None]:
    """Run the block (and threads it starts) on one CPU; yields that CPU, or None if unsupported.

    Affinity is per thread on Linux and inherited by threads created later, so the
    threads (and FFmpeg worker threads) started inside the block stay on the same CPU.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def write_result(name: str, payload: dict[str, object], out_dir: Path) -> Path:
    """Write ``payload`` plus :func:`provenance` as ``<out_dir>/<name>.json``; returns the path.

    The file is written under a temporary name and renamed, so the latest complete
    result always sits under ``<name>.json`` (a crashed run leaves the previous one).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    record = {"benchmark": name, "provenance": provenance(), **payload}
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path
