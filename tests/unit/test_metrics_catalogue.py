"""docs/METRICS.md's catalogue matches the metrics the code defines: no undocumented metric, no stale row."""

from __future__ import annotations

import pytest

from tests.support.monitoring import MetricDef, metrics_in_catalogue, metrics_in_code

UNIT_SUFFIXES = {"_seconds": "seconds", "_bytes": "bytes"}


@pytest.fixture(scope="module")
def code() -> dict[str, MetricDef]:
    return metrics_in_code()


@pytest.fixture(scope="module")
def catalogue() -> dict[str, MetricDef]:
    return metrics_in_catalogue()


def test_the_source_scan_finds_the_metrics_of_every_layer(code: dict[str, MetricDef]) -> None:
    # A scan that found nothing would make the comparison below pass vacuously.
    wheres = {m.where.split("/")[0] for m in code.values()}
    assert {"actors", "serve_apps", "storage", "cluster"} <= wheres, wheres
    assert code["cctv_camera_up"].labels == ("camera", "district")
    assert code["cctv_e2e_latency_seconds"].type == "histogram"


def test_every_metric_in_the_code_is_documented(code: dict[str, MetricDef], catalogue: dict[str, MetricDef]) -> None:
    missing = sorted(f"{m.name} ({m.where})" for m in code.values() if m.name not in catalogue)
    assert not missing, f"metrics missing from docs/METRICS.md: {missing}"


def test_every_documented_metric_exists(code: dict[str, MetricDef], catalogue: dict[str, MetricDef]) -> None:
    stale = sorted(f"{m.name} ({m.where})" for m in catalogue.values() if m.name not in code)
    assert not stale, f"docs/METRICS.md documents metrics the code does not define: {stale}"


def test_types_and_labels_match(code: dict[str, MetricDef], catalogue: dict[str, MetricDef]) -> None:
    wrong = [
        f"{name}: code {c.type}{list(c.labels)} ({c.where}), doc {d.type}{list(d.labels)} ({d.where})"
        for name, c in code.items()
        if (d := catalogue.get(name)) is not None and (c.type, c.labels) != (d.type, d.labels)
    ]
    assert not wrong, "\n".join(wrong)


def test_names_carry_units_and_rows_are_complete(catalogue: dict[str, MetricDef]) -> None:
    for m in catalogue.values():
        assert m.unit and m.meaning, f"{m.where}: {m.name} needs a unit and a meaning"
        if m.type == "counter":
            assert m.name.endswith("_total"), f"{m.name}: counters end in _total"
        for suffix, unit in UNIT_SUFFIXES.items():
            if m.name.endswith(suffix) or m.name.endswith(suffix + "_total"):
                assert m.unit.startswith(unit), f"{m.name}: unit {m.unit!r}, name says {unit}"


def test_only_the_per_camera_gauges_have_a_camera_label(code: dict[str, MetricDef]) -> None:
    per_camera = {m.name for m in code.values() if "camera" in m.labels}
    assert per_camera == {
        "cctv_camera_up",
        "cctv_camera_last_packet_age_seconds",
        "cctv_camera_analytics_fps",
        "cctv_camera_analytics_fps_target",
    }
    assert all(code[n].type == "gauge" for n in per_camera)
