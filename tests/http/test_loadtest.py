"""The locustfile and ``make loadtest``'s summary against the test server, for a few seconds."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from tests.support import API_KEY, REPO_ROOT


def test_loadtest_summary_runs_the_locustfile(server, tmp_path):
    env = {**os.environ, "PNEUMOSCAN_API_KEY": API_KEY}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.summary",
            server.url,
            "--users",
            "4",
            "--run-time",
            "5s",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "requests/s" in result.stdout and "model calls" in result.stdout and "retries " in result.stdout
    with (tmp_path / "load_stats.csv").open(newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    for name in ("/predict (raw body)", "/predict (multipart)"):
        assert int(rows[name]["Request Count"]) > 0, name
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert (tmp_path / "load.html").stat().st_size > 0


def test_locust_counts_failures(server, tmp_path):
    """Without the API key every request is a 401, and Locust must report them as failures."""
    env = {key: value for key, value in os.environ.items() if key != "PNEUMOSCAN_API_KEY"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtests/locustfile.py",
            "--headless",
            "--host",
            server.url,
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "3s",
            "--csv",
            str(tmp_path / "denied"),
            "--only-summary",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    with (tmp_path / "denied_stats.csv").open(newline="") as handle:
        aggregated = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    assert int(aggregated["Request Count"]) > 0
    assert aggregated["Failure Count"] == aggregated["Request Count"]
