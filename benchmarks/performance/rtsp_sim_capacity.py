"""How many cameras one RTSP simulator process serves: CPU of the simulator vs. number of clients.

For each client count N: start a fresh simulator with N cameras of one prepared source (vtest,
768x576 @ 10 fps by default), open one PyAV client per camera (each camera is its own pipeline),
and once every client is streaming, measure over ``--measure-s`` seconds:

* the simulator's CPU (utime + stime of all its threads, /proc/<pid>/stat) in % of one core;
* the clients' CPU (the worker processes) and the whole box's busy %, because on a small box the
  clients compete with the simulator for the same cores;
* packets per second each client received inside the window (min / median / max, how many are
  below 90 % of the native rate).

Usage::

    .venv/bin/python -m benchmarks.performance.rtsp_sim_capacity --clients 50 100 200
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Event
from pathlib import Path

import av

from cluster.footage import prepare_stream
from cluster.rtsp_sim import RtspSimulator

ROOT = Path(__file__).resolve().parents[2]

CLK_TCK = os.sysconf("SC_CLK_TCK")
CLIENTS_PER_WORKER = 25


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def box_busy_idle_s() -> tuple[float, float]:
    """(busy, idle) seconds summed over all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK, idle / CLK_TCK


def _client(url: str, mount: str, transport: str, open_timeout_s: float, opened: mp.Queue, stop: Event) -> tuple:
    arrivals: list[float] = []
    try:
        with av.open(url, options={"rtsp_transport": transport}, timeout=open_timeout_s) as c:
            stream = c.streams.video[0]
            opened.put(True)
            for packet in c.demux(stream):
                if packet.size:
                    arrivals.append(time.monotonic())
                if stop.is_set():
                    break
        return mount, None, arrivals
    except av.error.FFmpegError as exc:
        opened.put(False)
        return mount, f"{type(exc).__name__}: {exc.strerror}", arrivals  # not str(exc): it has the URL


def _worker(jobs: list[tuple[str, str]], transport: str, open_timeout_s: float, opened: mp.Queue, results: mp.Queue,
            stop: Event) -> None:  # fmt: skip
    out: list[tuple] = []
    lock = threading.Lock()

    def run(url: str, mount: str) -> None:
        r = _client(url, mount, transport, open_timeout_s, opened, stop)
        with lock:
            out.append(r)

    threads = [threading.Thread(target=run, args=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(out)


@dataclass
class Result:
    clients: int
    opened: int
    failed: int
    window_s: float
    sim_cpu_pct: float
    clients_cpu_pct: float
    box_busy_pct: float  # of all cores together (100 % = every core busy)
    cores: int
    fps_min: float
    fps_median: float
    fps_max: float
    below_90pct: int
    errors: list[str]


def measure(source: Path, clients: int, *, fps: float, measure_s: float, warmup_s: float, transport: str) -> Result:
    ctx = mp.get_context("spawn")
    with RtspSimulator({"src": source}, cameras=clients) as sim:
        assert sim.pid is not None
        opened: mp.Queue = ctx.Queue()
        results: mp.Queue = ctx.Queue()
        stop = ctx.Event()
        urls = [(url, f"cam{i}") for i, url in enumerate(sim.camera_urls(), start=1)]
        chunks = [urls[i : i + CLIENTS_PER_WORKER] for i in range(0, len(urls), CLIENTS_PER_WORKER)]
        open_timeout_s = 60.0
        workers = [
            ctx.Process(target=_worker, args=(chunk, transport, open_timeout_s, opened, results, stop))
            for chunk in chunks
        ]
        for w in workers:
            w.start()
        n_ok = n_failed = 0
        deadline = time.monotonic() + open_timeout_s + 30
        while n_ok + n_failed < clients and time.monotonic() < deadline:
            try:
                ok = opened.get(timeout=1.0)
            except queue.Empty:
                continue
            n_ok += bool(ok)
            n_failed += not ok
        time.sleep(warmup_s)  # the probe burst of the last clients to open
        t0 = time.monotonic()
        sim0 = proc_cpu_s(sim.pid)
        cl0 = sum(proc_cpu_s(w.pid) for w in workers if w.pid)
        busy0, idle0 = box_busy_idle_s()
        time.sleep(measure_s)
        t1 = time.monotonic()
        sim1 = proc_cpu_s(sim.pid)
        cl1 = sum(proc_cpu_s(w.pid) for w in workers if w.pid)
        busy1, idle1 = box_busy_idle_s()
        stop.set()
        rows: list[tuple] = []
        for _ in workers:
            rows.extend(results.get(timeout=60))
        for w in workers:
            w.join(timeout=30)
    window_s = t1 - t0
    rates = sorted(sum(t0 <= t <= t1 for t in arrivals) / window_s for _, err, arrivals in rows if err is None)
    errors = sorted({err for _, err, _ in rows if err is not None})
    return Result(
        clients=clients,
        opened=n_ok,
        failed=n_failed,
        window_s=round(window_s, 2),
        sim_cpu_pct=round(100 * (sim1 - sim0) / window_s, 1),
        clients_cpu_pct=round(100 * (cl1 - cl0) / window_s, 1),
        box_busy_pct=round(100 * (busy1 - busy0) / ((busy1 - busy0) + (idle1 - idle0)), 1),
        cores=os.cpu_count() or 1,
        fps_min=round(rates[0], 2) if rates else 0.0,
        fps_median=round(statistics.median(rates), 2) if rates else 0.0,
        fps_max=round(rates[-1], 2) if rates else 0.0,
        below_90pct=sum(r < 0.9 * fps for r in rates),
        errors=errors,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--source", type=Path, help="prepared H.264 MP4 (default: vtest from .cache)")
    parser.add_argument("--measure-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    source = args.source or prepare_stream(ROOT / ".cache" / "footage" / "vtest.avi", ROOT / ".cache" / "streams")
    with av.open(str(source)) as c:
        fps = float(c.streams.video[0].guessed_rate)
        size = f"{c.streams.video[0].codec_context.width}x{c.streams.video[0].codec_context.height}"
    print(f"source {source.name}: {size} @ {fps:g} fps, transport {args.transport}, {os.cpu_count()} cores")
    print(f"{'clients':>7} {'opened':>6} {'sim CPU%':>8} {'clients CPU%':>12} {'box busy%':>9} "
          f"{'fps min/med/max':>17} {'<90%':>5}")  # fmt: skip
    results = []
    for n in args.clients:
        r = measure(source, n, fps=fps, measure_s=args.measure_s, warmup_s=args.warmup_s, transport=args.transport)
        results.append(r)
        print(
            f"{r.clients:>7} {r.opened:>6} {r.sim_cpu_pct:>8} {r.clients_cpu_pct:>12} {r.box_busy_pct:>9} "
            f"{f'{r.fps_min}/{r.fps_median}/{r.fps_max}':>17} {r.below_90pct:>5}"
            + (f"  errors: {r.errors}" if r.errors else ""),
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
