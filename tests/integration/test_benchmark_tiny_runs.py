"""Every benchmark script runs end to end on a tiny input and writes what its full run writes.

``--help`` (test_benchmark_entry_points.py) proves a script imports; this proves it still *works*: each one
runs as ``python -m benchmarks.<group>.<name>`` in its own process on the real parts it measures (footage,
the GStreamer RTSP simulator, onnxruntime, a local Ray with Serve, SeaweedFS), with inputs cut down until
it takes seconds, and the result it writes is read back and checked for the fields the README and
``benchmarks.report`` read. The figures of a tiny run mean nothing and are not checked against targets.
All runs start with the module in two lanes: one runs the Ray-starting scripts one after the other, then
helps with the rest; the other runs the light scripts, longest first (on the 2-core CI machine the Ray ones
spend most of their time starting up, so light runs fit beside them). Each test waits for its own run and
checks it. Scripts that take the weights and footage as arguments get the suite's (``{models}``,
``{clips}``, ``{shared}``: CCTV_MODELS_DIR / CCTV_SHARED_DIR); the others read ``../shared`` themselves.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.footage import prepare_stream
from cluster.rtsp_sim import system_ready
from tests.conftest import CACHE_DIR, ROOT, SHARED

pytestmark = pytest.mark.slow

DATA = ROOT / "tests" / "data"


@dataclass(frozen=True)
class TinyRun:
    """One script's tiny run: its arguments (``{out}`` is the result folder; ``{models}``, ``{clips}`` and
    ``{shared}`` the suite's weights, footage and shared folder) and a check of what it wrote."""

    args: tuple[str, ...]
    check: Callable[[Path, str], None]
    timeout_s: float = 240.0
    needs_rtsp: bool = False
    starts_ray: bool = False  # at most one of these at a time (each starts a local Ray, Serve and S3)
    expected_s: float = 10.0  # rough length on the CI machine: light runs start longest first


def _json(path: Path) -> Any:
    assert path.is_file(), f"{path.name} was not written"
    return json.loads(path.read_text())


def _stdout_json(stdout: str) -> Any:
    """The JSON document a script printed (the last ``{``-led block of its standard output)."""
    start = stdout.find("{")
    assert start >= 0, stdout[-2000:]
    return json.loads(stdout[start:])


def check_ingest(out: Path, _: str) -> None:
    r = _json(out / "ingest.json")
    assert r["cameras_per_core_derived"]["360p"]["ours_keyframe"] > 0
    assert r["realtime_validation"] and r["realtime_validation"][0]["cameras"] == 10
    assert (out / "ingest_cameras_per_core.png").stat().st_size > 0


def check_ingest_rtsp(out: Path, _: str) -> None:
    r = _json(out / "ingest_rtsp.json")
    readers = {(p["reader"], p["transport"], p["cameras"]) for p in r["points"]}
    want = {(reader, "tcp", 2) for reader in ("raw", "ours", "ours_loop", "loop", "gst")}
    assert readers == want, (readers, r["gstreamer"])
    assert all(p["cameras_per_core"] > 0 and p["packets_min_frac"] > 0 for p in r["points"])
    assert "tcp/2" in r["ratio_ours_over_raw_per_core"]
    assert set(r["ratio_over_raw_per_core"]) == {"ours", "ours_loop", "loop", "gst"}
    assert r["keyframe_decode_ms"]["decode"] > 0
    assert r["fresh_process_per_point"] is True
    per = r["per_camera"]
    assert per["ours_loop"]["threads_per_camera"]["2"] >= 1  # a (sleeping) thread per camera + the loop
    assert per["ours"]["ring_mib_per_camera"] > 0 and per["ours_loop"]["ring_mib_per_camera"] > 0
    assert all(p["rss_growth_mib"] is not None for p in r["points"])


def check_sim_capacity(out: Path, _: str) -> None:
    rows = _json(out / "sim.json")
    assert [row["clients"] for row in rows] == [2], rows


