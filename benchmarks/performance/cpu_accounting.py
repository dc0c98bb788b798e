"""CPU accounting by role: where a benchmark's cores went (driver, Ray, Serve, shards, simulator, S3).

Reads ``/proc`` for the benchmark process and every process below it (Ray's daemons and workers,
the RTSP simulator, SeaweedFS), so a figure comes with what it cost and what else was busy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (ppid, cpu seconds so far, cmdline) for every readable process."""
    table: dict[int, tuple[int, float, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[pid] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK, cmd)
    return table


def _group(pid: int, cmd: str, me: int) -> str:
    """The role of a process, from its command line (Ray names worker processes ``ray::<Actor>...``)."""
    if pid == me:
        return "driver"
    if "ServeReplica:api" in cmd:
        return "api_replica"
    if "ServeReplica" in cmd:
        return "serve_replica"  # the detector's
    if "DecoderShard" in cmd:
        return "decoder_shard"
    if "CameraController" in cmd:
        return "controller"
    if "rtsp_sim" in cmd:
        return "rtsp_simulator"
    if "ProxyActor" in cmd:
        return "serve_proxy"
    if "ServeController" in cmd:
        return "serve_controller"
    head = cmd.split(" ", 1)[0]
    if head.endswith("weed"):
        return "s3"
    if head.endswith("raylet"):
        return "raylet"
    if head.endswith("gcs_server"):
        return "gcs"
    return "ray_other"


def _system_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all but idle and iowait)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in parts[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


@dataclass(slots=True)
class CpuSnapshot:
    t: float
    per_pid: dict[int, tuple[str, float]]
    system_s: float


def cpu_snapshot() -> CpuSnapshot:
    """CPU seconds of this process and every process below it, grouped by role, plus the machine's."""
    me = os.getpid()
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    ours: dict[int, tuple[str, float]] = {}
    stack = [me]
    while stack:
        pid = stack.pop()
        if pid in table:
            _, cpu, cmd = table[pid]
            ours[pid] = (_group(pid, cmd, me), cpu)
        stack.extend(children.get(pid, []))
    return CpuSnapshot(time.perf_counter(), ours, _system_busy_s())


def cores_between(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, float]:
    """Average cores used per group between two snapshots; ``foreign`` is the rest of the machine."""
    wall = b.t - a.t
    groups: dict[str, float] = {}
    for pid, (group, cpu) in b.per_pid.items():
        before = a.per_pid.get(pid, (group, 0.0))[1]
        groups[group] = groups.get(group, 0.0) + max(0.0, cpu - before)
    ours = sum(groups.values())
    out = {f"{g}_cores": round(v / wall, 3) for g, v in sorted(groups.items())}
    out["machine_busy_cores"] = round((b.system_s - a.system_s) / wall, 3)
    out["foreign_cores"] = round(max(0.0, (b.system_s - a.system_s) - ours) / wall, 3)
    return out
