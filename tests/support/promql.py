"""Prometheus rules, dashboards and promtool for the tests: which metrics and labels the code and
BentoML export, and which ones a PromQL expression names."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import yaml

from tests.support import require

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
MONITORING_DOC = REPO_ROOT / "docs" / "monitoring.md"
BENTOML = Path(importlib.util.find_spec("bentoml").origin).parent

# Labels Prometheus adds to every scraped series, and the one a histogram's buckets carry.
TARGET_LABELS = {"job", "instance"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS |= {"inf", "nan"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\"")
NAME = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")


def promtool() -> str:
    path = shutil.which("promtool")
    require("PNEUMOSCAN_REQUIRE_PROMETHEUS", None if path else "promtool is not installed (apt-get install prometheus)")
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def rule_groups() -> list[dict]:
    return [group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]


def alerts() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def recording_rules() -> set[str]:
    return {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


def selectors(expr: str) -> list[tuple[str | None, set[str]]]:
    """(metric name or None, label names it matches on) for each ``{...}`` selector of ``expr``."""
    return [(match[1], set(MATCHER.findall(match[2]))) for match in SELECTOR.finditer(expr)]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and numbers left out)."""
    stripped = re.sub(r"\"(?:[^\"\\]|\\.)*\"", '""', expr)
    stripped = re.sub(r"\{[^}]*\}", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    stripped = GROUPING.sub(" ", stripped)
    stripped = re.sub(r"\boffset\s+\w+", " ", stripped)
    names = {name for name in NAME.findall(stripped) if name.lower() not in KEYWORDS}
    names |= {match[1] for match in SELECTOR.finditer(re.sub(r"\"(?:[^\"\\]|\\.)*\"", '""', expr)) if match[1]}
    return names


def _bentoml_metrics() -> dict[str, set[str]]:
    """BentoML's request metrics of a 1.4 service (RunnerTrafficMetricsMiddleware, under the
    namespace of its default configuration): sample name -> label names."""
    defaults = yaml.safe_load((BENTOML / "_internal/configuration/v2/default_configuration.yaml").read_text())
    namespace = defaults["services"]["metrics"]["namespace"]
    app = (BENTOML.parent / "_bentoml_impl/server/app.py").read_text()
    assert "RunnerTrafficMetricsMiddleware" in app, "BentoML no longer counts requests where these rules expect"
    source = ast.parse((BENTOML / "_internal/server/http/instruments.py").read_text())
    [middleware] = [
        n for n in source.body if isinstance(n, ast.ClassDef) and n.name == "RunnerTrafficMetricsMiddleware"
    ]
    found = {}
    for call in [n for n in ast.walk(middleware) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]:
        keywords = {keyword.arg: keyword.value for keyword in call.keywords}
        if call.func.attr not in ("Counter", "Histogram", "Gauge") or "name" not in keywords:
            continue
        # prometheus_client names a counter's family without the _total its sample gets back.
        name = f"{namespace}_{ast.literal_eval(keywords['name'])}".removesuffix("_total")
        labels = set(ast.literal_eval(keywords["labelnames"]))
        samples = {"Counter": ["_total"], "Histogram": ["_bucket", "_sum", "_count"], "Gauge": [""]}[call.func.attr]
        for suffix in samples:
            found[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found


def _pneumoscan_metrics() -> dict[str, set[str]]:
    """pneumoscan's own metrics, as the service, the worker and the DICOM node create them:
    sample name -> label names."""
    from prometheus_client import REGISTRY

    from service import result_metrics
    from service.http import metrics

    metrics.register()
    result_metrics.register()
    found = {}
    for collector in set(REGISTRY._names_to_collectors.values()):
        name, kind = getattr(collector, "_name", ""), getattr(collector, "_type", "")
        if not name.startswith("pneumoscan_"):
            continue
        labels = set(collector._labelnames)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}[kind]
        for suffix in suffixes:
            found[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found


@lru_cache(maxsize=1)
def exported_metrics() -> dict[str, set[str]]:
    """Every series the scraped processes export that the rules and the dashboard may read, with
    its labels; ``up`` is Prometheus' own."""
    return {**_bentoml_metrics(), **_pneumoscan_metrics(), "up": set()}


def unknown_names(expr: str) -> set[str]:
    return metric_names(expr) - set(exported_metrics()) - recording_rules()


def unknown_labels(expr: str) -> list[str]:
    problems = []
    for name, labels in selectors(expr):
        if name in exported_metrics():
            extra = labels - exported_metrics()[name] - TARGET_LABELS
            if extra:
                problems.append(f"{name} has no label {sorted(extra)}")
    return problems
