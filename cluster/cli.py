"""``cctv``: the command line of cctv-cluster.

* ``cctv run``: the main job (local Ray, embedded S3, Serve apps, cameras) until Ctrl-C
  or ``--duration``; then everything stops in reverse and a summary is printed.
* ``cctv footage prepare``: convert the demo footage to camera-like H.264 streams once.
* ``cctv config check FILE``: validate a configuration and print every problem.
* ``cctv cameras list|add|update|remove|transfer``: live camera changes through the control API.
* ``cctv plan``: nodes, cores, GPUs and network for a camera estate, from the measured benchmarks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

from cluster import cameras_cli, evidence_cli, plan
from cluster.provenance import provenance
from configs.loader import ConfigError, load_config
from configs.schema import AppConfig, CameraConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def _default_data_dir() -> Path:
    return Path(os.environ.get("CCTV_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "clips"))


def _default_cache_dir() -> Path:
    return Path(os.environ.get("CCTV_CACHE_DIR", REPO_ROOT / ".cache"))


def _prepared_sources(cache_dir: Path, data_dir: Path | None) -> list[Path]:
    from cluster.footage import demo_sources

    vtest = cache_dir / "footage" / "vtest.avi"
    return demo_sources(
        cache_dir / "streams",
        data_dir if data_dir and data_dir.is_dir() else None,
        vtest if vtest.is_file() else None,
    )


def cmd_footage(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    paths = _prepared_sources(args.cache_dir, args.data_dir)
    for p in paths:
        print(p)
    print(f"{len(paths)} camera streams ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0 if paths else 1


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    per_node = cfg.cluster.shards_per_node
    shards = f"{per_node} shards per node" if per_node is not None else f"{cfg.cluster.num_shards} shards"
    print(f"{args.file}: OK ({len(cfg.cameras)} cameras, {shards})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cluster.demo import demo_cameras

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.state_dir is not None:
        cfg = cfg.model_copy(update={"state_dir": args.state_dir})
    cameras = list(cfg.cameras)
    simulator = None
    source_line = f"from {args.config}"
    if not cameras:
        sources = _prepared_sources(args.cache_dir, args.data_dir)
        urls = None
        source_line = f"files looped directly ({len(sources)} clips; asked for with --camera-source file)"
        if args.camera_source == "rtsp":
            simulator, source_line = _start_simulator(sources, args.cameras, cfg.state_dir)
            urls = simulator.camera_urls() if simulator is not None else None
        cameras = demo_cameras(
            sources,
            args.cameras,
            crowd_threshold_people=args.crowd_threshold,
            decode_mode=args.decode_mode,
            urls=urls,
        )
    # Demo cameras are this run's inventory, as if the config had listed them.
    cfg = cfg.model_copy(update={"cameras": cameras})
    try:
        return _run_job(args, cfg, cameras, source_line)
    finally:
        if simulator is not None:
            simulator.stop()  # started first, stopped last


def _start_simulator(sources: list[Path], n: int, state_dir: Path):
    """The demo's cameras as RTSP streams from the local GStreamer simulator, and the banner's line
    saying where the cameras come from (no simulator when GStreamer is not installed: files)."""
    from cluster.rtsp_sim import RtspSimulator, system_ready

    ok, why = system_ready()
    if not ok:
        line = (
            f"FILES looped directly, not RTSP: the RTSP camera simulator is unavailable ({why}); "
            "`make system-deps` (root) installs it"
        )
        print(f"cameras: {line}", file=sys.stderr, flush=True)
        return None, line
    state_dir.mkdir(parents=True, exist_ok=True)
    sim = RtspSimulator({p.name.split(".")[0]: p for p in sources}, cameras=n, log_path=state_dir / "rtsp-sim.log")
    sim.start()
    line = f"RTSP from the local GStreamer simulator: {len(sources)} clips as {n} cameras at rtsp://{sim.host}:{sim.port}/cam1.."
    print(f"cameras: {line}", flush=True)
    return sim, line


def _run_job(args: argparse.Namespace, cfg: AppConfig, cameras: list[CameraConfig], source_line: str) -> int:
    from cluster.runtime import Runtime, StartupError

    # Ctrl-C and SIGTERM stop the job. SIGINT is installed explicitly too: a process started with SIGINT ignored
    # (a background job of a script, nohup, some CI runners) inherits SIG_IGN, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    runtime = Runtime(cfg, include_dashboard=not args.no_dashboard)
    t_start = time.time()
    stopped_by = "duration"
    try:
        ep = runtime.start()
        placement = runtime.assignment()
        t_start = time.time()
        until = "" if args.duration is None else f" or after {args.duration:.0f} s"
        print(
            "\ncctv-cluster is running\n"
            f"  cameras          {len(placement)} on {len(set(placement.values()))} shards\n"
            f"  camera source    {source_line}\n"
            f"  control API      {ep.serve_url}/cameras  (OpenAPI: {ep.serve_url}/docs)\n"
            f"  API token        {_token_line(ep, cfg)}\n"
            f"  metrics          Prometheus file_sd: {ep.prometheus_file_sd}\n"
            f"                   (each shard and detector replica serves /metrics on its own port;"
            f" also {ep.serve_url}/metrics/targets)\n"
            f"  Ray dashboard    {ep.dashboard_url or 'off'}\n"
            f"  Ray logs         {ep.ray_logs}\n"
            f"  S3               http://{ep.s3_endpoint}  bucket {ep.bucket!r}  (clips/YYYY/MM/DD/<camera>/)\n"
            f"  stop             Ctrl-C{until}\n",
            flush=True,
        )
        deadline = None if args.duration is None else t_start + args.duration
        while deadline is None or time.time() < deadline:
            time.sleep(min(5.0, max(0.1, (deadline or time.time() + 5) - time.time())))
            if args.progress:
                _print_progress(runtime, time.time() - t_start)
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    except StartupError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    finally:
        elapsed_s = time.time() - t_start
        print("stopping (in reverse order of start)...", flush=True)
        runtime.stop()
    summary = {"provenance": provenance(), **_summary(runtime, elapsed_s, stopped_by, len(cameras))}
    out = args.summary_json or cfg.state_dir / "run-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"summary written to {out}")
    return 0


def _token_line(ep: object, cfg: AppConfig) -> str:
    """How to call the API: the demo's generated admin token (shown on the terminal only), or where tokens come from."""
    token_file = getattr(ep, "api_token_file", None)
    token = getattr(ep, "api_token", None)
    if token_file is not None and token:
        return f"admin: Bearer {token}  (kept in {token_file}, mode 0600; `cctv cameras` reads it)"
    if not cfg.api.auth_required:
        return "none needed (api.auth_required is false: every caller is an admin)"
    return f"from ${cfg.api.tokens_env} (token:role pairs)"


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _print_progress(runtime: object, elapsed_s: float) -> None:
    stats = runtime.stats()  # type: ignore[attr-defined]
    decoded = sum(s.frames_decoded for s in stats)
    analysed = sum(s.frames_analysed for s in stats)
    events = sum(s.events for s in stats)
    print(f"[{elapsed_s:6.0f} s] decoded {decoded} analysed {analysed} events {events}", flush=True)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def _summary(runtime: object, elapsed_s: float, stopped_by: str, n_cameras: int) -> dict[str, object]:
    stats = runtime.final_stats  # type: ignore[attr-defined]
    lat = [x for s in stats for x in s.e2e_latency_ms]
    batches: dict[int, int] = {}
    for s in stats:
        for size, n in s.batch_sizes.items():
            batches[size] = batches.get(size, 0) + n
    elapsed_s = max(elapsed_s, 1e-9)
    return {
        "stopped_by": stopped_by,
        "duration_s": round(elapsed_s, 1),
        "cameras": n_cameras,
        "packets_per_s": round(sum(s.packets for s in stats) / elapsed_s, 1),
        "decoded_fps": round(sum(s.frames_decoded for s in stats) / elapsed_s, 1),
        "sampled_fps": round(sum(s.frames_sampled for s in stats) / elapsed_s, 2),
        "analysed_fps": round(sum(s.frames_analysed for s in stats) / elapsed_s, 2),
        "frames_dropped": sum(s.frames_dropped for s in stats),
        "detector_errors": sum(s.detector_errors for s in stats),
        "detector_batch_sizes_seen": {str(k): v for k, v in sorted(batches.items())},
        "e2e_latency_ms_p50": _round(_percentile(lat, 50)),
        "e2e_latency_ms_p99": _round(_percentile(lat, 99)),
        "event_transitions": sum(s.events for s in stats),
        "clips_written": sum(s.clips_written for s in stats),
        "clips_stored_in_s3": len(runtime.stored_clips),  # type: ignore[attr-defined]
        "clips_pending_in_spool": sum(s.spool_pending for s in stats),
        "shards": [{k: v for k, v in asdict(s).items() if k not in ("e2e_latency_ms", "batch_sizes")} for s in stats],
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _open_model_store(args: argparse.Namespace):
    """The registry of the configured store, or of the embedded store's data dir (started briefly)."""
    from storage.access import S3Access
    from storage.embedded_s3 import EmbeddedS3
    from storage.model_store import ModelStore

    cfg = load_config(args.config)
    st = cfg.storage
    cache = cfg.state_dir / "model-cache"
    if st.endpoint is not None:
        registry = S3Access.from_config(st).with_bucket(st.models_bucket)
        return ModelStore(registry, cache_dir=cache), lambda: None
    s3 = EmbeddedS3(cfg.state_dir / "s3").start()
    return ModelStore(s3.access(st.models_bucket), cache_dir=cache), s3.stop


def _class_list(text: str) -> list[str]:
    """``fire,smoke`` -> ``["fire", "smoke"]`` (names trimmed; none may be empty)."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"--classes {text!r} has an empty class name")
    return names


def cmd_models(args: argparse.Namespace) -> int:
    from cluster.models import push_model
    from storage.access import S3AccessError
    from storage.model_store import ModelRegistryError

    try:
        store, stop = _open_model_store(args)
    except (ConfigError, S3AccessError) as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        store.ensure_bucket()
        if args.models_command == "push":
            m = push_model(
                store, args.file, name=args.name, version=args.version, licence=args.licence, classes=args.classes
            )
            print(
                f"pushed {m.ref}: {m.size_bytes} bytes, sha256 {m.sha256}, input {m.input_size}px, "
                f"{len(m.classes)} classes, licence {m.licence}"
            )
        else:
            rows = store.list(args.name)
            print(f"{'model':<28} {'input':>5} {'classes':>7}  {'sha256':<12}  {'licence':<12} created")
            for m in rows:
                print(
                    f"{m.ref:<28} {m.input_size:>5} {len(m.classes):>7}  {m.sha256[:12]}  {m.licence:<12} "
                    f"{m.created_at:%Y-%m-%d %H:%M}"
                )
            if not rows:
                print("(no models)")
        return 0
    except (ModelRegistryError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cctv", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the main job until Ctrl-C or --duration")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    run.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    run.add_argument("--cameras", type=int, default=8, help="demo cameras when the config lists none")
    run.add_argument("--crowd-threshold", type=int, default=5, help="people per demo zone that open an event")
    run.add_argument(
        "--camera-source",
        choices=["rtsp", "file"],
        default="rtsp",
        help="demo cameras: RTSP streams from the local simulator, or the files looped directly",
    )
    run.add_argument("--decode-mode", choices=["keyframe", "sampled", "all"], default="keyframe")
    run.add_argument("--state-dir", type=Path, default=None, help="override state_dir of the config")
    run.add_argument("--data-dir", type=Path, default=_default_data_dir(), help="extra footage (.mp4/.avi)")
    run.add_argument("--cache-dir", type=Path, default=_default_cache_dir())
    run.add_argument("--no-dashboard", action="store_true", help="do not start Ray's dashboard")
    run.add_argument("--progress", action="store_true", help="print totals every 5 s")
    run.add_argument("--summary-json", type=Path, default=None, help="where to write the run summary")
    run.set_defaults(func=cmd_run)

    fp = sub.add_parser("footage", help="demo footage")
    fsub = fp.add_subparsers(dest="footage_command", required=True)
    prep = fsub.add_parser("prepare", help="convert footage to H.264 camera streams (1 s GOP), cached")
    prep.add_argument("--data-dir", type=Path, default=_default_data_dir())
    prep.add_argument("--cache-dir", type=Path, default=_default_cache_dir())
    prep.set_defaults(func=cmd_footage)

    mp = sub.add_parser("models", help="the model registry (S3 'models' bucket)")
    msub = mp.add_subparsers(dest="models_command", required=True)
    push = msub.add_parser("push", help="validate an ONNX model and push it as NAME@VERSION")
    push.add_argument("file", type=Path)
    push.add_argument("--name", required=True)
    push.add_argument("--version", required=True)
    push.add_argument("--licence", default=None, help="SPDX id (default: read the LICENSE beside the file)")
    push.add_argument(
        "--classes",
        type=_class_list,
        default=None,
        help="class names in the order of the model's class scores, comma-separated (e.g. fire,smoke); "
        "required unless the model has 80 (COCO) or 1 (person) classes",
    )
    lst = msub.add_parser("list", help="list models and versions")
    lst.add_argument("--name", default=None)
    for p_ in (push, lst):
        p_.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        p_.set_defaults(func=cmd_models)

    cp = sub.add_parser("config", help="configuration")
    csub = cp.add_subparsers(dest="config_command", required=True)
    chk = csub.add_parser("check", help="validate a configuration file")
    chk.add_argument("file", type=Path)
    chk.set_defaults(func=cmd_config_check)

    cameras_cli.add_parser(sub)
    evidence_cli.add_parser(sub)
    plan.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
