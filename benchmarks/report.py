"""The README's performance figures, generated from the latest ``benchmarks/results/*.json``.

Every number in the generated block is read from a result file and linked to it; a benchmark
that has not been run shows as "not measured". ``make bench`` runs the benchmarks and then this
script, which prints the block and rewrites the README between the markers
``<!-- performance:start -->`` and ``<!-- performance:end -->``.

Run: ``.venv/bin/python -m benchmarks.report [--readme README.md] [--check] [--results DIR --print-only]``
(``--check``: exit 1 if the README's block differs from what the results give, without writing;
``--print-only``: the block from another result directory, e.g. ``make bench BENCH_OUT=/tmp/b``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _link(name: str) -> str:
    return f"[{name}.json](benchmarks/results/{name}.json)"


def _machine(rec: dict[str, Any]) -> str:
    prov = rec.get("provenance", {})
    m = prov.get("machine", {}) if isinstance(prov, dict) else {}
    cores = m.get("cpus") or m.get("cpu_count") or "?"
    commit = str(prov.get("git_commit", prov.get("commit", "?")))[:10] if isinstance(prov, dict) else "?"
    return f"{cores} CPUs, commit {commit}"


def _demo(lines: list[str]) -> None:
    d = _load("run_demo")
    if d is None:
        lines.append("* **Main job** (`cctv run --duration 120`): not measured")
        return
    lines.append(
        f"* **Main job** — `cctv run --duration {d['duration_s']:.0f}` with {d['cameras']} RTSP demo cameras "
        f"({_link('run_demo')}): {d['packets_per_s']:.0f} packets/s demuxed, {d['analysed_fps']:.1f} frames/s "
        f"analysed, {d['frames_dropped']} dropped, end-to-end latency p50 {d['e2e_latency_ms_p50']:.0f} ms / "
        f"p99 {d['e2e_latency_ms_p99']:.0f} ms, {d['clips_stored_in_s3']} event clips stored."
    )


def _ingest(lines: list[str]) -> None:
    r = _load("ingest")
    if r is None:
        lines.append("* **Ingest** (`benchmarks/performance/ingest.py`): not measured")
        return
    per, ratios = r["cameras_per_core_derived"], r["ratios_ours_over_raw"]
    lines += [
        f"* **Ingest** — `benchmarks/performance/ingest.py` ({_link('ingest')}, {_machine(r)}): real-time cameras per "
        "core of our ingest path, and its ratio to a plain PyAV loop decoding the same file (target >= 0.9):",
        "",
        "  | | keyframe @1 fps | sampled @1 fps | every frame |",
        "  |---|---|---|---|",
    ]
    keys = (
        ("keyframe", "keyframe_vs_raw_keyframe_bgr"),
        ("sampled", "sampled_vs_raw_decode_sampled_bgr"),
        ("all", "all_vs_raw_decode_bgr"),
    )
    for res in per:
        cells = [f"{per[res][f'ours_{mode}']:.0f} ({ratios[res][key]:.2f}x)" for mode, key in keys]
        lines.append(f"  | {res} | " + " | ".join(cells) + " |")
    lines.append("")


_RTSP_READERS = {
    "ours": "ours (FFmpeg per camera, `ingest.rtsp_receiver: ffmpeg`)",
    "ours_loop": "ours on the receive loop (`ingest.rtsp_receiver: loop`)",
    "loop": "the bare receive loop",
    "gst": "GStreamer rtspsrc→appsink",
}


def _ingest_rtsp(lines: list[str]) -> None:
    r = _load("ingest_rtsp")
    if r is None:
        return
    ratios = r.get("ratio_over_raw_per_core") or {"ours": r["ratio_ours_over_raw_per_core"]}

    def cells(reader: str) -> str:
        out = []
        for p in r["points"]:
            if p["reader"] != reader:
                continue
            k = f"{p['transport']}/{p['cameras']}"
            ratio = ratios.get(reader, {}).get(k)
            # A reader that fell behind received less, so its CPU is no fair comparison.
            out.append(
                f"{p['cameras']} {p['transport'].upper()}: {p['cameras_per_core']:.0f}/core"
                + (f" ({ratio}x raw)" if ratio is not None and p["keeps_up"] else "")
                + ("" if p["keeps_up"] else ", fell behind")
            )
        return "; ".join(out)

    raw = [p["cameras_per_core"] for p in r["points"] if p["reader"] == "raw"]
    parts = [f"{label}: {cells(reader)}" for reader, label in _RTSP_READERS.items() if cells(reader)]
    floor = r.get("keyframe_decode_ms")
    floor_text = (
        f" Keyframe decode + BGR alone, same stream: {floor['decode'] + floor['bgr']:.2f} CPU-ms per keyframe, "
        f"i.e. at most {floor['cameras_per_core_at_1_keyframe_per_s']:.0f} cameras/core at one keyframe a second "
        "with free reception."
        if floor
        else ""
    )
    lines.append(
        f"* **Live RTSP ingest** — `benchmarks/performance/ingest_rtsp.py` ({_link('ingest_rtsp')}, {_machine(r)}): "
        f"360p keyframe "
        f"@1 fps from the GStreamer simulator, this process's CPU only; a plain PyAV reader holds "
        f"{min(raw):.0f}-{max(raw):.0f} cameras/core (receiving RTP costs more than decoding keyframes). "
        + ". ".join(parts)
        + "."
        + floor_text
    )


def _ingest_rtsp_scale(lines: list[str]) -> None:
    r = _load("ingest_rtsp_scale")
    if r is None:
        return
    rows = []
    for reader, label in (("ours_loop", "receive loop"), ("ours", "FFmpeg")):
        mine = sorted((p for p in r["points"] if p["reader"] == reader), key=lambda p: p["cameras"])
        if not mine:
            continue
        cells = [
            f"{p['cameras']}: {p['rss_growth_mib'] / p['cameras']:.2f} MiB, "
            f"{p['python_threads'] / p['cameras']:.2f} threads"
            + (f", {1e3 / p['cameras_per_core']:.1f} CPU-ms/s" if p["keeps_up"] else ", simulator saturated")
            for p in mine
        ]
        rows.append(f"{label}: " + "; ".join(cells))
    lines.append(
        f"* **Cameras per process** — `benchmarks/performance/ingest_rtsp.py --name ingest_rtsp_scale "
        f"--fresh-process` ({_link('ingest_rtsp_scale')}, {_machine(r)}): per camera, memory growth of a fresh "
        "process (pre-roll ring + decoder + state), Python threads, and CPU where the simulator kept up (on 2 "
        "cores it cannot serve 200 or more 30 fps cameras): " + ". ".join(rows) + "."
    )


def _inference(lines: list[str]) -> None:
    r = _load("inference")
    if r is None:
        lines.append("* **Inference** (`benchmarks/performance/inference.py`): not measured")
        return
    best = r["ratios"]["best"]
    res = r["results"]

    def top(series: str) -> tuple[str, float]:
        pts = res.get(series, {})
        b = max(pts, key=lambda k: pts[k]["images_per_s"])
        return b, pts[b]["images_per_s"]

    raw_b, raw = best["raw_batch"], best["raw_images_per_s"]
    parts = []
    for series, label in (
        ("serve_handle_list", "handle, lists of frames per call (the shards' path)"),
        ("serve_handle", "handle, one frame per call"),
        ("serve_http_list", "HTTP, multipart batch of JPEGs"),
        ("serve_http", "HTTP, one JPEG per request"),
    ):
        if series in res:
            b, v = top(series)
            parts.append(f"{label} {v:.0f} img/s at B={b} ({v / raw:.2f}x)")
    lines.append(
        f"* **Inference** — `benchmarks/performance/inference.py` ({_link('inference')}, {_machine(r)}): "
        f"{r['model']} on {r['backend']}, raw runner best {raw:.0f} img/s (B={raw_b}); behind Serve "
        "(best vs raw best, target >= 0.85): " + "; ".join(parts) + "."
    )


def _backends(lines: list[str]) -> None:
    r = _load("backends")
    if r is None:
        lines.append("* **Detector backends** (`benchmarks/performance/backends.py`): not measured")
        return
    for model, m in r["results"].items():
        entries = m["backends"]
        ort = entries.get("onnxruntime", {}).get("best", {}).get("images_per_s_per_core")
        parts = []
        for name, e in entries.items():
            b = e["best"]
            a = e["agreement_with_onnxruntime"]
            ratio = f", {b['images_per_s_per_core'] / ort:.2f}x" if ort and name != "onnxruntime" else ""
            cpu_ms = [p["cpu_ms_per_image"] for p in e["points"]]
            parts.append(
                f"{name} {b['images_per_s_per_core']:.1f} img/s per core at B={b['batch']}{ratio} "
                f"({min(cpu_ms):.1f}-{max(cpu_ms):.1f} CPU-ms/image over B={e['points'][0]['batch']}.."
                f"{e['points'][-1]['batch']}; {a['detections_reproduced']}/{a['reference_detections']} of "
                "onnxruntime's detections)"
            )
        lines.append(
            f"* **Detector backends** — `benchmarks/performance/backends.py` ({_link('backends')}, {_machine(r)}): "
            f"{model}@{m['input_size']}, one thread on one core, forward pass only: " + "; ".join(parts) + "."
        )


def _stage_text(extra: dict[str, Any]) -> str:
    """``decode 7 ms, queue 0 ms, ...`` from a point's per-stage means (cctv_frame_stage_seconds)."""
    b = extra.get("stage_breakdown") or {}
    parts = [
        f"{stage.replace('_', ' ')} {b[stage]['mean_s'] * 1000:.0f} ms"
        for stage in ("decode", "queue", "preprocess", "detector_call", "rules")
        if isinstance(b.get(stage), dict) and b[stage].get("mean_s") is not None
    ]
    return ", ".join(parts)


