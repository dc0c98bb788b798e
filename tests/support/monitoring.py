"""Helpers for tests of the monitoring configuration: the metric catalogue, alert rules, promtool.

The catalogue is read from two sides: the code (every ``Counter``/``Gauge``/``Histogram``/``Summary``
call with a literal ``cctv_`` name, found by parsing the source, so a metric in a module nobody
imports is still found) and ``docs/METRICS.md`` (its catalogue table).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
METRICS_MD = ROOT / "docs" / "METRICS.md"
PROM_DIR = ROOT / "configs" / "prometheus"
ALERTS_YML = PROM_DIR / "alerts.yml"
ALERTS_TEST_YML = PROM_DIR / "alerts_test.yml"
PROMETHEUS_YML = PROM_DIR / "prometheus.yml"
DASHBOARD_JSON = ROOT / "configs" / "grafana" / "cctv-cluster.json"
METRIC_PACKAGES = ("actors", "serve_apps", "storage", "cluster")
_METRIC_CLASSES = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary"}
_METRIC_REF = re.compile(r"\bcctv_[a-z0-9_]+\b")
TARGET_LABELS = frozenset({"cctv_instance"})
"""Labels the scrape adds (from the targets document) that look like metric names."""


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric as the code defines it or the catalogue documents it."""

    name: str
    type: str
    labels: tuple[str, ...]
    where: str
    unit: str = ""
    meaning: str = ""


def _literal_strings(node: ast.expr | None) -> tuple[str, ...] | None:
    if isinstance(node, ast.List | ast.Tuple) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        return tuple(e.value for e in node.elts)  # type: ignore[attr-defined]
    return None


def metrics_in_code(root: Path = ROOT) -> dict[str, MetricDef]:
    """Every ``cctv_*`` metric defined in the project's packages, by name."""
    found: dict[str, MetricDef] = {}
    for pkg in METRIC_PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                cls = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if cls not in _METRIC_CLASSES or not node.args:
                    continue
                first = node.args[0]
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    continue
                if not first.value.startswith("cctv_"):
                    continue
                labels_node = node.args[2] if len(node.args) > 2 else None
                for kw in node.keywords:
                    if kw.arg == "labelnames":
                        labels_node = kw.value
                labels = _literal_strings(labels_node) if labels_node is not None else ()
                if labels is None:
                    raise AssertionError(f"{path}:{node.lineno}: labels of {first.value} are not a literal list")
                where = f"{path.relative_to(root)}:{node.lineno}"
                if first.value in found:
                    raise AssertionError(f"{first.value} defined twice: {found[first.value].where} and {where}")
                found[first.value] = MetricDef(first.value, _METRIC_CLASSES[cls], labels, where)
    return found


def metrics_in_catalogue(path: Path = METRICS_MD) -> dict[str, MetricDef]:
    """The rows of the catalogue table in docs/METRICS.md, by name."""
    rows: dict[str, MetricDef] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`cctv_"):
            continue
        name = cells[0].strip("`")
        labels = tuple(x.strip().strip("`") for x in cells[2].split(",")) if cells[2] not in ("—", "-", "") else ()
        if name in rows:
            raise AssertionError(f"{path.name}:{lineno}: {name} documented twice")
        rows[name] = MetricDef(name, cells[1], labels, f"{path.name}:{lineno}", unit=cells[3], meaning=cells[4])
    return rows


def referenced_metrics(expr: str, catalogue: dict[str, MetricDef]) -> set[str]:
    """Catalogue names an expression uses (``x_bucket``/``_sum``/``_count`` map to histogram ``x``)."""
    out = set()
    for ref in _METRIC_REF.findall(expr):
        if ref in TARGET_LABELS:
            continue
        base = ref
        for suffix in ("_bucket", "_sum", "_count"):
            stem = ref.removesuffix(suffix)
            if ref.endswith(suffix) and catalogue.get(stem, MetricDef("", "", (), "")).type in ("histogram", "summary"):
                base = stem
        out.add(base)
    return out


def alert_rules(path: Path = ALERTS_YML) -> list[dict[str, object]]:
    """Every alerting rule of a rules file (flattened over its groups)."""
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def rules_with_for(src: Path, dst: Path, for_: str) -> Path:
    """Write ``src`` to ``dst`` with every rule's ``for:`` set to ``for_`` (a test profile of the same rules)."""
    doc = yaml.safe_load(src.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run Debian's promtool; fails the test when it is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        raise AssertionError("promtool not installed: `make test` installs Debian's prometheus package")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd)


def cluster_prometheus_config(
    targets_url: str, rules_file: Path, *, interval_s: int = 1, token_file: Path | None = None
) -> str:
    """``configs/prometheus/prometheus.yml`` pointed at a test cluster: its API, fast intervals, given rules.

    Only the ``cctv`` job is kept (Ray's file_sd file does not exist without its dashboard);
    everything else (job name, discovery kind, target labels) is the shipped configuration.
    """
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = f"{interval_s}s"
    cfg["rule_files"] = [str(rules_file)]
    cfg.pop("alerting", None)
    jobs = [j for j in cfg["scrape_configs"] if j["job_name"] == "cctv"]
    jobs[0]["scrape_interval"] = f"{interval_s}s"
    sd = jobs[0]["http_sd_configs"][0]
    sd["url"] = targets_url
    sd["refresh_interval"] = f"{interval_s}s"
    if token_file is not None:  # the API's http_sd needs a bearer token (the shipped file points at state/)
        sd["authorization"]["credentials_file"] = str(token_file)
    cfg["scrape_configs"] = jobs
    return yaml.safe_dump(cfg, sort_keys=False)
