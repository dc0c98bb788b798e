"""Alert rules and the Grafana dashboard: promtool checks and tests them, and they use catalogued metrics only."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.monitoring import (
    ALERTS_TEST_YML,
    ALERTS_YML,
    DASHBOARD_JSON,
    METRICS_MD,
    PROM_DIR,
    PROMETHEUS_YML,
    MetricDef,
    alert_rules,
    metrics_in_catalogue,
    promtool,
    referenced_metrics,
    rules_with_for,
)

REQUIRED_ALERTS = {
    "CameraDown",
    "CameraStale",
    "AnalyticsFpsBelowTarget",
    "FramesDroppedRate",
    "DetectorLatencyP99AboveSLO",
    "EndToEndLatencyP99AboveSLO",
    "ShardQueueSaturated",
    "ShardActorRestarted",
    "ClipUploadFailures",
    "SpoolGrowing",
    "SpoolNearFull",
    "EventRateAnomaly",
    "NodeLost",
}
# Grafana's variables, replaced by valid PromQL before promtool parses a panel's expression.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$district": ".*"}


@pytest.fixture(scope="module")
def catalogue() -> dict[str, MetricDef]:
    return metrics_in_catalogue()


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return alert_rules()


def test_promtool_checks_the_rules() -> None:
    r = promtool("check", "rules", ALERTS_YML)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_pass() -> None:
    r = promtool("test", "rules", ALERTS_TEST_YML)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_fail_when_a_rule_is_wrong(tmp_path: Path) -> None:
    """The unit tests can fail: with every ``for:`` shortened, a not-yet-firing expectation breaks."""
    rules_with_for(ALERTS_YML, tmp_path / "alerts.yml", "0s")
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST_YML.read_text())
    r = promtool("test", "rules", tmp_path / "alerts_test.yml")
    assert r.returncode != 0
    assert "CameraDown" in r.stdout + r.stderr


def test_promtool_accepts_the_scrape_config() -> None:
    r = promtool("check", "config", PROMETHEUS_YML, cwd=PROM_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["cctv"]["http_sd_configs"][0]["url"].endswith("/metrics/targets")


def test_required_alerts_exist(rules: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), names
    assert set(names) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(names)


def test_every_alert_is_actionable(rules: list[dict[str, Any]]) -> None:
    doc = METRICS_MD.read_text()
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        ann = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(ann), name
        anchor = f"runbook-{name.lower()}"
        assert ann["runbook"].startswith(f"docs/METRICS.md#{anchor}"), (name, ann["runbook"])
        assert f'<a id="{anchor}"></a>' in doc, f"docs/METRICS.md has no runbook entry for {name}"


def test_every_alert_is_unit_tested_firing_and_not_firing(rules: list[dict[str, Any]]) -> None:
    tests = yaml.safe_load(ALERTS_TEST_YML.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in rules}
    assert names <= firing, f"no firing case: {names - firing}"
    assert names <= quiet, f"no not-firing case: {names - quiet}"


def test_alerts_use_catalogued_metrics_only(rules: list[dict[str, Any]], catalogue: dict[str, MetricDef]) -> None:
    for rule in rules:
        refs = referenced_metrics(rule["expr"], catalogue)
        assert refs or "up{" in rule["expr"], f"{rule['alert']} uses no cctv metric"
        assert refs <= set(catalogue), (rule["alert"], refs - set(catalogue))


# -- Grafana dashboard ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_JSON.read_text())


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels(dash) for t in p.get("targets", [])]


def test_dashboard_model_is_well_formed(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["type"] in ("timeseries", "stat", "table", "gauge", "bargauge"), p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
    # No two panels overlap on the grid.
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_dashboard_exprs_parse(dashboard: dict[str, Any], tmp_path: Path) -> None:
    rules = []
    for i, (title, expr) in enumerate(_exprs(dashboard)):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{title}: unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    assert len(rules) >= 20
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = promtool("check", "rules", path)
    assert r.returncode == 0, r.stdout + r.stderr
    # The check is real: a broken expression is refused.
    bad = {"groups": [{"name": "bad", "rules": [{"record": "x:y", "expr": "sum(rate(x[5m])"}]}]}
    path.write_text(yaml.safe_dump(bad))
    assert promtool("check", "rules", path).returncode != 0


def test_dashboard_uses_catalogued_metrics_and_covers_the_topics(
    dashboard: dict[str, Any], catalogue: dict[str, MetricDef]
) -> None:
    used: set[str] = set()
    for title, expr in _exprs(dashboard):
        refs = referenced_metrics(expr, catalogue)
        assert refs <= set(catalogue), (title, refs - set(catalogue))
        used |= refs
    query = dashboard["templating"]["list"][1]["definition"]
    assert re.search(r"label_values\((cctv_[a-z_]+), district\)", query)
    topics = {
        "throughput": "cctv_frames_analysed_total",
        "latency": "cctv_e2e_latency_seconds",
        "cameras by district": "cctv_camera_up",
        "drops": "cctv_frames_dropped_total",
        "events": "cctv_events_total",
        "storage": "cctv_spool_bytes",
    }
    assert all(m in used for m in topics.values()), {t: m for t, m in topics.items() if m not in used}
    assert any("by (district)" in e and "cctv_camera_up" in e for _, e in _exprs(dashboard))