def _e2e(lines: list[str]) -> None:
    found = False
    for res in ("360p", "720p"):
        r = _load(f"e2e_{res}")
        if r is None:
            continue
        found = True
        held_n, lower = r["cameras_held"], r.get("cameras_held_is_lower_bound", {})
        held: dict[str, str] = {}
        for program in ("product", "baseline"):
            points = r.get(program) or []
            if held_n[program] == 0:  # no count passed: below the smallest tried
                held[program] = f"< {min((p['cameras'] for p in points), default=0)}"
            else:
                held[program] = f">= {held_n[program]}" if lower.get(program) else str(held_n[program])
        ratio = r["ratio_product_over_baseline"]
        if ratio is None or (lower.get("product") and lower.get("baseline")):
            ratio_text = "ratio not determined by this sweep"
        elif lower.get("baseline"):
            ratio_text = f"<= {ratio}x"
        elif lower.get("product"):
            ratio_text = f">= {ratio}x"
        else:
            ratio_text = f"{ratio}x"
        knee = next((p for p in r["product"] if not p["passed"]), None)
        best = max((p for p in r["product"] if p["passed"]), key=lambda p: p["cameras"], default=None)
        stages = best["extra"]["stages_s"] if best else {}
        limit = r.get("machine_ceiling")
        where = _stage_text(best["extra"]) if best else ""
        lines.append(
            f"* **End to end, {res}** — `benchmarks/performance/e2e.py --resolution {res}` ({_link(f'e2e_{res}')}, "
            f"{_machine(r)}): cameras held at 1 analytics fps with p99 frame age <= 1 s: product "
            f"{held['product']}, baseline one-process program {held['baseline']} -> "
            f"{ratio_text} (target 4x)"
            + (
                f"; this machine's ceiling, the unavoidable work alone (raw detector "
                f"{limit['detector_cpu_ms_per_camera_s']} + raw keyframe decode {limit['decode_cpu_ms_per_camera_s']}"
                f" + simulator {limit['simulator_cpu_ms_per_camera_s']} CPU-ms per camera-second on "
                f"{limit['cores']} cores), is {limit['cameras_ceiling']:.0f} cameras = "
                f"{r['ratio_ceiling_over_baseline']}x the baseline"
                + (", so 4x cannot be reached here" if r["ratio_ceiling_over_baseline"] < 4 else "")
                + f"; the product reaches {r['ratio_product_over_ceiling']} of it"
                if limit and r.get("ratio_ceiling_over_baseline")
                else ""
            )
            + (
                f"; at {best['cameras']} cameras e2e p50 {stages.get('e2e_p50')} s / p99 {stages.get('e2e_p99')} s, "
                f"detector call p50 {stages.get('detector_call_p50')} s, forward p50 "
                f"{stages.get('replica_forward_p50')} s" + (f"; mean per stage: {where}" if where else "")
                if best
                else ""
            )
            + (
                f"; the knee: {knee['cameras']} cameras fail (min rate {knee['rate_min_fps']} fps, "
                f"p99 age {knee['age_p99_s']} s)"
                if knee
                else ""
            )
            + "."
        )
    if not found:
        lines.append("* **End to end** (`benchmarks/performance/e2e.py`): not measured")


