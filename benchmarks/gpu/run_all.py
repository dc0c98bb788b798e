"""Issue 9's GPU benchmark in one go, for a GPU node without Ray: prepare the bundle here, run it there.

``prepare`` (here, ``make bench-gpu``): copies what the node needs into one folder that git ignores
(default ``.cache/gpu-bundle``): the detector model (``--models-dir``, e.g. ``../shared/models``,
which is outside the repository and so never travels by itself), a few prepared camera streams
(1080p and 360p, ``make footage`` output) and the wheels the node lacks (PyAV for decoding and
NVDEC, pydantic for the analytics rules' zone configs). It checks that the bundle plus the working
tree stay under the device tool's 64 MiB and prints the ``run`` tool call to make.

``run OUT`` (on the node, ``python3``): runs, each with its share of ``--budget-s`` (default 480 s:
the issue's 8 minutes; a step's unused time goes to the later ones, and each script is told its
own budget so it writes its JSON before it would be killed):

1. ``nvdec_ingest.py``: CPU (all cores) and NVDEC decode, every-frame and keyframe-only;
2. ``torch_detector_check.py``: agreement with onnxruntime, then fp16 forward and end-to-end
   throughput, batches 1..256 at 416 and 640;
3. ``e2e_loop.py`` twice (1080p, 360p): decode → device preprocess → fp16 detector → crowd rule,
   against the same run's decode-only and detector-only limits.

Everything lands in ``OUT`` (at most 8 files, the device tool's limit): the scripts' JSON,
``run_all.log`` (every step's output) and ``summary.json`` (headline figures and whether the
end-to-end loop reached >= 0.8 of min(decode, detector)).

CPU dry run here: ``.venv/bin/python -m benchmarks.gpu.run_all run /tmp/gpu-dry --device cpu --quick
--budget-s 90 --bundle .cache/gpu-bundle`` (or ``--streams``/``--models-dir`` instead of a bundle).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEVICE_LIMIT_MIB = 64.0
MODEL = "yolox_nano"
# Prepared streams the bundle carries: (tag, glob in the streams folder, loop to at least this many
# seconds). Looped (remuxed, benchmarks/performance/ingest.py's loop_file) so decoders rarely rewind: ~10 MB
# and ~3 MB.
STREAMS: tuple[tuple[str, str], ...] = (
    ("1080p", "town_centre_pedestrians.h264.gop1s.native.*.x6.mp4"),
    ("360p", "street_people_walking.h264.gop1s.h360.*.x3.mp4"),
)
LOOP_S = {"1080p": 20.0, "360p": 30.0}
# Wheels for the node's Python 3.12 (abi3 / pure where possible); pinned to what the venv runs.
WHEELS: tuple[str, ...] = (
    "av==18.1.0",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


# ------------------------------------------------------------------------------------ prepare


def _size_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def working_tree_mib() -> float:
    """Tracked plus untracked-not-ignored files: what the device tool sends besides carried paths."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    total = 0
    for name in out.split(b"\0"):
        p = ROOT / name.decode()
        if name and p.is_file():
            total += p.stat().st_size
    return total / 2**20


