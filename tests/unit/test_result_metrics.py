"""Counting what the model answers (``service.result_metrics``) and adding up several processes'
counts (``service.metrics_server``), in process and with real child processes."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest

from pneumoscan.errors import BlankImage, NotAChestXray, PneumoscanError, UnreadableFile, WorkerCrashed
from pneumoscan.monitoring.bins import OOD_BUCKETS, PROBABILITY_BUCKETS
from pneumoscan.monitoring.drift import DriftReference
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from service import result_metrics
from service.http.errors import MissingImage
from service.metrics_server import mark_dead_processes, multiprocess_registry
from tests.support.prometheus import value

VERSION = "unit-metrics-1"


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model_version": VERSION, **labels}) or 0.0


def _prediction(probability: float, ood_score: float | None) -> Prediction:
    label = "PNEUMONIA" if probability >= 0.5 else "NORMAL"
    return Prediction(label=label, probability=probability, threshold=0.5, model_version=VERSION, ood_score=ood_score)


def test_results_refusals_and_both_histograms():
    result_metrics.register()
    for probability, ood in ((0.93, 0.4), (0.12, 0.8), (0.51, None)):
        result_metrics.observe_result(Result(prediction=_prediction(probability, ood)), "other")
    refused = NotAChestXray("a photograph", ood_score=2.5)
    counted: list[PneumoscanError] = [refused, BlankImage("white"), NotAChestXray("no distance")]
    not_counted: list[PneumoscanError] = [UnreadableFile("gone"), WorkerCrashed("killed"), MissingImage("not a file")]
    for error in counted + not_counted:
        result_metrics.observe_result(Result(error=error), VERSION)

    assert _value("pneumoscan_results_total", label="PNEUMONIA") == 2
    assert _value("pneumoscan_results_total", label="NORMAL") == 1
    assert _value("pneumoscan_refusals_total", code="not_a_chest_xray") == 2
    assert _value("pneumoscan_refusals_total", code="blank_image") == 1
    for code in ("unreadable_file", "worker_crashed", "missing_image"):
        assert _value("pneumoscan_refusals_total", code=code) == 0
    assert _value("pneumoscan_result_probability_count") == 3
    assert _value("pneumoscan_result_probability_bucket", le="0.5") == 1
    assert _value("pneumoscan_result_probability_bucket", le="0.55") == 2
    assert _value("pneumoscan_result_probability_bucket", le=str(PROBABILITY_BUCKETS[-1])) == 3
    # Two scored images had a distance, and the refused photograph 2.5 times the limit.
    assert _value("pneumoscan_result_ood_score_count") == 3
    assert _value("pneumoscan_result_ood_score_bucket", le="1.0") == 2
    assert _value("pneumoscan_result_ood_score_bucket", le="3.0") == 3
    assert _value("pneumoscan_result_ood_score_sum") == pytest.approx(0.4 + 0.8 + 2.5)
    edges = {
        sample.labels["le"]
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == "pneumoscan_result_ood_score_bucket" and sample.labels["model_version"] == VERSION
    }
    assert edges == {str(edge) for edge in OOD_BUCKETS} | {"+Inf"}


def _reference(version: str) -> DriftReference:
    return DriftReference(
        model_version=version,
        source="unit",
        created=datetime(2026, 1, 1, tzinfo=UTC),
        n=10,
        probability_buckets=list(PROBABILITY_BUCKETS),
        probability_counts=[0] * len(PROBABILITY_BUCKETS) + [9],
        ood_buckets=list(OOD_BUCKETS),
        ood_counts=[0] * len(OOD_BUCKETS) + [9],
        label_counts={"NORMAL": 3, "PNEUMONIA": 6},
        refusal_counts={"blank_image": 1},
        pneumonia_share=6 / 9,
        refusal_rate=0.1,
        probability_median=0.7,
        ood_median=0.45,
    )


def test_reference_gauges_only_for_the_served_version():
    assert not result_metrics.set_reference(VERSION, None)
    assert not result_metrics.set_reference(VERSION, _reference("another-version"))
    assert REGISTRY.get_sample_value("pneumoscan_reference_refusal_rate", {"model_version": "another-version"}) is None
    assert result_metrics.set_reference(VERSION, _reference(VERSION))
    assert _value("pneumoscan_reference_pneumonia_share") == pytest.approx(6 / 9)
    assert _value("pneumoscan_reference_refusal_rate") == pytest.approx(0.1)
    assert _value("pneumoscan_reference_ood_score_median") == pytest.approx(0.45)


CHILD = """
import os, sys
from prometheus_client import Counter, Gauge
Counter("unit_scored", "scored", ["model_version"]).labels(model_version="v").inc(int(sys.argv[1]))
Gauge("unit_busy", "busy", multiprocess_mode="livesum").set(1)
print(os.getpid())
"""


def test_several_processes_add_up_and_dead_ones_lose_their_live_gauges(tmp_path: Path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    pids = [
        int(subprocess.run([sys.executable, "-c", CHILD, str(n)], env=env, capture_output=True, check=True).stdout)
        for n in (2, 5)
    ]
    assert {f"gauge_livesum_{pid}.db" for pid in pids} <= {path.name for path in tmp_path.iterdir()}
    assert sorted(mark_dead_processes(tmp_path)) == sorted(pids)
    names = {path.name for path in tmp_path.iterdir()}
    assert not any(name.startswith("gauge_livesum") for name in names)
    assert {f"counter_{pid}.db" for pid in pids} <= names
    text = generate_latest(multiprocess_registry(tmp_path)).decode()
    assert value(text, "unit_scored_total", model_version="v") == 7
    assert value(text, "unit_busy") == 0