def check_ort_threads(out: Path, _: str) -> None:
    points = _json(out / "ort_threads.json")["points"]
    assert {p["batch"] for p in points} == {1}
    assert all(p["images_per_s"] > 0 and p["cpu_ms_per_image"] > 0 for p in points)


def check_backends(out: Path, _: str) -> None:
    backends = _json(out / "backends.json")["results"]["person_lwpd"]["backends"]
    assert set(backends) == {"onnxruntime", "openvino", "torch"}, list(backends)
    for name, entry in backends.items():
        assert [p["batch"] for p in entry["points"]] == [1, 2], (name, entry["points"])
        assert all(p["cpu_ms_per_image"] > 0 for p in entry["points"]), name
        assert entry["agreement_with_onnxruntime"]["match_ratio"] == 1.0, (name, entry["agreement_with_onnxruntime"])


def check_inference(out: Path, _: str) -> None:
    r = _json(out / "inference.json")
    assert r["served_vs_raw_output"]["match"] is True, r["served_vs_raw_output"]
    assert r["results"]["raw"]["1"]["images_per_s"] > 0
    assert r["results"]["serve_handle"]["1"]["images_per_s"] > 0


def check_e2e(out: Path, _: str) -> None:
    r = _json(out / "e2e_360p.json")
    assert r["machine_ceiling"]["cameras_ceiling"] > 0, r["machine_ceiling"]
    assert [p["cameras"] for p in r["product"]] == [2]
    assert [p["cameras"] for p in r["baseline"]] == [2]
    assert all(0 <= p["frac_age_within_1s"] <= 1 for p in r["product"] + r["baseline"])
    assert r["settings"]["product_rtsp_receiver"] == "loop"
    assert r["product"][0]["rate_median_fps"] > 0, r["product"]  # frames came through the receive loop


def check_api(out: Path, _: str) -> None:
    results = _json(out / "api.json")["results"]
    assert results, "no endpoint measured"
    for name, rows in results.items():
        assert rows and all(row["requests"] > 0 and row["errors"] == {} for row in rows), (name, rows)


def check_detector_routing(out: Path, _: str) -> None:
    r = _json(out / "detector_routing.json")
    points = {p["variant"]: p for p in r["points"]}
    assert set(points) == {"same_node_first", "any_node", "per_node_deployment"}, list(points)
    for p in points.values():  # a quarter of a replica's capacity: nothing refused
        assert p["calls"] > 0 and p["answered"] == p["calls"] and p["failed_by_error"] == {}, p
    # The shards' routing keeps the calls on the caller's node (a burst may spill one); any_node does not.
    assert points["same_node_first"]["same_node_share"] >= 0.95, points["same_node_first"]
    assert points["any_node"]["same_node_share"] < 0.9, points["any_node"]
    assert points["per_node_deployment"]["same_node_share"] == 1.0, points["per_node_deployment"]
    # The shards' routing falls back to the other node once the replica on theirs is gone.
    (loss,) = r["replica_loss"]
    assert loss["variant"] == "same_node_first" and loss["other_node_calls"] > 0, loss
    assert loss["last_other_node_after_kill_s"] > 0, loss  # calls sent after the kill, not only those in flight


def check_accuracy(out: Path, _: str) -> None:
    r = _json(out / "accuracy.json")
    assert r["quick"] is True
    assert r["water_level"]["overall"]["frames"] > 0
    assert set(r["intrusion_loitering"]) >= {"intrusion", "loitering"}, list(r["intrusion_loitering"])
    assert "fire_smoke" not in r  # only the sections asked for


def check_eval_crowd(_: Path, stdout: str) -> None:
    models = _stdout_json(stdout)["models"]
    assert models and all(len(m["frames"]) == 2 for m in models.values()), models