def prepare(args: argparse.Namespace) -> int:
    bundle: Path = args.bundle
    (bundle / "models").mkdir(parents=True, exist_ok=True)
    (bundle / "streams").mkdir(exist_ok=True)
    (bundle / "wheels").mkdir(exist_ok=True)
    src_model = args.models_dir / MODEL
    if not (src_model / f"{MODEL}.onnx").is_file():
        raise SystemExit(f"{src_model}/{MODEL}.onnx not found: pass --models-dir")
    shutil.copytree(src_model, bundle / "models" / MODEL, dirs_exist_ok=True)
    for tag, pattern in STREAMS:
        found = sorted(args.streams.glob(pattern))
        if not found:
            base = sorted(args.streams.glob(pattern.replace(".x6.mp4", ".mp4").replace(".x3.mp4", ".mp4")))
            if not base:
                raise SystemExit(f"no {pattern} in {args.streams} ({tag}): run `make footage`")
            from benchmarks.performance.ingest import loop_file  # here only (PyAV); imports no Ray

            found = [loop_file(base[0], LOOP_S[tag])[0]]
        dst = bundle / "streams" / f"{tag}.mp4"
        if not dst.is_file() or dst.stat().st_size != found[0].stat().st_size:
            shutil.copyfile(found[0], dst)
    missing = [w for w in WHEELS if not list((bundle / "wheels").glob(w.split("==")[0].replace("-", "_") + "-*.whl"))]
    if missing and not args.no_download:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(bundle / "wheels")]
        for plat in PLATFORMS:
            cmd += ["--platform", plat]
        subprocess.run(cmd + missing, check=True)
    tree, carried = working_tree_mib(), _size_mib(bundle)
    total = tree + carried
    print(f"bundle {bundle}: {carried:.1f} MiB (models, streams, wheels); working tree {tree:.1f} MiB; ", end="")
    print(f"together {total:.1f} of the device tool's {DEVICE_LIMIT_MIB:.0f} MiB")
    if total > DEVICE_LIMIT_MIB:
        raise SystemExit("over the device tool's limit: drop a stream or untracked files")
    rel = bundle.resolve().relative_to(ROOT)
    command = (
        f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "
        f"{rel}/wheels/*.whl && export PYTHONPATH=/tmp/site; PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu.run_all "
        f"run $OUT --bundle {rel} --budget-s {int(args.budget_s)}"
    )
    print("\nOn a session whose task has a GPU (the `run` tool, not a shell):")
    print(json.dumps({"command": command, "carry": [str(rel)], "timeout_s": 600}, indent=2))
    print(
        "\nIt writes summary.json, run_all.log and the scripts' JSON to $OUT "
        f"(~{args.budget_s / 60:.0f} min of device time plus the machine's start); give_back after."
    )
    return 0


# ---------------------------------------------------------------------------------------- run


@dataclass
class Step:
    name: str
    share: float
    """Fraction of the budget left when the step starts, over the shares of the steps left."""
    argv: list[str]
    result_file: str
    rc: int | None = None
    timed_out: bool = False
    budget_s: float = 0.0
    elapsed_s: float = 0.0
    skipped: str | None = None


@dataclass
class Summary:
    started: str
    budget_s: float
    elapsed_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    nvdec: list[dict[str, Any]] = field(default_factory=list)
    detector: list[dict[str, Any]] = field(default_factory=list)
    e2e: list[dict[str, Any]] = field(default_factory=list)
    target_met: bool | None = None
    """Every e2e configuration reached >= 0.8 of min(decode-only, detector-only); None if none ran."""


def _sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()[-2000:]
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"


def environment() -> dict[str, Any]:
    probe = (
        "import importlib.util, json, sys\n"
        "out = {'ray_installed': importlib.util.find_spec('ray') is not None}  # looked up, never imported\n"
        "for m in ('torch', 'torchvision', 'av', 'cv2', 'onnxruntime', 'pydantic'):\n"
        "    try:\n"
        "        mod = __import__(m); out[m] = getattr(mod, '__version__', 'present')\n"
        "    except Exception as exc:\n"
        "        out[m] = f'missing ({type(exc).__name__})'\n"
        "try:\n"
        "    import torch; out['cuda'] = torch.cuda.is_available()\n"
        "    out['gpu'] = torch.cuda.get_device_name(0) if out['cuda'] else None\n"
        "except Exception as exc:\n"
        "    out['cuda'] = str(exc)\n"
        "try:\n"
        "    import av; out['h264_cuvid'] = 'h264_cuvid' in av.codecs_available\n"
        "except Exception:\n"
        "    pass\n"
        "print(json.dumps(out))\n"
    )
    try:  # no shell: the probe is several lines of Python
        packages = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        packages = f"{type(exc).__name__}: {exc}"
    try:
        parsed: Any = json.loads(packages.splitlines()[-1])
    except (ValueError, IndexError):
        parsed = packages
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": parsed,
        "nvidia_smi": _sh("nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader"),
        "libnvcuvid": _sh("ldconfig -p | grep -i nvcuvid || ls /usr/local/nvidia/lib64 2>/dev/null | grep -i nvcuvid"),
    }