def _2(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _accuracy(lines: list[str]) -> None:
    a = _load("accuracy")
    if a is None:
        lines.append("* **Accuracy** (`python -m benchmarks.accuracy`): not measured")
        return
    fs = a["fire_smoke"]
    val, tun = fs["splits"]["validation"], fs["splits"]["tuning"]
    negatives = fs["all_negative_footage"]

    def _pr(m: dict) -> str:
        return f"P {_2(m['precision'])} / R {_2(m['recall'])}"

    fire_smoke = (
        f"fire {_pr(val['fire'])}, smoke {_pr(val['smoke'])} on the held-out validation clips "
        f"(tuning clips: fire {_pr(tun['fire'])}, smoke {_pr(tun['smoke'])}); false alarms per camera-hour on all "
        f"negative footage: fire {negatives['fire']['false_alarms_per_camera_hour']}, "
        f"smoke {negatives['smoke']['false_alarms_per_camera_hour']}"
    )
    water = a["water_level"]["overall"]
    intr, loit = a["intrusion_loitering"]["intrusion"], a["intrusion_loitering"]["loitering"]
    crowd = a["crowd_events"]["summary"]

    def _crowd(v: str, part: str) -> str:
        m = crowd[v][part]
        return f"{v} P {_2(m['precision'])} / R {_2(m['recall'])} (strict IoU {_pr(m['strict_iou'])})"

    shown = [v for v in ("yolox_nano@416", "yolox_nano@640", "yolox_nano@800") if v in crowd]
    if shown and "validation" in crowd[shown[0]]:
        crowd_parts = [
            "on the held-out validation clips ("
            f"{crowd[shown[0]]['validation']['gt_required']} true events) "
            + ", ".join(_crowd(v, "validation") for v in shown),
            "tuning clips " + ", ".join(_crowd(v, "tuning") for v in shown),
        ]
    else:
        crowd_parts = [f"{v} P {crowd[v]['precision']} / R {crowd[v]['recall']}" for v in shown]
    lines.append(
        f"* **Accuracy** — `python -m benchmarks.accuracy` ({_link('accuracy')}; "
        f"target P, R >= 0.9, water MAE <= 2 cm): "
        f"{fire_smoke}; "
        f"water level MAE {water['mae_cm']} cm, events P {water['precision']} / R {water['recall']}; "
        f"intrusion P {intr['precision']} / R {intr['recall']}, loitering P {loit['precision']} / R {loit['recall']}; "
        f"crowd events {'; '.join(crowd_parts)} (crowd cameras run at 640 px on CPU profiles, 800 px on GPU ones)."
    )
    gate = a["crowd_events"].get("motion_gate")
    if gate is not None:
        footage = gate.get("footage_1fps", {})
        fracs = [c["skipped_frac"] for c in footage.values()]
        val = gate["splits"]["validation"]["events"]
        lines.append(
            f"* **Motion gate** (per camera `motion_gate`, off by default; same run): at threshold "
            f"{gate['motion_threshold']:g} it skips {gate['skipped_frac_by_split']['validation']:.1%} of the "
            f"validation clips' crowd samples ({gate['skipped_frac_by_split']['tuning']:.1%} tuning)"
            + (f", {min(fracs):.0%}-{max(fracs):.0%} of every clip of the footage at 1 fps" if fracs else "")
            + f"; events the gate lost: {len(gate['events_missed_by_gate'])} of {gate['ungated_events']}, added: "
            f"{len(gate['events_added_by_gate'])}; validation with the gate {gate['variant']} P {_2(val['precision'])}"
            f" / R {_2(val['recall'])}. This footage is busy street and fire video: the gate saves detector work "
            "only on static views, so `cctv plan` assumes no skipping (`motion_skip_frac` 0)."
        )


def _api(lines: list[str]) -> None:
    r = _load("api")
    if r is None:
        return
    parts = []
    for route, points in r.get("results", {}).items():
        cells = [
            f"{p['concurrency']} clients {p['throughput_rps']:.0f} req/s "
            f"p50 {p['p50_ms']:.0f} / p99 {p['p99_ms']:.0f} ms"
            for p in points
        ]
        parts.append(f"{route}: " + ", ".join(cells))
    if parts:
        lines.append(
            f"* **Control API** — `benchmarks/performance/api.py` ({_link('api')}, {_machine(r)}): "
            + "; ".join(parts)
            + "."
        )


def _routing(lines: list[str]) -> None:
    r = _load("detector_routing")
    if r is None:
        return
    s = r["settings"]
    by_variant: dict[str, list[str]] = {}
    for p in r["points"]:
        share = "-" if p["same_node_share"] is None else f"{p['same_node_share']:.0%}"
        lost = p["calls"] - p["answered"]
        p50 = "-" if p["latency_ms_p50"] is None else f"{p['latency_ms_p50']:.0f}"
        by_variant.setdefault(p["variant"], []).append(
            f"{p['load_x']:g}x {share} same node, {lost} of {p['calls']} lost, p50 {p50} ms"
        )
    lines.append(
        f"* **Detector routing** — `benchmarks/performance/detector_routing.py` ({_link('detector_routing')}, "
        f"{_machine(r)}; 3-node `ray.cluster_utils.Cluster`, a shard-like caller on one worker sending "
        f"{s['frame_bytes'] / 1000:.0f} KB frames to stand-in replicas of {s['service_ms']:g} ms, "
        f"max_ongoing_requests {s['max_ongoing_requests']}, load as a multiple of one replica's capacity): "
        + "; ".join(f"{v}: " + ", ".join(cells) for v, cells in by_variant.items())
        + "".join(
            f"; local replica killed ({v['variant']}, {v['load_x']:g}x): {v['calls'] - v['answered']} of "
            f"{v['calls']} lost, {v['other_node_calls']} answered on the other node"
            for v in r.get("replica_loss", [])
        )
        + ". Why shards use same_node_first: docs/ARCHITECTURE.md (Same node first)."
    )


def _gpu(lines: list[str]) -> None:
    r = _load("gpu_summary")
    lines.append(
        "* **GPU node** — `make bench-gpu`: "
        + (f"see {_link('gpu_summary')}." if r else "not measured yet (no GPU was lent to the sessions so far).")
    )


def _plan(lines: list[str]) -> None:
    """Gwangju sized by ``cctv plan`` from the same result files (inputs traced to them)."""
    from cluster.plan import PlanInputError, PlanRequest, format_plan, make_plan

    cmd = "cctv plan --cameras 10069 --resolution 360p --fps 15 --analytics-fps 1 --mode keyframe"
    try:
        plan = make_plan(
            PlanRequest(cameras=10_069, resolution="360p", fps=15, analytics_fps=1, mode="keyframe"), RESULTS
        )
    except (PlanInputError, OSError, KeyError) as exc:
        lines.append(f"* **Gwangju sizing** (`{cmd}`): cannot be computed from the results ({exc})")
        return
    lines += [
        "",
        f"**Gwangju sizing** — `{cmd}` (every measured input names its result file and key; the rest are "
        "printed as assumptions):",
        "",
        "```",
        format_plan(plan).rstrip(),
        "```",
    ]
    loop = make_plan(
        PlanRequest(cameras=10_069, resolution="360p", fps=15, analytics_fps=1, mode="keyframe", receiver="loop"),
        RESULTS,
    )
    lines += [
        "",
        f"With `--receiver loop` (`ingest.rtsp_receiver: loop`): decode {loop.decode_cores:.1f} cores "
        f"({loop.decode_cameras_per_core:.0f} cameras/core at 100 %, {loop.decode_cpu_s_per_camera_s * 1000:.2f} "
        f"CPU-ms per camera-second), {loop.suggested_num_shards} shards, {loop.total_nodes} nodes "
        f"({loop.total_cores:,} cores).",
    ]


SECTIONS: tuple[Callable[[list[str]], None], ...] = (
    _demo,
    _ingest,
    _ingest_rtsp,
    _ingest_rtsp_scale,
    _inference,
    _backends,
    _e2e,
    _accuracy,
    _api,
    _routing,
    _gpu,
    _plan,
)


def block() -> str:
    lines: list[str] = [START, ""]
    for section in SECTIONS:
        section(lines)
    lines += ["", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global RESULTS  # one result directory for every section of this run
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README's block is stale")
    ap.add_argument("--results", type=Path, default=RESULTS, help="result directory (default benchmarks/results)")
    ap.add_argument("--print-only", action="store_true", help="print the block, leave the README alone")
    args = ap.parse_args(argv)
    RESULTS = args.results
    if args.print_only:
        print(block())
        return 0
    text = args.readme.read_text()
    if START not in text or END not in text:
        print(f"{args.readme}: markers {START} / {END} not found", file=sys.stderr)
        return 2
    new_block = block()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + new_block + tail
    print(new_block)
    if args.check:
        return 0 if new == text else 1
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