def check_eval_crowd_events(_: Path, stdout: str) -> None:
    r = _stdout_json(stdout)
    assert list(r["variants"]) == ["person_lwpd@192"], list(r["variants"])
    assert r["deployment_default"] == "person_lwpd@192"
    summary = r["summary"]["person_lwpd@192"]
    assert {"tuning", "validation"} <= set(summary), list(summary)
    assert r["variants"]["person_lwpd@192"]["scenarios"]["density_m2_vtest"]["zone_area_m2"]["vtest.avi"] > 0
    gate = r["motion_gate"]
    assert gate["variant"] == "person_lwpd@192" and 0 <= gate["skipped_frac_overall"] <= 1, gate
    assert all(c["skipped"] <= c["samples"] for c in gate["per_clip"].values()), gate["per_clip"]
    assert {"tuning", "validation"} == set(gate["splits"]), list(gate["splits"])


def check_eval_fire(out: Path, _: str) -> None:
    r = _json(out / "eval_fire.json")
    assert {c["split"] for c in r["clips"].values()} == {"tuning", "validation"}
    assert set(r["splits"]) == {"tuning", "validation"}


def check_eval_tracking(out: Path, _: str) -> None:
    r = _json(out / "eval_tracking.json")
    assert r["seeds"] == [1000] and r["n_per_type_per_seed"] == 2


def check_eval_water(_: Path, stdout: str) -> None:
    r = _stdout_json(stdout)
    assert r["overall"]["frames"] > 0 and 0 <= r["overall"]["mae_cm"] < 100


def check_render_water(out: Path, _: str) -> None:
    assert list(out.glob("*.mp4")) and list(out.glob("*.json"))


def check_nvdec_ingest(out: Path, _: str) -> None:
    r = _json(out / "nvdec_ingest.json")
    assert r, "empty result"


SHORTEST_WATER_SCENE = "flash_flood"

