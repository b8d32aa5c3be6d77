"""``/metrics`` of the real queue worker (several processes scoring one job) and of the real DICOM
node, on their own ports: results by label, refusals by code, the two histograms, and the reference
figures of the model folder's ``drift_reference.json``."""

from __future__ import annotations

import csv
import math
import shutil
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from pneumoscan.monitoring.bins import OOD_BUCKETS, PROBABILITY_BUCKETS
from pneumoscan.monitoring.drift import REFERENCE_FILE, DriftReference
from pneumoscan.settings import BUNDLED_MODEL_DIR
from service.launch import free_port, start, stop
from tests.support import METADATA, make_input_folder, run_cli, wait_until
from tests.support.prometheus import has_sample, samples, scrape, value

REFERENCE_GAUGES = {
    "pneumoscan_reference_pneumonia_share": 0.625,
    "pneumoscan_reference_refusal_rate": 0.015,
    "pneumoscan_reference_ood_score_median": 0.5,
}


def model_with_reference(folder: Path) -> Path:
    """The bundled model's files with a drift reference of known figures."""
    model = folder / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, model, ignore=shutil.ignore_patterns("*.png", "*.md", REFERENCE_FILE))
    reference = DriftReference(
        model_version=METADATA.version,
        source="test",
        created=datetime(2026, 1, 1, tzinfo=UTC),
        n=200,
        probability_buckets=list(PROBABILITY_BUCKETS),
        probability_counts=[0] * len(PROBABILITY_BUCKETS) + [197],
        ood_buckets=list(OOD_BUCKETS),
        ood_counts=[0] * len(OOD_BUCKETS) + [197],
        label_counts={"NORMAL": 74, "PNEUMONIA": 123},
        refusal_counts={"blank_image": 3},
        pneumonia_share=REFERENCE_GAUGES["pneumoscan_reference_pneumonia_share"],
        refusal_rate=REFERENCE_GAUGES["pneumoscan_reference_refusal_rate"],
        probability_median=0.8,
        ood_median=REFERENCE_GAUGES["pneumoscan_reference_ood_score_median"],
    )
    (model / REFERENCE_FILE).write_text(reference.model_dump_json())
    return model


def check_reference_gauges(text: str) -> None:
    for name, expected in REFERENCE_GAUGES.items():
        assert has_sample(text, name, model_version=METADATA.version), name
        assert value(text, name, model_version=METADATA.version) == pytest.approx(expected), name


def read_rows(data_dir: Path) -> list[dict] | None:
    found = list((data_dir / "jobs").glob("*/results.csv"))
    if not found:
        return None
    with found[0].open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_worker_processes_count_what_they_score(tmp_path):
    port = free_port()
    env = {
        "PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"),
        "PNEUMOSCAN_SHARD_SIZE": "3",
        "PNEUMOSCAN_QUEUE_NAME": f"test-{uuid.uuid4().hex[:12]}",
        "PNEUMOSCAN_MODEL_DIR": str(model_with_reference(tmp_path)),
        "PNEUMOSCAN_WORKER_METRICS_PORT": str(port),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    folder, _, _ = make_input_folder(tmp_path)
    submitted = run_cli("submit", str(folder), env=env)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    log = tmp_path / "worker.log"
    worker = start([sys.executable, "-m", "cli", "worker", "--concurrency", "2"], env, log)
    try:
        rows = wait_until(lambda: read_rows(tmp_path / "var"), 300, lambda: log.read_text(errors="replace")[-4000:])
        text = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop(worker)
    assert len(list((tmp_path / "var" / "jobs").glob("*/shards/*.json"))) > 1, "the job must have several shards"

    version = METADATA.version
    scored = [row for row in rows if row["status"] == "ok"]
    for label, count in Counter(row["label"] for row in scored).items():
        assert value(text, "pneumoscan_results_total", model_version=version, label=label) == count, label
    codes = Counter(row["error_code"] for row in rows if row["status"] == "error")
    assert codes["not_a_chest_xray"] >= 1 and codes["blank_image"] >= 1, codes
    for code, count in codes.items():
        assert value(text, "pneumoscan_refusals_total", model_version=version, code=code) == count, code

    buckets = {
        float(labels["le"]): count
        for name, labels, count in samples(text)
        if name == "pneumoscan_result_probability_bucket" and labels["model_version"] == version
    }
    probabilities = [float(row["probability"]) for row in scored]
    expected = {edge: float(sum(p <= edge for p in probabilities)) for edge in PROBABILITY_BUCKETS}
    assert buckets == {**expected, math.inf: float(len(scored))}
    # The scored images' distances and the refused photograph's.
    ood_count = value(text, "pneumoscan_result_ood_score_count", model_version=version)
    assert ood_count == len(scored) + codes["not_a_chest_xray"]
    check_reference_gauges(text)


def test_dicom_node_serves_the_reference_figures(tmp_path):
    port, dicom_port = free_port(), free_port()
    env = {
        "PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"),
        "PNEUMOSCAN_MODEL_DIR": str(model_with_reference(tmp_path)),
        "PNEUMOSCAN_DICOM_PORT": str(dicom_port),
        "PNEUMOSCAN_DICOM_HOST": "127.0.0.1",
        "PNEUMOSCAN_DICOM_METRICS_PORT": str(port),
    }
    log = tmp_path / "node.log"
    node = start([sys.executable, "-m", "cli", "dicom-node"], env, log)
    try:

        def metrics() -> str | None:
            assert node.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                return scrape(f"http://127.0.0.1:{port}/metrics")
            except httpx.HTTPError:
                return None

        text = wait_until(metrics, 120, lambda: log.read_text(errors="replace")[-3000:])
    finally:
        stop(node)
    check_reference_gauges(text)
    assert "# TYPE pneumoscan_refusals_total counter" in text