def plan_steps(args: argparse.Namespace, streams: Path, models: Path) -> list[Step]:
    py = sys.executable
    dev = ["--device", args.device]
    quick = ["--quick"] if args.quick else []
    # In a bundle the streams are <tag>.mp4; in .cache/streams the STREAMS patterns; else any.
    files = {tag: sorted(streams.glob(f"{tag}.mp4")) or sorted(streams.glob(pattern)) for tag, pattern in STREAMS}
    globs = {tag: [found[0].name] if found else ["*.mp4"] for tag, found in files.items()}
    clip = next(iter(files["1080p"] or files["360p"] or sorted(streams.glob("*.mp4"))), None)
    out = str(args.out)
    common_e2e = [py, "-m", "benchmarks.gpu.e2e_loop", "--streams", str(streams), "--models-dir", str(models)]
    common_e2e += ["--out", out, *dev, *quick, "--seconds", str(args.e2e_seconds)]
    tdc = [py, "-m", "benchmarks.gpu.torch_detector_check", "--models-dir", str(models), "--out", out, *dev]
    tdc += ["--precisions", "fp16"] if args.device != "cpu" else ["--precisions", "fp32"]
    tdc += ["--sizes", "416"] if args.quick else ["--sizes", "416", "640"]
    tdc += ["--batches", "1", "8", "32", "64", "128", "256", *quick]
    if clip is not None:
        tdc += ["--clip", str(clip)]
    nvdec = [py, "-m", "benchmarks.gpu.nvdec_ingest", "--streams", str(streams), "--out", out, *quick]
    nvdec += ["--files", *globs["1080p"], *globs["360p"], "--concurrency", "1", str(os.cpu_count() or 1)]
    nvdec += ["--seconds", "4"]
    threads = str(os.cpu_count() or 1)
    decoders = ["cpu"] if args.device == "cpu" else ["cpu", "nvdec"]
    per_run = ["--decoders", *decoders, "--decode-threads", threads, "--batch"]
    return [
        Step("nvdec_ingest", 0.19, nvdec, "nvdec_ingest.json"),
        Step("torch_detector_check", 0.31, tdc, "torch_detector_check.json"),
        Step(
            "e2e_1080p",
            0.26,
            [*common_e2e, "--files", *globs["1080p"], "--tag", "1080p", "--cameras", "32", *per_run, "64"],
            "e2e_loop-1080p.json",
        ),
        Step(
            "e2e_360p",
            0.24,
            [*common_e2e, "--files", *globs["360p"], "--tag", "360p", "--cameras", "64", *per_run, "256"],
            "e2e_loop-360p.json",
        ),
    ]


def run_step(step: Step, budget_s: float, log: Path) -> None:
    """Run ``step`` telling it ``budget_s`` minus a margin, killed at ``budget_s`` plus one."""
    step.budget_s = round(budget_s, 1)
    inner = max(5.0, budget_s * 0.85 - 15.0)  # imports, model loads and the JSON write come on top
    argv = [*step.argv, "--budget-s", f"{inner:.0f}"]
    t0 = time.monotonic()
    with log.open("a") as fh:
        fh.write(f"\n===== {step.name}: budget {budget_s:.0f} s (inner {inner:.0f} s)\n$ {' '.join(argv)}\n")
        fh.flush()
        print(f"===== {step.name}: budget {budget_s:.0f} s", flush=True)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        assert proc.stdout is not None
        watchdog = threading.Timer(budget_s + 15.0, proc.kill)  # fires even if the step prints nothing
        watchdog.start()
        try:
            for line in proc.stdout:
                fh.write(line)
                print(line, end="", flush=True)
            rc = proc.wait()
        finally:
            watchdog.cancel()
        if rc < 0 and time.monotonic() - t0 >= budget_s + 15.0:
            step.timed_out, step.rc = True, None
            fh.write(f"===== {step.name}: killed after {time.monotonic() - t0:.0f} s\n")
        else:
            step.rc = rc
    step.elapsed_s = round(time.monotonic() - t0, 1)