RUNS: dict[str, TinyRun] = {
    "performance.ingest": TinyRun(
        (
            "--quick",
            "--resolutions",
            "360p",
            "--target-cpu-s",
            "0.05",
            "--repeats",
            "1",
            "--cameras",
            "10",
            "--window-s",
            "1",
            "--out",
            "{out}",
        ),
        check_ingest,
    ),
    "performance.ingest_rtsp": TinyRun(
        (
            *("--cameras", "2", "--transports", "tcp", "--warmup-s", "1", "--window-s", "2"),
            *("--fresh-process", "--out", "{out}"),
        ),
        check_ingest_rtsp,
        needs_rtsp=True,
        expected_s=40.0,  # five readers, each in its own process with its own simulator
    ),
    "performance.rtsp_sim_capacity": TinyRun(
        ("--clients", "2", "--measure-s", "1", "--warmup-s", "0.5", "--json", "{out}/sim.json"),
        check_sim_capacity,
        needs_rtsp=True,
    ),
    "performance.ort_threads": TinyRun(
        ("--models-dir", "{models}", "--batches", "1", "--duration-s", "0.5", "--out", "{out}"), check_ort_threads
    ),
    "performance.backends": TinyRun(
        (
            "--models",
            "person_lwpd",
            "--models-dir",
            "{models}",
            "--batches",
            "1",
            "2",
            "--duration-s",
            "0.2",
            "--rounds",
            "1",
            "--out",
            "{out}",
        ),
        check_backends,
        expected_s=30.0,
    ),
    "performance.inference": TinyRun(
        (
            "--batches",
            "1",
            "--duration-s",
            "1",
            "--warmup-s",
            "0.5",
            "--rounds",
            "1",
            "--max-load",
            "100",
            "--max-foreign-cores",
            "100",
            "--wait-load-s",
            "1",
            "--retries",
            "0",
            "--models-dir",
            "{models}",
            "--out",
            "{out}",
        ),
        check_inference,
        starts_ray=True,
    ),
    "performance.e2e": TinyRun(
        (
            "--counts",
            "2",
            "--baseline-counts",
            "2",
            "--warmup-s",
            "4",  # the loop's first keyframes under a loaded suite; the point need not pass
            "--measure-s",
            "3",
            "--replicas",
            "1",
            "--rtsp-receiver",
            "loop",  # the shards' receive loop under a real Runtime (the other tests cover ffmpeg there)
            "--models-dir",
            "{models}",
            "--out",
            "{out}",
        ),
        check_e2e,
        needs_rtsp=True,
        starts_ray=True,
    ),
    "performance.detector_routing": TinyRun(
        (
            "--loads-x",
            "0.25",
            "--duration-s",
            "1",
            "--warmup-s",
            "0.5",
            "--service-ms",
            "100",
            "--loss-run-s",
            "4",
            "--loss-variants",
            "same_node_first",
            "--out",
            "{out}",
        ),
        check_detector_routing,
        starts_ray=True,  # a 3-node cluster_utils.Cluster with Serve
    ),
    "performance.api": TinyRun(
        (
            "--cameras",
            "1",
            "--concurrency",
            "1",
            "--duration-s",
            "1",
            "--warmup-s",
            "0.5",
            "--min-events",
            "0",
            "--state-dir",
            "{out}/state",
            "--models-dir",
            "{models}",
            "--out",
            "{out}",
        ),
        check_api,
        starts_ray=True,
    ),
    "accuracy": TinyRun(
        ("--sections", "water_level", "intrusion_loitering", "--quick", "--shared", "{shared}", "--out", "{out}"),
        check_accuracy,
        expected_s=80.0,
    ),
    "accuracy.eval_crowd": TinyRun(
        ("--labels", "{out}/crowd_labels.json", "--models-dir", "{models}", "--clips-dir", "{clips}"), check_eval_crowd
    ),
    "accuracy.eval_crowd_events": TinyRun(
        (
            "--events",
            "{out}/crowd_events.json",
            "--variants",
            "person_lwpd@192",
            "--models-dir",
            "{models}",
            "--clips-dir",
            "{clips}",
        ),
        check_eval_crowd_events,
    ),
    "accuracy.eval_fire": TinyRun(
        ("--split-file", "{out}/fire_smoke_split.json", "--shared-clips", "{clips}", "--out", "{out}"),
        check_eval_fire,
    ),
    "accuracy.eval_tracking": TinyRun(("--seeds", "1", "--n-per-type", "2", "--out", "{out}"), check_eval_tracking),
    "accuracy.eval_water": TinyRun(
        ("--scene", SHORTEST_WATER_SCENE, "--duration-s", "3", "--out", "{out}"), check_eval_water
    ),
    "accuracy.render_water": TinyRun(
        ("--scene", SHORTEST_WATER_SCENE, "--duration-s", "3", "--out", "{out}"), check_render_water
    ),
    "gpu.nvdec_ingest": TinyRun(
        (
            "--streams",
            "{out}/streams",
            "--out",
            "{out}",
            "--quick",
            "--backends",
            "cpu",
            "--concurrency",
            "1",
            "--seconds",
            "1",
        ),
        check_nvdec_ingest,
    ),
}


def _tiny_inputs(out: Path, stream: Path) -> None:
    """Cut-down copies of the labelled inputs, written where the tiny runs' arguments point."""
    labels = json.loads((DATA / "crowd_labels.json").read_text())
    labels["frames"] = labels["frames"][:2]
    (out / "crowd_labels.json").write_text(json.dumps(labels))

    events = json.loads((DATA / "crowd_events.json").read_text())
    events["sequences"] = sorted(events["sequences"], key=lambda s: len(json.dumps(s)))[:1]
    (out / "crowd_events.json").write_text(json.dumps(events))

    split = json.loads((DATA / "fire_smoke_split.json").read_text())
    shortest = {}

    def length_s(clip: dict[str, Any]) -> float:  # a clip without a segment plays whole: put it last
        return clip["segment"][1] - clip["segment"][0] if "segment" in clip else float("inf")

    for clip in sorted(split["clips"], key=length_s):
        if clip["source"] == "shared":
            shortest.setdefault(clip["split"], clip)
    split["clips"] = list(shortest.values())
    split["phases_s"] = split["phases_s"][:1]
    (out / "fire_smoke_split.json").write_text(json.dumps(split))

    streams = out / "streams"
    streams.mkdir()
    (streams / stream.name).symlink_to(stream)


