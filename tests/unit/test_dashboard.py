"""The Grafana dashboard in deploy/grafana: it loads, every query reads metrics and labels that the
service, the worker, the DICOM node, BentoML or the recording rules export, and its provisioning
files agree with it and with docs/monitoring.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.support.promql import exported_metrics, metric_names, run_promtool, unknown_labels, unknown_names

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DIR = REPO_ROOT / "deploy" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$model_version": ".*"}


def dashboard() -> dict:
    [path] = DASHBOARD_FILES
    return json.loads(path.read_text())


def panels(board: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included; rows themselves left out."""
    found = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def queries(board: dict) -> list[str]:
    return [target["expr"] for panel in panels(board) for target in panel["targets"]]


def as_prometheus_sees_it(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def test_dashboard_loads_with_unique_panel_ids_and_a_grid_without_overlaps():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    everything = board["panels"] + [inner for panel in board["panels"] for inner in panel.get("panels", [])]
    ids = [panel["id"] for panel in everything]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in everything:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_every_panel_queries_the_chosen_prometheus():
    board = dashboard()
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    provisioned = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "pneumoscan.yml").read_text())
    [source] = provisioned["datasources"]
    assert source["type"] == "prometheus" and variable["current"]["value"] == source["uid"], (
        "the dashboard opens on the provisioned data source"
    )
    for panel in panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]


def test_queries_read_only_metrics_and_labels_that_exist():
    board = dashboard()
    for expr in queries(board):
        expr = as_prometheus_sees_it(expr)
        assert unknown_names(expr) == set(), expr
        assert unknown_labels(expr) == [], expr
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"]).groups()
        assert label in exported_metrics()[metric], variable["name"]


def test_queries_are_valid_promql(tmp_path):
    rules = [
        {"record": f"dashboard:query_{number}", "expr": as_prometheus_sees_it(expr)}
        for number, expr in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_panels_the_issue_asks_for_are_there():
    board = dashboard()
    by_metric: dict[str, list[dict]] = {}
    for panel in panels(board):
        for target in panel["targets"]:
            for name in metric_names(as_prometheus_sees_it(target["expr"])):
                by_metric.setdefault(name, []).append({**target, "panel": panel})
    [heatmap] = by_metric["pneumoscan_result_probability_bucket"]
    assert heatmap["panel"]["type"] == "heatmap" and heatmap["format"] == "heatmap"
    gate = {
        id(target["panel"])
        for name in ("p50_6h", "p90_6h")
        for target in by_metric[f"model_version:pneumoscan_result_ood_score:{name}"]
    }
    assert gate == {id(t["panel"]) for t in by_metric["model_version:pneumoscan_reference_ood_score_median:max"]}
    assert any("by (code)" in target["expr"] for target in by_metric["pneumoscan_refusals_total"])
    assert any("by (label)" in target["expr"] for target in by_metric["pneumoscan_results_total"])
    assert by_metric["bentoml_service_request_total"]
    for quantile in ("p50", "p99"):
        assert by_metric[f"job_endpoint:bentoml_service_request_duration_seconds:{quantile}_rate5m"]
    [depth] = by_metric["destination_state:pneumoscan_outbox_messages:max"]
    assert "{{destination}}" in depth["legendFormat"] and "{{state}}" in depth["legendFormat"]


def test_dashboard_provisioning_reads_the_folder_the_docs_mount():
    provisioned = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "pneumoscan.yml").read_text())
    [provider] = provisioned["providers"]
    assert provider["type"] == "file"
    docs = (REPO_ROOT / "docs" / "monitoring.md").read_text()
    assert f"deploy/grafana/dashboards:{provider['options']['path']}" in docs
    assert "deploy/grafana/provisioning:/etc/grafana/provisioning" in docs