def _load(out: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


def headline(summary: Summary, out: Path) -> None:
    nv = _load(out, "nvdec_ingest.json")
    if nv:
        best: dict[tuple[str, str, bool], dict[str, Any]] = {}
        for row in nv.get("results", []):
            key = (row["file"], row["backend_used"], row["keyframe_only"])
            if key not in best or row["frames_per_s"] > best[key]["frames_per_s"]:
                best[key] = row
        summary.nvdec = list(best.values())
    tdc = _load(out, "torch_detector_check.json")
    if tdc:
        for point in tdc.get("throughput", []):
            if point.get("scope") == "forward":
                keep = ("size", "batch", "precision", "img_per_s", "p50_ms")
                summary.detector.append({k: point.get(k) for k in keep})
    ratios: list[dict[str, Any]] = []
    for tag in ("1080p", "360p"):
        doc = _load(out, f"e2e_loop-{tag}.json")
        if not doc:
            continue
        for r in doc.get("ratios", []):
            ratios.append({"tag": tag, **r})
        for e in doc.get("errors", []):
            ratios.append({"tag": tag, "error": e})
    summary.e2e = ratios
    measured = [r for r in ratios if "meets_target" in r]
    summary.target_met = all(r["meets_target"] for r in measured) if measured else None


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + args.budget_s
    streams = args.streams or (args.bundle / "streams" if args.bundle else None)
    models = args.models_dir or (args.bundle / "models" if args.bundle else None)
    if streams is None or models is None:
        raise SystemExit("give --bundle, or --streams and --models-dir")
    log = out / "run_all.log"
    log.write_text(f"run_all {' '.join(sys.argv)}\n")
    summary = Summary(started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), budget_s=args.budget_s)
    summary.environment = environment()
    print(json.dumps(summary.environment, indent=1), flush=True)
    steps = [s for s in plan_steps(args, streams.resolve(), models.resolve()) if not args.steps or s.name in args.steps]
    for i, step in enumerate(steps):
        left = deadline - time.monotonic()
        shares = sum(s.share for s in steps[i:])
        budget = left * step.share / shares
        if budget < 10:
            step.skipped = f"only {budget:.0f} s of the budget left"
        else:
            run_step(step, budget, log)
        summary.steps.append(asdict(step))
    headline(summary, out)
    summary.elapsed_s = round(time.monotonic() - start, 1)
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in asdict(summary).items() if k != "environment"}, indent=1, default=str))
    print(f"wrote {out}/summary.json in {summary.elapsed_s} s; target met: {summary.target_met}")
    return 0 if all(s.rc == 0 for s in steps if s.skipped is None) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="here: build the bundle and print the device command")
    p.add_argument("--bundle", type=Path, default=ROOT / ".cache" / "gpu-bundle")
    p.add_argument("--models-dir", type=Path, default=ROOT.parent / "shared" / "models")
    p.add_argument("--streams", type=Path, default=ROOT / ".cache" / "streams")
    p.add_argument("--budget-s", type=float, default=480.0)
    p.add_argument("--no-download", action="store_true", help="do not fetch missing wheels")
    r = sub.add_parser("run", help="on the GPU node: run every benchmark inside --budget-s")
    r.add_argument("out", type=Path)
    r.add_argument("--bundle", type=Path, default=None)
    r.add_argument("--streams", type=Path, default=None)
    r.add_argument("--models-dir", type=Path, default=None)
    r.add_argument("--budget-s", type=float, default=480.0)
    r.add_argument("--device", default="cuda")
    r.add_argument("--quick", action="store_true", help="CPU dry run: pass --quick to every script")
    r.add_argument("--e2e-seconds", type=float, default=10.0)
    r.add_argument("--steps", nargs="*", default=[], help="only these steps (names as in summary.json)")
    args = parser.parse_args(argv)
    return prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    sys.exit(main())