@dataclass(frozen=True)
class Finished:
    """A tiny run's process, ended."""

    out: Path
    returncode: int
    stdout: str
    stderr: str


def _run_one(name: str, out: Path, paths: dict[str, Path], stream: Path) -> Finished:
    run = RUNS[name]
    if run.needs_rtsp:
        ok, why = system_ready()
        assert ok, f"the RTSP simulator is not ready ({why}): make test installs its Debian packages"
    _tiny_inputs(out, stream)
    argv = list(run.args)
    for key, path in {"out": out, **paths}.items():
        argv = [a.replace("{" + key + "}", str(path)) for a in argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=run.timeout_s,
    )
    return Finished(out, proc.returncode, proc.stdout, proc.stderr)


def lane_plan(runs: dict[str, TinyRun]) -> tuple[list[str], list[str]]:
    """The Ray-starting runs (one lane, in order) and the light ones, longest first (shared by both lanes)."""
    heavy = sorted(n for n, r in runs.items() if r.starts_ray)
    light = sorted((n for n, r in runs.items() if not r.starts_ray), key=lambda n: (-runs[n].expected_s, n))
    return heavy, light


@pytest.fixture(scope="module")
def launched(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, clips_dir: Path, vtest_path: Path
) -> Iterator[dict[str, Future[Finished]]]:
    """Every tiny run started at once in two lanes: the Ray ones one by one in the first, light ones in both."""
    paths = {"models": models_dir, "clips": clips_dir, "shared": SHARED}
    stream = prepare_stream(vtest_path, CACHE_DIR / "streams", gop_s=1.0, max_height=360)  # what the GPU ones read
    futures: dict[str, Future[Finished]] = {name: Future() for name in RUNS}
    heavy, light = lane_plan(RUNS)
    pending: queue.SimpleQueue[str] = queue.SimpleQueue()
    for name in light:
        pending.put(name)

    def finish(name: str) -> None:
        future = futures[name]
        if not future.set_running_or_notify_cancel():
            return  # cancelled at tear-down
        try:
            future.set_result(_run_one(name, tmp_path_factory.mktemp(name.replace(".", "-")), paths, stream))
        except Exception as exc:  # any failure (timeout, assertion) is handed to the test that waits on it
            future.set_exception(exc)

    def lane(first: list[str]) -> None:
        for name in first:
            finish(name)
        while True:
            try:
                name = pending.get_nowait()
            except queue.Empty:
                return
            finish(name)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tiny-run") as pool:
        pool.submit(lane, heavy)
        pool.submit(lane, [])
        try:
            yield futures
        finally:
            for future in futures.values():
                future.cancel()


@pytest.mark.parametrize("name", sorted(RUNS))
def test_benchmark_runs_on_a_tiny_input(name: str, launched: dict[str, Future[Finished]]) -> None:
    # Its turn may come after every other run: wait for all of them at most.
    done = launched[name].result(timeout=sum(r.timeout_s for r in RUNS.values()))
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    RUNS[name].check(done.out, done.stdout)


def test_every_script_has_a_tiny_run() -> None:
    from tests.integration.test_benchmark_entry_points import TINY_RUNS, scripts

    missing = sorted(set(scripts()) - set(RUNS) - set(TINY_RUNS))
    assert missing == [], f"give these a tiny run here: {missing}"


def test_lanes_run_every_script_once_with_the_ray_ones_in_one_lane() -> None:
    heavy, light = lane_plan(RUNS)
    assert sorted(heavy + light) == sorted(RUNS)
    assert all(RUNS[n].starts_ray for n in heavy) and not any(RUNS[n].starts_ray for n in light)
    assert [RUNS[n].expected_s for n in light] == sorted((RUNS[n].expected_s for n in light), reverse=True)
