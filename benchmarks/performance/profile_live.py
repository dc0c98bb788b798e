"""Where the CPU of a live cctv run goes: per-process CPU and a py-spy profile of each busy kind.

Attach to whatever runs on this machine now (``make run``, ``benchmarks.performance.e2e``, a node of a
cluster): every process is put in a kind by its command line (decoder shards, detector replicas, the RTSP
simulator, the other Ray actors, Ray's own daemons), its CPU time is read from ``/proc`` at the start and the
end of the window, and one process of each profiled kind is sampled with py-spy meanwhile. The result is
CPU-ms per camera-second per kind (``--cameras``: how many cameras the run holds) and the functions that
hold the GIL most (``--gil``, the default: Python work that the shard's threads contend for) or that are
on-CPU at all (``--all``; native time is then booked to the Python line that called it).

Run: ``.venv/bin/python -m benchmarks.performance.profile_live --cameras 32 [--duration-s 30] [--rate 25]
[--out benchmarks/results/profile_live.json]``; needs py-spy (in the venv) and the right to ptrace the
processes (same user, or root).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.provenance import provenance

REPO = Path(__file__).resolve().parents[2]

# (kind, command-line pattern); the first match wins. Profiled kinds get a py-spy sample.
KINDS: tuple[tuple[str, str], ...] = (
    ("decoder_shard", r"^ray::DecoderShard"),
    ("detector_replica", r"^ray::ServeReplica:detector"),
    ("rtsp_simulator", r"rtsp_sim\.py"),
    ("controller", r"^ray::CameraController"),
    ("other_ray_actors", r"^ray::"),
    ("ray_daemons", r"(gcs_server|raylet|dashboard|log_monitor|monitor\.py|runtime_env|default_worker)"),
    ("s3_store", r"\bweed\b"),
    ("harness", r"-m benchmarks\.|\bcctv\b"),
)
PROFILED = ("decoder_shard", "detector_replica")
PROJECT = ("actors/", "serve_apps/", "cluster/", "storage/", "contracts/")


@dataclass(frozen=True)
class Proc:
    pid: int
    kind: str
    cmd: str


def processes() -> list[Proc]:
    """Every process whose command line puts it in one of :data:`KINDS`."""
    out: list[Proc] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        for kind, pattern in KINDS:
            if cmd and re.search(pattern, cmd):
                out.append(Proc(int(entry.name), kind, cmd[:120]))
                break
    return out


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (its threads included), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def aggregate(raw: Path, top: int) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's collapsed stacks (``frame;frame;... count``)."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not stack or not n_s.isdigit():
            continue
        n = int(n_s)
        total += n
        frames = [re.sub(r" \((?:.*/)?site-packages/", " (", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in dict.fromkeys(re.sub(r":\d+\)$", ")", f) for f in frames):
            incl[f] += n

    def share(c: Counter[str], keep: object = None) -> list[dict[str, object]]:
        rows = [(k, v) for k, v in c.most_common() if keep is None or any(p in k for p in PROJECT)]
        return [{"frame": k, "share": round(v / total, 4)} for k, v in rows[:top]]

    return {"samples": total, "self": share(own), "inclusive_project": share(incl, keep=True)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--cameras", type=int, required=True, help="cameras the live run holds (for CPU-ms per camera)")
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=25, help="py-spy samples per second")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--gil", dest="gil", action="store_true", default=True, help="GIL-holding samples (default)")
    mode.add_argument("--all", dest="gil", action="store_false", help="every on-CPU sample")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--note", default="", help="what the live run is (its command), kept in the result")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "profile_live.json")
    args = ap.parse_args(argv)
    if args.cameras <= 0:
        ap.error(f"--cameras must be > 0, got {args.cameras}")
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.is_file():
        ap.error(f"py-spy not found at {spy}: make venv installs it")
    procs = processes()
    targets = {k: next((p for p in procs if p.kind == k), None) for k in PROFILED}
    if all(t is None for t in targets.values()):
        print("no decoder shard or detector replica is running: start `make run` or an e2e benchmark first")
        return 2
    before = {p.pid: cpu_s(p.pid) for p in procs}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="profile-live-") as tmp:
        running = {}
        for kind, proc in targets.items():
            if proc is None:
                continue
            raw = Path(tmp) / f"{kind}.txt"
            cmd = [str(spy), "record", "--pid", str(proc.pid), "--duration", str(int(args.duration_s))]
            cmd += ["--rate", str(args.rate), "--format", "raw", "--nonblocking", "--output", str(raw)]
            if args.gil:
                cmd.append("--gil")
            running[kind] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), raw, proc)
        profiles: dict[str, dict[str, Any]] = {}
        for kind, (popen, raw, proc) in running.items():
            _, err = popen.communicate(timeout=args.duration_s + 60)
            if popen.returncode != 0 or not raw.is_file():
                profiles[kind] = {"pid": proc.pid, "error": err.decode(errors="replace")[-500:]}
            else:
                profiles[kind] = {"pid": proc.pid, **aggregate(raw, args.top)}
    window_s = time.monotonic() - t0
    cpu: dict[str, dict[str, float]] = {}
    proc_cores: dict[int, float] = {}
    for p in procs:
        a, b = before.get(p.pid), cpu_s(p.pid)
        if a is None or b is None:
            continue
        proc_cores[p.pid] = (b - a) / window_s
        row = cpu.setdefault(p.kind, {"processes": 0, "cores": 0.0})
        row["processes"] += 1
        row["cores"] += proc_cores[p.pid]
    for row in cpu.values():
        row["cores"] = round(row["cores"], 3)
        row["cpu_ms_per_camera_s"] = round(1000 * row["cores"] / args.cameras, 2)
    for profile in profiles.values():
        # GIL mode: each sample is 1/rate s of Python holding the GIL; against the process's CPU that is the
        # share of its CPU spent in Python (the rest is native code that released the GIL: demux, decode, ORT).
        pid = profile["pid"]
        if args.gil and "samples" in profile and proc_cores.get(pid):
            gil_cores = profile["samples"] / args.rate / window_s
            profile["gil_held_cores"] = round(gil_cores, 4)
            profile["process_cores"] = round(proc_cores[pid], 4)
            profile["python_share_of_cpu"] = round(gil_cores / proc_cores[pid], 3)
    result = {
        "provenance": provenance(),
        "command": " ".join([sys.executable, *sys.argv]),
        "live_run": args.note,
        "cameras": args.cameras,
        "window_s": round(window_s, 1),
        "mode": "gil" if args.gil else "on-cpu",
        "cpu_by_kind": dict(sorted(cpu.items(), key=lambda kv: -kv[1]["cores"])),
        "total_cores": round(sum(r["cores"] for r in cpu.values()), 3),
        "profiles": profiles,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("cameras", "window_s", "cpu_by_kind", "total_cores")}, indent=1))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
