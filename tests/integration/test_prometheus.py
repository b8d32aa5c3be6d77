"""A real Prometheus scrapes the real service and the real queue worker every second, and answers
for what each of them scored through its HTTP API."""

from __future__ import annotations

import csv
import shutil
import sys
import uuid
from collections import Counter
from pathlib import Path

import httpx

from service.launch import free_port, start, start_service, stop
from tests.support import METADATA, run_cli, wait_until, xray_paths
from tests.support.prometheus import Prometheus, require_prometheus


def _by_job(series: list[dict]) -> dict[tuple[str, str], float]:
    """(job, label) -> value of pneumoscan_results_total for the bundled model's version."""
    return {
        (s["metric"]["job"], s["metric"]["label"]): float(s["value"][1])
        for s in series
        if s["metric"].get("model_version") == METADATA.version
    }


def test_prometheus_scrapes_the_service_and_the_worker(tmp_path: Path):
    require_prometheus()
    home = tmp_path / "bentoml-home"
    registered = run_cli("register", env={"BENTOML_HOME": str(home)})
    assert registered.returncode == 0, registered.stderr[-3000:]
    service_port, worker_port = free_port(), free_port()
    common = {"BENTOML_HOME": str(home), "PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    service = start_service(home, service_port, {**common, "PNEUMOSCAN_HTTP_WORKERS": "1"}, tmp_path / "serve.log")
    worker_env = {
        **common,
        "PNEUMOSCAN_QUEUE_NAME": f"test-{uuid.uuid4().hex[:12]}",
        "PNEUMOSCAN_WORKER_METRICS_PORT": str(worker_port),
    }
    worker = start([sys.executable, "-m", "cli", "worker"], worker_env, tmp_path / "worker.log")
    targets = {"service": f"127.0.0.1:{service_port}", "worker": f"127.0.0.1:{worker_port}"}
    try:
        (tmp_path / "prometheus").mkdir()
        with Prometheus(tmp_path / "prometheus", targets) as prometheus:
            expected = _score(tmp_path, service_port, worker_env)

            def scraped() -> bool:
                return _by_job(prometheus.query("pneumoscan_results_total")) == expected

            def explain() -> str:
                logs = "".join(
                    (tmp_path / name).read_text(errors="replace")[-2000:] for name in ("worker.log", "serve.log")
                )
                return f"{prometheus.targets_up()} {prometheus.query('pneumoscan_results_total')}\n{logs}"

            wait_until(scraped, 180, explain)
            counts = prometheus.query("sum by (job) (pneumoscan_result_probability_count)")
            assert {s["metric"]["job"]: float(s["value"][1]) for s in counts} == {"service": 3.0, "worker": 3.0}
    finally:
        stop(worker)
        stop(service)


def _score(tmp_path: Path, service_port: int, worker_env: dict[str, str]) -> dict[tuple[str, str], float]:
    """Three X-rays through the service and three as a batch job; what each should count, by label."""
    paths = xray_paths()
    expected: Counter[tuple[str, str]] = Counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{service_port}", timeout=60) as client:
        for path in paths[:3]:
            response = client.post("/predict", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
            assert response.status_code == 200, response.text
            expected["service", response.json()["label"]] += 1
    folder = tmp_path / "input"
    folder.mkdir()
    for path in paths[3:6]:
        shutil.copyfile(path, folder / path.name)
    submitted = run_cli("submit", str(folder), env=worker_env)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    results = wait_until(lambda: next((tmp_path / "var" / "jobs").glob("*/results.csv"), None), 300, "no results")
    with results.open(newline="") as handle:
        for row in csv.DictReader(handle):
            expected["worker", row["label"]] += 1
    return {key: float(count) for key, count in expected.items()}
