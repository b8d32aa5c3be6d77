"""Worker throughput beside a bare in-process decode-plus-predict loop, in one run.

    .venv/bin/python bench/worker_bench.py [--samples DIR] [--copies N]

Builds a folder of full-size X-rays (the samples repeated under new names), then times:
the bare loop (read, decode, predict in batches of 32, one process), `pneumoscan score`,
and the queue with one and with two worker processes. Prints images/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLES = REPO / "tests" / "fixtures" / "xrays"


def build_folder(samples: Path, copies: int, target: Path) -> int:
    files = sorted(p for p in samples.rglob("*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
    for copy in range(copies):
        for path in files:
            destination = target / f"copy{copy:03d}" / path.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
    return len(files) * copies


def bare_loop(folder: Path) -> float:
    from pneumoscan.imaging.preprocess import load_image
    from pneumoscan.model.architectures import configure_tensorflow
    from pneumoscan.model.predictor import Predictor
    from pneumoscan.settings import get_settings

    configure_tensorflow(0, 1)
    predictor = Predictor.from_dir(get_settings().model_dir)
    predictor.predict_proba(np.zeros((32, 128, 128, 3), np.float32))
    paths = sorted(p for p in folder.rglob("*.jpeg"))
    started = time.perf_counter()
    for start in range(0, len(paths), 32):
        batch = np.stack([load_image(p.read_bytes()) for p in paths[start : start + 32]])
        predictor.predict_proba(batch)
    return len(paths) / (time.perf_counter() - started)


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )


def summary_rate(job_dir: Path) -> float:
    return json.loads((job_dir / "summary.json").read_text())["images_per_second"]


def queue_run(folder: Path, workers: int, work: Path) -> float:
    env = {**os.environ, "PNEUMOSCAN_DATA_DIR": str(work / f"var{workers}"), "PNEUMOSCAN_SHARD_SIZE": "64"}
    job_id = cli("submit", str(folder), env=env).stdout.strip()
    job_dir = work / f"var{workers}" / "jobs" / job_id
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "worker", "--concurrency", str(workers)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not (job_dir / "summary.json").exists():
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, 15)
        process.wait(60)
    return summary_rate(job_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    parser.add_argument("--copies", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "input"
        count = build_folder(args.samples, args.copies, folder)
        ceiling = bare_loop(folder)
        env = {**os.environ, "PNEUMOSCAN_DATA_DIR": str(work / "var-score")}
        cli("score", str(folder), "--output", str(work / "score"), env=env)
        score = summary_rate(next((work / "score").iterdir()))
        one = queue_run(folder, 1, work)
        two = queue_run(folder, 2, work)
    rows = [
        ("bare decode+predict loop", ceiling),
        ("pneumoscan score", score),
        ("queue, 1 worker", one),
        ("queue, 2 workers", two),
    ]
    print(f"{count} full-size X-rays, {os.cpu_count()} cores")
    print("| pipeline | images/s | x bare loop |\n|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / ceiling:.2f} |")


if __name__ == "__main__":
    main()
