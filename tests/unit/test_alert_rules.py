"""The Prometheus alert rules in deploy/prometheus: promtool checks them and runs their unit tests,
and every metric and label they name is one the code or BentoML exports.

promtool comes with Debian's ``prometheus`` package; without it these tests skip, or fail when
``PNEUMOSCAN_REQUIRE_PROMETHEUS=1`` (as in ``.ci/run``).
"""

from __future__ import annotations

import re

import yaml

from tests.support.promql import (
    MONITORING_DOC,
    PROMETHEUS_DIR,
    RULE_FILES,
    TEST_FILES,
    alerts,
    exported_metrics,
    metric_names,
    rule_groups,
    run_promtool,
    selectors,
    unknown_labels,
    unknown_names,
)


def test_metric_name_extraction_reads_only_metric_names():
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{endpoint!~"/x|/y", b="c(d)"}[5m])))'
        ' / on (job) group_left (x) (b:c:rate5m offset 1h or vector(0)) > bool 0.5 and up{job="w"}'
    )
    assert metric_names(expr) == {"a_bucket", "b:c:rate5m", "up"}
    assert selectors('a{x="1", y=~"2"} + {__name__="b"}') == [("a", {"x", "y"}), (None, {"__name__"})]


def test_the_exported_metrics_include_what_the_rules_are_about():
    names = set(exported_metrics())
    for name in (
        "pneumoscan_results_total",
        "pneumoscan_refusals_total",
        "pneumoscan_result_probability_bucket",
        "pneumoscan_result_ood_score_bucket",
        "pneumoscan_reference_pneumonia_share",
        "pneumoscan_outbox_messages",
        "bentoml_service_request_total",
        "bentoml_service_request_duration_seconds_bucket",
    ):
        assert name in names, name
    assert {"endpoint", "http_response_code", "runner_name"} <= exported_metrics()["bentoml_service_request_total"]


def test_rules_pass_promtool_check_rules():
    assert RULE_FILES
    result = run_promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool_check_config():
    result = run_promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    for path in RULE_FILES:
        assert str(path.relative_to(PROMETHEUS_DIR)) in result.stdout, f"prometheus.yml does not load {path.name}"


def test_rule_unit_tests_pass_promtool_test_rules():
    assert TEST_FILES
    result = run_promtool("test", "rules", *TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_failing_expectation_fails_promtool_test_rules(tmp_path):
    """The unit tests can fail: the same test with one alert expected that does not fire."""
    source = yaml.safe_load((PROMETHEUS_DIR / "tests" / "outbox_test.yml").read_text())
    source["rule_files"] = [str((PROMETHEUS_DIR / "tests" / path).resolve()) for path in source["rule_files"]]
    case = next(case for test in source["tests"] for case in test["alert_rule_test"] if case["exp_alerts"])
    case["exp_alerts"].append({"exp_labels": {"severity": "critical", "destination": "fhir", "state": "failed"}})
    broken = tmp_path / "broken_test.yml"
    broken.write_text(yaml.safe_dump(source))
    result = run_promtool("test", "rules", broken)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_every_rules_file_is_unit_tested_and_every_alert_both_fires_and_stays_quiet():
    tested_files, fired, quiet = set(), set(), set()
    for path in TEST_FILES:
        source = yaml.safe_load(path.read_text())
        tested_files |= {(path.parent / rule_file).resolve() for rule_file in source["rule_files"]}
        for test in source["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert tested_files == {path.resolve() for path in RULE_FILES}
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts no test sees firing"
    assert names - quiet == set(), "alerts no test sees staying quiet"


def test_every_alert_explains_itself_and_links_its_section_of_the_docs():
    headings = {
        line.lstrip("#").strip().strip("`") for line in MONITORING_DOC.read_text().splitlines() if line.startswith("#")
    }
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook_url"] == f"docs/monitoring.md#{name.lower()}", name
        assert name in headings, f"docs/monitoring.md has no section {name} (the runbook_url's anchor)"


def test_rules_read_only_metrics_and_labels_that_exist():
    for group in rule_groups():
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            assert unknown_names(rule["expr"]) == set(), name
            assert unknown_labels(rule["expr"]) == [], name
            for text in rule.get("annotations", {}).values():
                for query in re.findall(r'printf "([^"]*)"', text):
                    if "{" in query:
                        assert unknown_names(query.replace("%q", '"v"')) == set(), name
    assert unknown_names("pneumoscan_results_totl") == {"pneumoscan_results_totl"}
    assert unknown_labels('pneumoscan_results_total{lable="PNEUMONIA"}') != []
