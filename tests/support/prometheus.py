"""Reading Prometheus metrics, and a real Prometheus server (Debian's ``prometheus``) for the tests
that scrape the service, the queue worker and the DICOM node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.launch import free_port, start, stop
from tests.support import require, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) for every sample of a ``/metrics`` page."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``; 0 when there are none."""
    return sum(v for n, found, v in samples(text) if n == name and labels.items() <= found.items())


def has_sample(text: str, name: str, **labels: str) -> bool:
    return any(n == name and labels.items() <= found.items() for n, found, _ in samples(text))


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.text


def require_prometheus() -> None:
    require(
        "PNEUMOSCAN_REQUIRE_PROMETHEUS",
        None if Path(PROMETHEUS).is_file() else "Prometheus is not installed (apt-get install prometheus)",
    )


class Prometheus:
    """A Prometheus on 127.0.0.1 scraping ``targets`` (job name -> host:port) every second."""

    def __init__(self, folder: Path, targets: dict[str, str]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
            ],
        }
        self.config = folder / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Prometheus:
        command = [
            PROMETHEUS,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.process = start(command, {}, self.folder / "prometheus.log")
        wait_until(self._ready, 60, lambda: f"Prometheus not ready:\n{self.log()[-3000:]}")
        return self

    def __exit__(self, *_) -> None:
        if self.process is not None:
            stop(self.process)

    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Prometheus exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expression: str) -> list[dict]:
        """The instant vector ``expression`` evaluates to, through the HTTP API."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def targets_up(self) -> dict[str, str]:
        """Job name -> health of its target ("up", "down", "unknown")."""
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=10)
        response.raise_for_status()
        return {t["labels"]["job"]: t["health"] for t in response.json()["data"]["activeTargets"]}
